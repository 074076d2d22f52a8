"""The call layer's input step, idempotency mark, error map and start/stop hooks, over real gRPC.

The in-process kit app (tests/kit/apps/kitapp.py) on port 0, called through real stubs and, for
bytes no stub would send, through a raw channel method.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from meshdev.testing.rpc import detail, status_of
from meshdev.testing.servers import TestTokens, channel_for, running_app
from meshkit.idempotency import idempotent, is_idempotent
from meshkit.server import Kit, ServiceRegistration
from meshkit.settings import SettingsError
from tests.kit.apps.kitapp import DEFINITION, KitAppServicer
from tests.kit.integration.test_kit_grpc import admin
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

SERVICE = "tickettoken.notify.v1.NotifyService"


@pytest.fixture
async def app(app_factory: Any) -> Any:
    return await app_factory(DEFINITION)


def servicer_of(app: Any) -> KitAppServicer:
    servicer = app.registrations[0].servicer
    assert isinstance(servicer, KitAppServicer)
    return servicer


async def test_bad_input_is_invalid_argument_before_the_handler(
    app: Any, tokens: TestTokens
) -> None:
    async with channel_for(app) as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        request = notify_pb2.RenderTemplateRequest(template_id="hi", variables={"name": "A\x00"})
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RenderTemplate(request, metadata=admin(tokens))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = status_of(info.value)
    assert detail(status, error_details_pb2.ErrorInfo).reason == "INVALID_REQUEST"
    bad = detail(status, error_details_pb2.BadRequest)
    assert [(v.field, v.reason) for v in bad.field_violations] == [
        ('variables["name"]', "string.no_nul")
    ]
    assert servicer_of(app).render_runs == 0


async def test_bytes_that_do_not_parse_are_invalid_argument(app: Any, tokens: TestTokens) -> None:
    async with channel_for(app) as channel:
        raw = channel.unary_unary(f"/{SERVICE}/RenderTemplate")  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff\x0f", metadata=admin(tokens))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    bad = detail(status_of(info.value), error_details_pb2.BadRequest)
    assert bad.field_violations[0].reason == "request.decode"
    assert servicer_of(app).render_runs == 0


async def test_authentication_comes_before_input_checks(app: Any) -> None:
    async with channel_for(app) as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RenderTemplate(notify_pb2.RenderTemplateRequest(template_id="\x00"))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_service_exception_is_mapped_by_the_services_error_map(
    app: Any, tokens: TestTokens
) -> None:
    async with channel_for(app) as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RenderTemplate(
                notify_pb2.RenderTemplateRequest(template_id="locked"), metadata=admin(tokens)
            )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    info_detail = detail(status_of(info.value), error_details_pb2.ErrorInfo)
    assert info_detail.reason == "TEMPLATE_LOCKED"
    assert info_detail.domain == "tickettoken.kitapp"


async def test_start_and_stop_hooks_run_in_order(
    postgres_url: str, redis_url: str, dev_dir: Path
) -> None:
    async with running_app(
        DEFINITION, postgres_url=postgres_url, redis_url=redis_url, dev_dir=dev_dir
    ) as app:
        servicer = servicer_of(app)
        # Start hooks run once the ports are bound (the HTTP port is known to them).
        assert servicer.events == [f"start:http={app.http_port}"]
    # Stop hooks: after the drain, last registered first.
    assert servicer.events[1:] == ["stop:registered-last", "stop:registered-first"]


class Unmarked(KitAppServicer):
    async def UpsertTemplate(  # type: ignore[override]
        self, request: notify_pb2.UpsertTemplateRequest, context: Any
    ) -> notify_pb2.UpsertTemplateResponse:
        return notify_pb2.UpsertTemplateResponse()


async def test_a_mutating_rpc_without_the_idempotent_mark_is_refused_at_start(
    postgres_url: str, redis_url: str, dev_dir: Path
) -> None:
    async def build(kit: Kit) -> Sequence[ServiceRegistration]:
        registration = (await DEFINITION.build(kit))[0]
        return [replace(registration, servicer=Unmarked(kit))]

    with pytest.raises(SettingsError, match="UpsertTemplate takes an idempotency_key"):
        async with running_app(
            replace(DEFINITION, build=build),
            postgres_url=postgres_url,
            redis_url=redis_url,
            dev_dir=dev_dir,
        ):
            pass


def test_the_mark_is_visible_through_bound_methods() -> None:
    class S:
        @idempotent
        async def Do(self) -> None:
            return None

    assert is_idempotent(S().Do) and not is_idempotent(S.__init__)


async def test_a_final_domain_error_of_an_idempotent_rpc_is_stored_and_replayed(
    app: Any, tokens: TestTokens
) -> None:
    """The error map applies inside the idempotency step: the store sees the domain error as
    FAILED_PRECONDITION (final), keeps it, and answers a retry with it without running again."""
    request = notify_pb2.UpsertTemplateRequest(
        idempotency_key=str(uuid.uuid4()),
        template=notify_pb2.Template(
            id="locked",
            channel=notify_pb2.CHANNEL_EMAIL,
            category=notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL,
        ),
    )
    async with channel_for(app) as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        answers = []
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.UpsertTemplate(request, metadata=admin(tokens))
            answers.append(info.value)
    assert [a.code() for a in answers] == [grpc.StatusCode.FAILED_PRECONDITION] * 2
    assert {detail(status_of(a), error_details_pb2.ErrorInfo).reason for a in answers} == {
        "TEMPLATE_LOCKED"
    }
    assert servicer_of(app).upsert_runs == 1  # the second answer was the stored one
