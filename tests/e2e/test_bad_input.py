"""Property-based bad input for every RPC of every service, built from the descriptors.

Each service runs in-process on port 0 against the embedded Postgres and Redis (payment against
localstripe), with an admin token (every policy lets admins call every RPC, so what is tested is
the input, not the auth). For each RPC, hypothesis builds requests from the request message's
descriptor — plausible values for the field's name and type mixed with empty, huge, NUL-laden,
out-of-range and undefined-enum values, nested messages, repeated fields, maps, oneofs and
timestamps outside their range — and, so that examples also get past the rules into the
handlers, well-formed requests (tests/contracts/examples.py) with one field replaced by such a
value. It sends them through the generated stubs and asserts that:

* no answer is INTERNAL, UNKNOWN or a timeout: bad input always gets a clear answer;
* INVALID_ARGUMENT carries a `google.rpc.BadRequest` with at least one field violation and one
  ErrorInfo;
* an INVALID_ARGUMENT answer changed nothing: every table of the service's schema reads the same
  before and after the call.

A new RPC is covered as soon as it is in a service's descriptor. Runs are derandomized, so CI
sees the same examples every time (`BAD_INPUT_EXAMPLES` raises the count locally).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdev.embedded import LocalStripe
from meshdev.testing.rpc import details, status_of
from meshdev.testing.servers import TestTokens, running_app
from meshkit.server import App
from tests.contracts.examples import valid_requests
from tickettoken.integration.v1 import integration_pb2
from tickettoken.nft.v1 import nft_pb2
from tickettoken.notify.v1 import notify_pb2
from tickettoken.payment.v1 import payment_pb2

EXAMPLES = int(os.environ.get("BAD_INPUT_EXAMPLES", "20"))
CALL_TIMEOUT_S = 20.0
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_DEPTH = 3

SERVICES: dict[str, Any] = {
    "payment": payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
    "nft": nft_pb2.DESCRIPTOR.services_by_name["NftService"],
    "notify": notify_pb2.DESCRIPTOR.services_by_name["NotifyService"],
    "integration": integration_pb2.DESCRIPTOR.services_by_name["IntegrationService"],
}
MODULES = {
    "payment": payment_pb2,
    "nft": nft_pb2,
    "notify": notify_pb2,
    "integration": integration_pb2,
}
METHODS = [(svc, m) for svc, d in SERVICES.items() for m in d.methods]

# -- strategies from descriptors ----------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"  # a valid base58 32-byte address


def _plausible(field: FieldDescriptor) -> st.SearchStrategy[str]:
    """Values that look right for the field's name, so requests also get past the rules."""
    name = field.name
    options: list[st.SearchStrategy[str]] = [st.uuids().map(str)]
    if "currency" in name:
        options.append(st.sampled_from(["USD", "EUR", "usd", "XYZ", "US"]))
    if name.endswith(("wallet", "address")) or "wallet" in name:
        options += [st.just(_WALLET), st.text(_B58, min_size=30, max_size=46)]
    if "email" in name:
        options.append(st.sampled_from(["ada@example.com", "not-an-email", "a@b"]))
    if "phone" in name:
        options.append(st.sampled_from(["+16155550100", "555-0100", "+1"]))
    if "url" in name or "uri" in name:
        options.append(st.sampled_from(["https://example.com/x", "http://127.0.0.1:1/", "::"]))
    if "locale" in name:
        options.append(st.sampled_from(["en-US", "fr", "x", "en_US"]))
    if "provider" in name:
        options.append(st.sampled_from(["stripe", "square", "mailchimp", "quickbooks", "x"]))
    if name.endswith("_id") or name == "id":
        options.append(
            st.text(string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=12)
        )
    return st.one_of(options)


def _string(field: FieldDescriptor) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        _plausible(field),
        st.text(max_size=12),
        st.text(alphabet=st.sampled_from("ab\x00 \n\u00e9\u4e2d"), max_size=6),
        st.text(alphabet="x", min_size=200, max_size=300),
        st.integers(1, 3).map(lambda n: "y" * (n * 40_000)),  # up to past the global cap
    )


_INT_EDGES = [0, 1, -1, 2, 7, 100, 500, 501, 10_000]


