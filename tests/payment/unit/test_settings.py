"""Payment settings: required Stripe secrets, and production's refusals."""

from __future__ import annotations

import pytest

from meshkit.settings import SettingsError, load_settings
from payment_service.settings import PaymentSettings

BASE = {"database_url": "postgresql://db/x", "redis_url": "redis://r"}


def test_stripe_secrets_are_required() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(PaymentSettings, **BASE)
    assert "STRIPE_SECRET_KEY" in str(info.value)
    assert "STRIPE_WEBHOOK_SECRET" in str(info.value)


def test_production_refuses_test_keys_and_local_stripe() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            PaymentSettings,
            **BASE,
            app_env="production",
            stripe_secret_key="sk_test_123",
            stripe_webhook_secret="secret",
            stripe_api_base="http://127.0.0.1:8420",
            stripe_dev_register_webhook=True,
        )
    message = str(info.value)
    for name in (
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_API_BASE",
        "STRIPE_DEV_REGISTER_WEBHOOK",
    ):
        assert name in message
    assert "sk_test_123" not in message  # secrets are never echoed


def test_production_accepts_live_settings() -> None:
    settings = PaymentSettings(
        **BASE,
        app_env="production",
        stripe_secret_key="sk_live_abc",
        stripe_webhook_secret="whsec_abc",
    )
    stripe_problems = [p for p in settings.production_problems() if "STRIPE" in p]
    assert stripe_problems == []
