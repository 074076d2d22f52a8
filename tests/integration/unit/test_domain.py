"""The pure domain: sealing (AES-256-GCM with per-credential data keys and associated data),
OAuth state and PKCE, refresh timing, and webhook verification per provider."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from integration_service.domain import oauth, sealing, tokens, webhooks
from integration_service.domain.errors import (
    CredentialCorrupt,
    WebhookMalformed,
    WebhookStale,
    WebhookUnverified,
)
from integration_service.domain.model import AuthKind, Credential, EntityType, Provider, Secret

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _sealed(credential: Credential) -> tuple[bytes, sealing.Sealed]:
    kek = sealing.new_data_key()
    cid = uuid.uuid4()
    data_key = sealing.new_data_key()
    context = sealing.context_bytes(sealing.key_context(cid, "square"), "v1")
    wrapped = sealing.wrap_with(kek, data_key, context)
    aad = sealing.associated_data(cid, "square", "v1")
    nonce, ct = sealing.encrypt(data_key, sealing.serialize(credential), aad)
    return kek, sealing.Sealed(cid, "square", "v1", wrapped, nonce, ct)


def _open(kek: bytes, s: sealing.Sealed) -> Credential:
    context = sealing.context_bytes(sealing.key_context(s.connection_id, s.provider), s.kek_version)
    data_key = sealing.unwrap_with(kek, s.wrapped_key, context)
    return sealing.deserialize(sealing.decrypt(data_key, s.nonce, s.ciphertext, s.aad))


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def test_a_sealed_credential_round_trips_and_any_flipped_bit_is_refused() -> None:
    credential = Credential(AuthKind.OAUTH2, Secret("EAAA-access"), Secret("EQAA-refresh"))
    kek, s = _sealed(credential)
    assert _open(kek, s) == credential
    assert b"EAAA" not in s.ciphertext
    for at in (0, len(s.ciphertext) // 2, len(s.ciphertext) - 1):
        with pytest.raises(CredentialCorrupt):
            _open(kek, replace(s, ciphertext=_flip(s.ciphertext, at)))
    with pytest.raises(CredentialCorrupt):
        _open(kek, replace(s, nonce=_flip(s.nonce, 0)))
    with pytest.raises(CredentialCorrupt):
        _open(kek, replace(s, wrapped_key=_flip(s.wrapped_key, 20)))
    # The associated data: another connection, provider or KEK version does not open it.
    with pytest.raises(CredentialCorrupt):
        _open(kek, replace(s, connection_id=uuid.uuid4()))
    with pytest.raises(CredentialCorrupt):
        _open(kek, replace(s, provider="squarf"))
    with pytest.raises(CredentialCorrupt):
        _open(kek, replace(s, kek_version="v2"))
    with pytest.raises(CredentialCorrupt):
        _open(sealing.new_data_key(), s)


def test_secrets_never_print_themselves() -> None:
    credential = Credential(AuthKind.API_KEY, api_key=Secret("rk_live_abcdef"))
    assert "rk_live" not in repr(credential) and "rk_live" not in str(credential.api_key)
    assert credential.bearer == "rk_live_abcdef"


def test_state_and_pkce() -> None:
    state = oauth.new_state()
    assert len(state) == 43 and state != oauth.new_state()
    assert oauth.state_key(state) == hashlib.sha256(state.encode()).hexdigest()
    pkce = oauth.new_pkce()
    digest = hashlib.sha256(pkce.verifier.encode()).digest()
    assert pkce.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert 43 <= len(pkce.verifier) <= 128
    pending = oauth.PendingAuthorization(
        "v", Provider.SQUARE, "https://a/cb", ("A",), "u", pkce.verifier, 1.0, 2.0
    )
    assert oauth.PendingAuthorization.from_json(pending.to_json()) == pending
    assert oauth.redirect_allowed("https://a/cb", ["https://a/cb"])
    assert not oauth.redirect_allowed("https://a/cb?x=1", ["https://a/cb"])
    assert not oauth.redirect_allowed("https://a/cb#f", ["https://a/cb#f"])


def test_refresh_timing() -> None:
    timing = tokens.RefreshTiming(access_lead_s=900, refresh_lead_s=86400)
    assert tokens.expired(NOW, NOW + timedelta(seconds=30))
    assert not tokens.expired(NOW, NOW + timedelta(hours=1))
    assert not tokens.expired(NOW, None)
    access = NOW + timedelta(hours=1)
    refresh = NOW + timedelta(days=7)
    assert tokens.refresh_due_at(access, refresh, timing) == access - timedelta(seconds=900)
    assert tokens.refresh_due_at(None, refresh, timing) == refresh - timedelta(days=1)
    assert tokens.refresh_due_at(None, None, timing) is None


def test_square_webhooks() -> None:
    url = "https://integration.example/webhooks/square"
    body = json.dumps(
        {
            "merchant_id": "M1",
            "type": "customer.updated",
            "event_id": "e-1",
            "created_at": NOW.isoformat(),
            "data": {"type": "customer", "id": "C1"},
        }
    ).encode()
    headers = {webhooks.SQUARE_HEADER: webhooks.square_signature("key", url, body)}
    event = webhooks.verify_square(
        body, headers, notification_url=url, signature_key="key", now=NOW, max_age_s=60
    )
    assert (event.event_id, event.account_id, event.entity_type) == (
        "e-1",
        "M1",
        EntityType.CUSTOMER,
    )
    assert event.external_ids == ("C1",) and event.operation == "updated"
    with pytest.raises(WebhookUnverified):  # signed for another URL
        webhooks.verify_square(
            body, headers, notification_url=url + "x", signature_key="key", now=NOW, max_age_s=60
        )
    with pytest.raises(WebhookStale):
        webhooks.verify_square(
            body,
            headers,
            notification_url=url,
            signature_key="key",
            now=NOW + timedelta(seconds=61),
            max_age_s=60,
        )


def test_quickbooks_stripe_and_mailchimp_webhooks() -> None:
    events = [
        {
            "id": "q1",
            "type": "qbo.customer.created.v1",
            "time": NOW.isoformat(),
            "intuitentityid": "7",
            "intuitaccountid": "R1",
        }
    ]
    body = json.dumps(events).encode()
    signed = {webhooks.INTUIT_HEADER: webhooks.intuit_signature("tok", body)}
    [event] = webhooks.verify_quickbooks(body, signed, verifier_token="tok", now=NOW, max_age_s=60)
    assert (event.account_id, event.entity_type, event.operation) == (
        "R1",
        EntityType.CUSTOMER,
        "created",
    )
    with pytest.raises(WebhookUnverified):
        webhooks.verify_quickbooks(body, signed, verifier_token="other", now=NOW, max_age_s=60)

    stripe_body = b'{"id": "evt_1", "type": "product.updated", "data": {"object": {"id": "p"}}}'
    t = int(NOW.timestamp())
    header = {
        webhooks.STRIPE_HEADER: f"t={t},v1={webhooks.stripe_signature('whsec', t, stripe_body)}"
    }
    got = webhooks.verify_stripe(stripe_body, header, secret="whsec", now=NOW, tolerance_s=300)
    assert got.entity_type is EntityType.PRODUCT and got.external_ids == ("p",)
    with pytest.raises(WebhookStale):
        webhooks.verify_stripe(
            stripe_body, header, secret="whsec", now=NOW + timedelta(seconds=301), tolerance_s=300
        )
    with pytest.raises(WebhookUnverified):
        webhooks.verify_stripe(stripe_body, header, secret="other", now=NOW, tolerance_s=300)

    digest = webhooks.secret_digest("s3cret")
    form = f"type=subscribe&fired_at={NOW:%Y-%m-%d %H:%M:%S}&data[id]=abc".encode()
    mc = webhooks.verify_mailchimp(
        form, given_secret="s3cret", stored_digest=digest, now=NOW, max_age_s=60
    )
    assert mc.event_id.startswith("mc-") and mc.entity_type is EntityType.CUSTOMER
    with pytest.raises(WebhookUnverified):
        webhooks.verify_mailchimp(
            form, given_secret="nope", stored_digest=digest, now=NOW, max_age_s=60
        )
    with pytest.raises(WebhookMalformed):
        webhooks.verify_mailchimp(
            b"x=1", given_secret="s3cret", stored_digest=digest, now=NOW, max_age_s=60
        )
    assert time.time() > 0