def _integer(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = [v for v in [*_INT_EDGES, lo, hi] if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _timestamp(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.builds(
        cls,
        seconds=st.one_of(
            st.integers(1_600_000_000, 1_900_000_000),  # plausible
            st.sampled_from([0, -1, -62_135_596_801, 253_402_300_800]),  # edges, out of range
            st.integers(-(2**63), 2**63 - 1),
        ),
        nanos=st.one_of(st.just(0), st.integers(-(2**31), 2**31 - 1)),
    )


class Strategies:
    """A strategy per message type, built lazily from its descriptor (recursion-limited)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], st.SearchStrategy[Message]] = {}

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        key = (descriptor.full_name, depth)
        if key not in self._cache:
            self._cache[key] = self._build(descriptor, depth)
        return self._cache[key]

    def _build(self, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        cls: type[Message] = _message_class(descriptor)
        if descriptor.full_name == "google.protobuf.Timestamp":
            return _timestamp(cls)
        if depth >= MAX_DEPTH:
            return st.just(cls())
        fields = {f.name: self.field(f, depth) for f in descriptor.fields if not _is_any(f)}

        @st.composite
        def build(draw: st.DrawFn) -> Message:
            message = cls()
            for name, strategy in fields.items():
                if not draw(st.booleans()):  # leave about half the fields unset
                    continue
                _assign(message, descriptor.fields_by_name[name], draw(strategy))
            return message

        return build()

    def field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """Values for one field (a list for repeated fields, a dict for maps)."""
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            key = self._scalar(field.message_type.fields_by_name["key"], depth)
            value = self._single(field.message_type.fields_by_name["value"], depth)
            return st.dictionaries(key, value, max_size=3)
        single = self._single(field, depth)
        if field.is_repeated:
            return st.lists(single, max_size=3)
        return single

    def _single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(field.message_type, depth + 1)
        return self._scalar(field, depth)

    def _scalar(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        t = field.type
        if t == FieldDescriptor.TYPE_STRING:
            return _string(field)
        if t == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=32)
        if t == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if t == FieldDescriptor.TYPE_ENUM:
            defined = [v.number for v in field.enum_type.values]
            return st.one_of(st.sampled_from(defined), st.integers(-3, 40))
        if t in (
            FieldDescriptor.TYPE_INT32,
            FieldDescriptor.TYPE_SINT32,
            FieldDescriptor.TYPE_SFIXED32,
        ):
            return _integer(32, True)
        if t in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SFIXED64,
        ):
            return _integer(64, True)
        if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return _integer(32, False)
        if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return _integer(64, False)
        raise AssertionError(f"no strategy for {field.full_name} (floats are not in contracts)")


def _is_any(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name in (
        "google.protobuf.Any",
    )


def _message_class(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        for k, v in value.items():
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _with_one_field_replaced(seed: Message) -> st.SearchStrategy[Message]:
    """`seed` (a well-formed request, with a fresh idempotency key) with one field — at the top
    or one level down in a set message field — replaced by a generated value."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = type(seed)()
        message.CopyFrom(seed)
        if "idempotency_key" in message.DESCRIPTOR.fields_by_name:
            message.idempotency_key = str(draw(st.uuids()))  # type: ignore[attr-defined]
        target = message
        fields = list(target.DESCRIPTOR.fields)
        if not fields:
            return message
        field = draw(st.sampled_from(fields))
        nested = (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.is_repeated
            and target.HasField(field.name)
            and target.DESCRIPTOR.full_name != "google.protobuf.Timestamp"
        )
        if nested and getattr(target, field.name).DESCRIPTOR.fields and draw(st.booleans()):
            target = getattr(target, field.name)
            field = draw(st.sampled_from(list(target.DESCRIPTOR.fields)))
        if _is_any(field):
            return message
        target.ClearField(field.name)
        _assign(target, field, draw(STRATEGIES.field(field, 1)))
        return message

    return build()


def _requests_for(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    seeds = [r for r in valid_requests() if r.DESCRIPTOR.full_name == descriptor.full_name]
    random = STRATEGIES.message(descriptor)
    if not seeds:
        return random
    return st.one_of(random, *(_with_one_field_replaced(seed) for seed in seeds))


# -- the services under test --------------------------------------------------------------------

STRIPE_KEY = "sk_test_tickettoken_local"
WEBHOOK_SECRET = "whsec_test_tickettoken_local"


def _definition(service: str) -> Any:
    """The service's ServiceDefinition (`<svc>_service.app.DEFINITION`)."""
    return importlib.import_module(f"{service}_service.app").DEFINITION


def _overrides(service: str, localstripe: str, tmp: Path) -> dict[str, Any]:
    if service == "payment":
        return {
            "stripe_secret_key": STRIPE_KEY,
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "stripe_api_base": localstripe,
            "stripe_dev_register_webhook": False,
            "reconcile_interval_s": 0,
            "refund_rate_limit_per_minute": 0,
            "provider_policies": '{"stripe": {"max_attempts": 1}}',
            # The relay would mark outbox rows staged by earlier examples while a refusal's
            # before/after fingerprints are taken; events are not what this test checks.
            "relay_enabled": False,
        }
    if service == "nft":
        return {
            "nft_mint_workers": 0,
            "solana_local_state_file": tmp / "chain.jsonl",
            "relay_enabled": False,
        }
    return {}


class Mesh:
    """The four services running, with a way to fingerprint each one's tables."""

    def __init__(self, apps: dict[str, App], postgres_url: str, tokens: TestTokens) -> None:
        self.apps = apps
        self.postgres_url = postgres_url
        self.tokens = tokens
        self.channels: dict[str, grpc.aio.Channel] = {}

    def metadata(self, service: str) -> tuple[tuple[str, str], ...]:
        app = self.apps[service]
        audience = app.settings.audience
        return self.tokens.metadata(self.tokens.user("fuzz-admin", ["admin"], aud=audience))

    async def fingerprint(self, service: str) -> dict[str, str]:
        """md5 of every table's content in the service's schema (migration records aside)."""
        schema = self.apps[service].settings.schema_name
        app = self.apps[service]
        assert app.kit is not None
        async with app.kit.db.acquire() as conn:
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1 "
                "AND tablename <> 'schema_migrations' ORDER BY tablename",
                schema,
            )
            result: dict[str, str] = {}
            for row in tables:
                name = row["tablename"]
                result[name] = await conn.fetchval(
                    f"SELECT md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) "
                    f'FROM "{schema}"."{name}" t'
                )
            return result


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with LocalStripe(tmp_path_factory.mktemp("fuzz-localstripe")) as server:
        yield server.url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    tokens: TestTokens,
    localstripe: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Mesh]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        apps: dict[str, App] = {}
        for service in SERVICES:
            tmp = tmp_path_factory.mktemp(f"fuzz-{service}")
            apps[service] = await stack.enter_async_context(
                running_app(
                    _definition(service),
                    postgres_url=postgres_url,
                    redis_url=redis_url,
                    dev_dir=dev_dir,
                    access_log=False,
                    **_overrides(service, localstripe, tmp),
                )
            )
        result = Mesh(apps, postgres_url, tokens)
        for service, app in apps.items():
            result.channels[service] = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
        try:
            yield result
        finally:
            for channel in result.channels.values():
                await channel.close()


# -- the property ---------------------------------------------------------------------------------

STRATEGIES = Strategies()


async def _call(
    mesh: Mesh, service: str, method: MethodDescriptor, request: Message
) -> grpc.StatusCode:
    """Send `request`; return the status code, checking the error details of a refusal."""
    channel = mesh.channels[service]
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_cls = _message_class(method.output_type)
    kwargs = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": response_cls.FromString,
    }
    try:
        if method.server_streaming:
            call = channel.unary_stream(path, **kwargs)(
                request, metadata=mesh.metadata(service), timeout=CALL_TIMEOUT_S
            )
            async for _ in call:
                break  # the first message (or the error) is all this test needs
            call.cancel()
        else:
            await channel.unary_unary(path, **kwargs)(
                request, metadata=mesh.metadata(service), timeout=CALL_TIMEOUT_S
            )
    except grpc.aio.AioRpcError as err:
        code = err.code()
        if code is grpc.StatusCode.CANCELLED:
            return grpc.StatusCode.OK  # our own cancel after the first streamed message
        assert code not in NEVER, f"{path} answered {code.name}: {err.details()}"
        status = status_of(err)
        assert len(details(status, error_details_pb2.ErrorInfo)) == 1, f"{path}: one ErrorInfo"
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            bad = details(status, error_details_pb2.BadRequest)
            assert bad and bad[0].field_violations, f"{path}: INVALID_ARGUMENT without fields"
        return code
    return grpc.StatusCode.OK


def _run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=CALL_TIMEOUT_S * 3)


