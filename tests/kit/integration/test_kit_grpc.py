"""The kit over real gRPC: request ids, error details, auth, metrics, idempotency, health.

An in-process kit server (tests/kit/apps/kitapp.py) on port 0 against the embedded Postgres and
Redis, called through real generated stubs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from meshdev.embedded import EmbeddedRedis, free_port
from meshdev.testing.rpc import detail, status_of
from meshdev.testing.servers import TestTokens, channel_for
from meshkit.auth import TokenMinter, ensure_dev_keys
from tests.kit.apps.kitapp import DEFINITION, KitAppServicer
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

AUD = "tickettoken.kitapp"
SERVICE = "tickettoken.notify.v1.NotifyService"


@pytest.fixture
async def app(app_factory: Any) -> Any:
    return await app_factory(DEFINITION)


@pytest.fixture
async def channel(app: Any) -> Any:
    async with channel_for(app) as ch:
        yield ch


@pytest.fixture
def stub(channel: Any) -> notify_pb2_grpc.NotifyServiceStub:
    return notify_pb2_grpc.NotifyServiceStub(channel)


def admin(tokens: TestTokens, sub: str = "admin-1") -> tuple[tuple[str, str], ...]:
    return tokens.metadata(tokens.user(sub, ["admin"], aud=AUD))


def servicer_of(app: Any) -> KitAppServicer:
    servicer = app.registrations[0].servicer
    assert isinstance(servicer, KitAppServicer)
    return servicer


async def handled(app: Any, method: str, code: str) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{app.ops_port}/metrics") as resp,
    ):
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "grpc_server_handled":
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == "grpc_server_handled_total"
                    and labels["grpc_method"] == method
                    and labels["grpc_code"] == code
                ):
                    return float(sample.value)
    return 0.0


# ---------------------------------------------------------------------------------------------
# Responses, request ids and error details


async def test_ok_echoes_request_id(stub: Any, tokens: TestTokens) -> None:
    call = stub.RenderTemplate(
        notify_pb2.RenderTemplateRequest(template_id="hi", variables={"name": "Ada"}),
        metadata=(*admin(tokens), ("x-request-id", "req-abc-123")),
    )
    reply = await call
    assert reply.subject == "hello Ada"
    assert ("x-request-id", "req-abc-123") in tuple(await call.trailing_metadata())


async def test_new_request_id_when_none_given(stub: Any, tokens: TestTokens) -> None:
    call = stub.RenderTemplate(
        notify_pb2.RenderTemplateRequest(template_id="hi"), metadata=admin(tokens)
    )
    await call
    ids = [v for k, v in await call.trailing_metadata() if k == "x-request-id"]
    assert len(ids) == 1 and len(ids[0]) == 32


async def test_invalid_argument_carries_field_violations(stub: Any, tokens: TestTokens) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RenderTemplate(
            notify_pb2.RenderTemplateRequest(template_id="bad"), metadata=admin(tokens)
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = status_of(info.value)
    error_info = detail(status, error_details_pb2.ErrorInfo)
    assert error_info.reason == "INVALID_ARGUMENT"
    assert error_info.domain == "tickettoken.kitapp"
    bad = detail(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("variables.name", "must not be empty")
    ]


async def test_not_found_has_reason(stub: Any, tokens: TestTokens) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RenderTemplate(
            notify_pb2.RenderTemplateRequest(template_id="missing"), metadata=admin(tokens)
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert detail(status_of(info.value), error_details_pb2.ErrorInfo).reason == "TEMPLATE_NOT_FOUND"


async def test_unexpected_exception_is_internal_without_internals(
    stub: Any, tokens: TestTokens
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RenderTemplate(
            notify_pb2.RenderTemplateRequest(template_id="boom"),
            metadata=(*admin(tokens), ("x-request-id", "req-boom")),
        )
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "hunter2" not in (info.value.details() or "")
    status = status_of(info.value)
    assert "hunter2" not in status.SerializeToString().decode("latin-1")
    assert detail(status, error_details_pb2.ErrorInfo).metadata["request_id"] == "req-boom"


async def test_unbuilt_rpc_is_unimplemented_after_auth(stub: Any, tokens: TestTokens) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetTemplate(
            notify_pb2.GetTemplateRequest(template_id="receipt"), metadata=admin(tokens)
        )
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert detail(status_of(info.value), error_details_pb2.ErrorInfo).reason == "UNIMPLEMENTED"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetTemplate(notify_pb2.GetTemplateRequest(template_id="receipt"))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


# ---------------------------------------------------------------------------------------------
# Authentication and authorization


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "tickettoken-dev",
        "sub": "admin-1",
        "aud": AUD,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "roles": ["admin"],
    }
    claims.update(over)
    return claims


def _bad_tokens(tokens: TestTokens, dev_dir: Path) -> dict[str, tuple[str, str]]:
    """name → (token, expected ErrorInfo reason)."""
    minter = tokens.minter
    now = time.time()
    good = minter.mint(subject="admin-1", audience=AUD, roles=["admin"])
    header, payload, signature = good.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["sub"] = "someone-else"
    public_pem = ensure_dev_keys(dev_dir).public_key_path.read_bytes()
    hs_header = _b64(json.dumps({"alg": "HS256", "kid": "dev-1", "typ": "JWT"}).encode())
    hs_body = _b64(json.dumps(_claims()).encode())
    hs_sig = _b64(hmac.new(public_pem, f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest())
    none_header = _b64(json.dumps({"alg": "none", "kid": "dev-1", "typ": "JWT"}).encode())
    stranger = TokenMinter(ec.generate_private_key(ec.SECP256R1()), kid="other", issuer="x")
    strange_kid = TokenMinter(minter._key, kid="nope", issuer="tickettoken-dev")
    wrong_iss = TokenMinter(minter._key, kid="dev-1", issuer="evil-issuer")
    return {
        "expired": (
            minter.mint(subject="a", audience=AUD, roles=["admin"], ttl=-120),
            "TOKEN_EXPIRED",
        ),
        "not_yet_valid": (
            minter.mint(subject="a", audience=AUD, roles=["admin"], not_before=now + 600, ttl=900),
            "TOKEN_NOT_YET_VALID",
        ),
        "wrong_aud": (
            minter.mint(subject="a", audience="tickettoken.payment", roles=["admin"]),
            "TOKEN_AUDIENCE",
        ),
        "wrong_iss": (wrong_iss.mint(subject="a", audience=AUD, roles=["admin"]), "TOKEN_ISSUER"),
        "alg_none": (f"{none_header}.{hs_body}.", "TOKEN_ALGORITHM_REJECTED"),
        "hs256_public_key_as_secret": (
            f"{hs_header}.{hs_body}.{hs_sig}",
            "TOKEN_ALGORITHM_REJECTED",
        ),
        "unknown_kid": (
            strange_kid.mint(subject="a", audience=AUD, roles=["admin"]),
            "TOKEN_KEY_UNKNOWN",
        ),
        "foreign_key": (stranger.mint(subject="a", audience=AUD), "TOKEN_KEY_UNKNOWN"),
        "tampered_payload": (
            f"{header}.{_b64(json.dumps(tampered).encode())}.{signature}",
            "TOKEN_SIGNATURE",
        ),
        "garbage": ("not-a-jwt", "TOKEN_MALFORMED"),
    }


async def test_missing_token_is_unauthenticated(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RenderTemplate(notify_pb2.RenderTemplateRequest(template_id="hi"))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert detail(status_of(info.value), error_details_pb2.ErrorInfo).reason == "TOKEN_MISSING"


async def test_bad_tokens_are_rejected(stub: Any, tokens: TestTokens, dev_dir: Path) -> None:
    for name, (token, reason) in _bad_tokens(tokens, dev_dir).items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RenderTemplate(
                notify_pb2.RenderTemplateRequest(template_id="hi"),
                metadata=tokens.metadata(token),
            )
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED, name
        got = detail(status_of(info.value), error_details_pb2.ErrorInfo).reason
        assert got == reason, f"{name}: {got}"


async def test_policy_denies_roles_and_services(stub: Any, tokens: TestTokens) -> None:
    buyer = tokens.metadata(tokens.user("buyer-1", ["buyer"], aud=AUD))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RenderTemplate(
            notify_pb2.RenderTemplateRequest(template_id="hi"), metadata=buyer
        )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # A service in the policy may call; one that is not may not.
    payment = tokens.metadata(tokens.service("payment", aud=AUD))
    nft = tokens.metadata(tokens.service("nft", aud=AUD))
    req = _upsert(str(uuid.uuid4()))
    await stub.UpsertTemplate(req, metadata=payment)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpsertTemplate(req, metadata=nft)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------------------------------------
# Metrics


async def test_metrics_count_real_codes(app: Any, stub: Any, tokens: TestTokens) -> None:
    await stub.RenderTemplate(
        notify_pb2.RenderTemplateRequest(template_id="hi"), metadata=admin(tokens)
    )
    calls: list[tuple[Any, Any]] = [
        (
            stub.RenderTemplate(
                notify_pb2.RenderTemplateRequest(template_id="bad"), metadata=admin(tokens)
            ),
            "INVALID_ARGUMENT",
        ),
        (
            stub.RenderTemplate(notify_pb2.RenderTemplateRequest(template_id="hi")),
            "UNAUTHENTICATED",
        ),
        (
            stub.RenderTemplate(
                notify_pb2.RenderTemplateRequest(template_id="hi"),
                metadata=tokens.metadata(tokens.user("b", ["buyer"], aud=AUD)),
            ),
            "PERMISSION_DENIED",
        ),
    ]
    for call, _ in calls:
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetTemplate(
            notify_pb2.GetTemplateRequest(template_id="receipt"), metadata=admin(tokens)
        )
    assert await handled(app, "RenderTemplate", "OK") == 1
    assert await handled(app, "RenderTemplate", "InvalidArgument") == 1
    assert await handled(app, "RenderTemplate", "Unauthenticated") == 1
    assert await handled(app, "RenderTemplate", "PermissionDenied") == 1
    assert await handled(app, "GetTemplate", "Unimplemented") == 1
    assert await handled(app, "RenderTemplate", "Internal") == 0


async def scrape(app: Any) -> dict[str, list[Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{app.ops_port}/metrics") as resp,
    ):
        text = await resp.text()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


async def test_metrics_count_starts_messages_and_latency(
    app: Any, stub: Any, tokens: TestTokens
) -> None:
    for _ in range(3):
        await stub.RenderTemplate(
            notify_pb2.RenderTemplateRequest(template_id="hi"), metadata=admin(tokens)
        )
    families = await scrape(app)

    def value(family: str, sample: str) -> float:
        return sum(
            s.value
            for s in families[family]
            if s.name == sample and s.labels["grpc_method"] == "RenderTemplate"
        )

    assert value("grpc_server_started", "grpc_server_started_total") == 3
    assert value("grpc_server_msg_received", "grpc_server_msg_received_total") == 3
    assert value("grpc_server_msg_sent", "grpc_server_msg_sent_total") == 3
    assert value("grpc_server_handling_seconds", "grpc_server_handling_seconds_count") == 3
    assert value("grpc_server_handling_seconds", "grpc_server_handling_seconds_sum") > 0


async def test_unknown_method_is_unimplemented(channel: Any, tokens: TestTokens) -> None:
    call = channel.unary_unary(f"/{SERVICE}/NoSuchMethod")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"", metadata=admin(tokens))
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_handler_abort_counted_with_its_code(app: Any, stub: Any, tokens: TestTokens) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RenderTemplate(
            notify_pb2.RenderTemplateRequest(template_id="abort"), metadata=admin(tokens)
        )
    assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert await handled(app, "RenderTemplate", "AlreadyExists") == 1
    assert await handled(app, "RenderTemplate", "Unknown") == 0


# ---------------------------------------------------------------------------------------------
# Idempotency through the RPC


def _upsert(key: str, name: str = "Receipt") -> notify_pb2.UpsertTemplateRequest:
    return notify_pb2.UpsertTemplateRequest(
        idempotency_key=key,
        template=notify_pb2.Template(
            id="receipt",
            name=name,
            subject_template="Hi {{ name }}",
            channel=notify_pb2.CHANNEL_EMAIL,
            category=notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL,
        ),
    )


async def test_sequential_duplicate_replays_identical_bytes(
    app: Any, channel: Any, tokens: TestTokens
) -> None:
    raw = channel.unary_unary(
        f"/{SERVICE}/UpsertTemplate",
        request_serializer=notify_pb2.UpsertTemplateRequest.SerializeToString,
        response_deserializer=None,
    )
    key = str(uuid.uuid4())
    first = await raw(_upsert(key), metadata=admin(tokens))
    second = await raw(_upsert(key), metadata=admin(tokens))
    assert isinstance(first, bytes) and first == second
    assert notify_pb2.UpsertTemplateResponse.FromString(first).template.version == 1
    assert servicer_of(app).upsert_runs == 1


async def test_concurrent_duplicates_run_handler_once(
    app: Any, stub: Any, tokens: TestTokens
) -> None:
    key = str(uuid.uuid4())
    md = admin(tokens)
    results = await asyncio.gather(
        *(stub.UpsertTemplate(_upsert(key), metadata=md) for _ in range(50)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, notify_pb2.UpsertTemplateResponse)]
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) + len(errors) == 50 and ok
    for err in errors:
        assert err.code() is grpc.StatusCode.ABORTED
        assert detail(status_of(err), error_details_pb2.RetryInfo) is not None
    assert servicer_of(app).upsert_runs == 1
    again = await stub.UpsertTemplate(_upsert(key), metadata=md)
    assert again == ok[0]
    assert servicer_of(app).upsert_runs == 1


async def test_key_reused_with_different_request(app: Any, stub: Any, tokens: TestTokens) -> None:
    key = str(uuid.uuid4())
    await stub.UpsertTemplate(_upsert(key), metadata=admin(tokens))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpsertTemplate(_upsert(key, name="Other"), metadata=admin(tokens))
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    reason = detail(status_of(info.value), error_details_pb2.ErrorInfo).reason
    assert reason == "IDEMPOTENCY_KEY_REUSED"
    assert servicer_of(app).upsert_runs == 1


async def test_keys_are_scoped_per_principal(app: Any, stub: Any, tokens: TestTokens) -> None:
    key = str(uuid.uuid4())
    await stub.UpsertTemplate(_upsert(key), metadata=admin(tokens, "admin-1"))
    await stub.UpsertTemplate(_upsert(key), metadata=admin(tokens, "admin-2"))
    assert servicer_of(app).upsert_runs == 2


async def test_missing_key_is_invalid_and_changes_nothing(
    app: Any, stub: Any, tokens: TestTokens
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpsertTemplate(_upsert(""), metadata=admin(tokens))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    bad = detail(status_of(info.value), error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["idempotency_key"]
    assert servicer_of(app).upsert_runs == 0


# ---------------------------------------------------------------------------------------------
# Health


async def test_health_serving_for_all_names(channel: Any) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_not_serving_until_redis_answers(app_factory: Any, tmp_path: Path) -> None:
    port = free_port()
    app = await app_factory(DEFINITION, redis_url=f"redis://127.0.0.1:{port}/0")
    async with channel_for(app) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        redis = EmbeddedRedis(tmp_path / "redis", port)
        redis.start()
        try:
            deadline = time.monotonic() + 10
            status = reply.status
            while time.monotonic() < deadline and status != health_pb2.HealthCheckResponse.SERVING:
                await asyncio.sleep(0.1)
                status = (await health.Check(health_pb2.HealthCheckRequest())).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            redis.stop()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and status == health_pb2.HealthCheckResponse.SERVING:
                await asyncio.sleep(0.1)
                status = (await health.Check(health_pb2.HealthCheckRequest())).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            redis.stop()


async def test_ops_readyz(app: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{app.ops_port}/readyz") as resp,
    ):
        assert resp.status == 200


async def test_reflection_lists_services_for_grpcurl(app: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "grpcurl"),
        "-plaintext",
        f"127.0.0.1:{app.grpc_port}",
        "list",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert {SERVICE, "grpc.health.v1.Health"} <= set(out.decode().split())
