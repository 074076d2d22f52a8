"""Settings: providers per channel, missing provider settings at start, production refusals of
the dev kit's stand-ins and credentials (recognised without importing the dev kit)."""

from __future__ import annotations

import pytest

from meshdev.standins.sendgrid import DEV_API_KEY
from meshdev.standins.twilio import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN
from meshkit.settings import SettingsError, load_settings
from notify_service.settings import NotifySettings

BASE = {"database_url": "postgresql://db/x", "redis_url": "redis://r"}


def test_providers_are_ordered_per_channel_and_checked() -> None:
    s = load_settings(NotifySettings, **BASE, notify_email_providers="SMTP, sendgrid",
                      sendgrid_api_key="SG.x", sendgrid_webhook_public_key="k")  # fmt: skip
    assert s.providers_for("EMAIL") == ["smtp", "sendgrid"]
    assert s.providers_for("PUSH") == []
    with pytest.raises(SettingsError) as info:
        load_settings(NotifySettings, **BASE, notify_email_providers="smtp,mailgun")
    assert "mailgun" in str(info.value)
    with pytest.raises(SettingsError) as info:
        load_settings(NotifySettings, **BASE, notify_push_providers="fcm")
    assert "NOTIFY_PUSH_PROVIDERS" in str(info.value)


def test_a_configured_provider_names_every_missing_setting_at_start() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            NotifySettings, **BASE, notify_email_providers="sendgrid", notify_sms_providers="twilio"
        )
    text = str(info.value)
    for name in (
        "SENDGRID_API_KEY",
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_FROM_NUMBER",
    ):
        assert name in text


def test_production_refuses_stand_ins_dev_credentials_and_missing_secrets() -> None:
    dev_setup = {
        **BASE,
        "app_env": "production",
        "notify_email_providers": "smtp,sendgrid",
        "notify_sms_providers": "twilio",
        "smtp_host": "127.0.0.1",
        "sendgrid_api_key": DEV_API_KEY,
        "sendgrid_api_base": "http://127.0.0.1:8425",
        "sendgrid_webhook_public_key": "k",
        "twilio_account_sid": DEV_ACCOUNT_SID,
        "twilio_auth_token": DEV_AUTH_TOKEN,
        "twilio_api_base": "http://localhost:8426",
        "twilio_from_number": "+15005550006",
    }
    with pytest.raises(SettingsError) as info:
        load_settings(NotifySettings, **dev_setup)
    text = str(info.value)
    for phrase in (
        "NOTIFY_UNSUBSCRIBE_SECRET",
        "NOTIFY_PUBLIC_BASE_URL is required",
        "SMTP_HOST is this machine",
        "SMTP_TLS=off",
        "SENDGRID_API_BASE points at this machine",
        "SENDGRID_API_KEY is the dev kit's key",
        "TWILIO_API_BASE points at this machine",
        "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN are the dev kit's",
    ):
        assert phrase in text, phrase

    live = {
        **dev_setup,
        "smtp_host": "smtp.relay.example",
        "smtp_tls": "starttls",
        "sendgrid_api_key": "SG.live-key",
        "sendgrid_api_base": "https://api.sendgrid.com",
        "twilio_account_sid": "AC" + "1" * 32,
        "twilio_auth_token": "2" * 32,
        "twilio_api_base": "https://api.twilio.com",
        "notify_unsubscribe_secret": "x" * 40,
        "notify_public_base_url": "https://notify.tickettoken.example",
    }
    with pytest.raises(SettingsError) as info:
        load_settings(NotifySettings, **live)
    notify_problems = [
        p for p in str(info.value).split("; ") if "NOTIFY" in p or "SMTP" in p or "SENDGRID" in p
    ]
    assert notify_problems == []  # what is left are the kit's JWT refusals