def _check_method(
    mesh: Mesh, service: str, method: MethodDescriptor, loop: asyncio.AbstractEventLoop
) -> dict[str, int]:
    seen: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=_requests_for(method.input_type))
    def check(request: Message) -> None:
        before = _run(loop, mesh.fingerprint(service))
        code = _run(loop, _call(mesh, service, method, request))
        seen[code.name] = seen.get(code.name, 0) + 1
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            after = _run(loop, mesh.fingerprint(service))
            changed = [t for t in before if before[t] != after.get(t)]
            assert not changed, f"{method.full_name}: refused input changed {changed}"

    check()
    return seen


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
async def test_random_requests_get_clear_answers_and_refusals_change_nothing(
    mesh: Mesh, service: str, method: MethodDescriptor
) -> None:
    loop = asyncio.get_running_loop()
    # hypothesis drives a synchronous test: run it in a thread, sending each call to this loop.
    seen = await loop.run_in_executor(None, _check_method, mesh, service, method, loop)
    assert sum(seen.values()) >= 1
    # Random input must reach the rules at least once (or the RPC takes no input at all).
    if method.input_type.fields:
        assert "INVALID_ARGUMENT" in seen or "NOT_FOUND" in seen or "FAILED_PRECONDITION" in seen, (
            seen
        )
