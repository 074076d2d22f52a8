"""Settings: KEK versions, the dev default, production refusals of the local KEK, the dev kit's
stand-ins and credentials (recognised without importing the dev kit), plain-http provider URLs
and missing webhook secrets."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from integration_service.adapters.keys import LocalKeys
from integration_service.domain.errors import CredentialCorrupt
from integration_service.settings import IntegrationSettings
from meshdev.standins import quickbooks as qb
from meshdev.standins import square as sq
from meshkit.settings import SettingsError, load_settings

BASE = {"database_url": "postgresql://db/x", "redis_url": "redis://r"}
KEY = base64.b64encode(b"k" * 32).decode()


def test_kek_versions_and_the_active_one() -> None:
    s = load_settings(IntegrationSettings, **BASE, integration_kek_versions=f"a={KEY},b={KEY}")
    assert list(s.kek_versions) == ["a", "b"]
    assert LocalKeys.from_refs(s.kek_versions, s.integration_kek_active).active_version == "b"
    with pytest.raises(SettingsError) as info:
        load_settings(
            IntegrationSettings, **BASE, integration_kek_versions=f"a={KEY}",
            integration_kek_active="c",
        )  # fmt: skip
    assert "INTEGRATION_KEK_ACTIVE" in str(info.value)
    with pytest.raises(SettingsError):
        load_settings(IntegrationSettings, **BASE, integration_kek_backend="kms")
    with pytest.raises(ValueError):
        LocalKeys.from_refs({"a": base64.b64encode(b"short").decode()})


async def test_the_dev_key_is_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "integration" / "kek.key"
    keys = LocalKeys.dev(path)
    again = LocalKeys.dev(path)
    assert path.stat().st_mode & 0o777 == 0o600
    context = {"connection_id": "c"}
    data_key, wrapped = await keys.new_data_key(context)
    assert await again.unwrap("dev-1", wrapped, context) == data_key
    with pytest.raises(CredentialCorrupt):
        await again.unwrap("dev-1", wrapped, {"connection_id": "other"})


def test_production_refuses_the_dev_setup_and_accepts_a_live_one() -> None:
    dev_setup = {
        **BASE,
        "app_env": "production",
        "integration_kek_versions": f"dev-1={KEY}",
        "integration_public_base_url": "http://127.0.0.1:8084",
        "integration_redirect_uris": "http://localhost:3000/cb",
        "square_application_id": sq.DEV_APPLICATION_ID,
        "square_application_secret": sq.DEV_APPLICATION_SECRET,
        "square_api_base": "http://127.0.0.1:8431",
        "quickbooks_client_id": qb.DEV_CLIENT_ID,
        "quickbooks_client_secret": qb.DEV_CLIENT_SECRET,
        "quickbooks_discovery_url": "http://127.0.0.1:8432/.well-known/openid_configuration",
        "quickbooks_api_base": "http://127.0.0.1:8432",
        "stripe_api_base": "http://127.0.0.1:8430",
    }
    with pytest.raises(SettingsError) as info:
        load_settings(IntegrationSettings, **dev_setup)
    text = str(info.value)
    for phrase in (
        "INTEGRATION_KEK_BACKEND=local",
        "INTEGRATION_PUBLIC_BASE_URL must be a public https URL",
        "INTEGRATION_REDIRECT_URIS",
        "SQUARE_API_BASE is not a public https URL",
        "QUICKBOOKS_DISCOVERY_URL is not a public https URL",
        "STRIPE_API_BASE is not a public https URL",
        "SQUARE_APPLICATION_ID is the dev kit's",
        "QUICKBOOKS_CLIENT_SECRET is the dev kit's",
        "SQUARE_WEBHOOK_SIGNATURE_KEY is required",
        "QUICKBOOKS_VERIFIER_TOKEN is required",
    ):
        assert phrase in text, phrase

    live = {
        **BASE,
        "app_env": "production",
        "integration_kek_backend": "kms",
        "integration_kek_versions": "v1=arn:aws:kms:us-east-1:111122223333:key/abc",
        "integration_public_base_url": "https://integration.tickettoken.example",
        "integration_redirect_uris": "https://admin.tickettoken.example/integrations/callback",
        "square_application_id": "sq0idp-live",
        "square_application_secret": "sq0csp-live",
        "square_webhook_signature_key": "live-signature-key",
    }
    with pytest.raises(SettingsError) as info:
        load_settings(IntegrationSettings, **live)
    ours = [
        p
        for p in str(info.value).split(": ", 2)[-1].split("; ")
        if any(w in p for w in ("INTEGRATION", "SQUARE", "QUICKBOOKS", "MAILCHIMP", "STRIPE"))
    ]
    assert ours == []  # what is left are the kit's JWT refusals
