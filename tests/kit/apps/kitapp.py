"""A small service built on the kit, used by the kit's own tests (in-process and as a process).

It implements a few NotifyService methods with scripted behaviour so the tests can drive every
path of the kit: OK, domain errors with details, a service exception mapped by its error map,
unexpected exceptions, slow calls (graceful drain), an idempotent mutating RPC that counts how
often its handler really ran, and start/stop hooks that record when they ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import grpc

from meshkit.auth import Policy, allow
from meshkit.errors import (
    FailedPrecondition,
    FieldViolation,
    MeshError,
    NotFound,
    invalid_argument,
)
from meshkit.idempotency import idempotent
from meshkit.migrations import MigrationSource
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration, run_service
from meshkit.settings import KitSettings
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

POLICY: Policy = {
    "SendNotification": allow("admin"),
    "GetNotification": allow("admin"),
    "ListNotifications": allow("admin"),
    "UpsertTemplate": allow("admin", "venue_admin", services=["payment"]),
    "GetTemplate": allow("admin"),
    "RenderTemplate": allow("admin", "venue_admin"),
    "SetPreferences": allow("admin"),
    "GetPreferences": allow("admin"),
    "HandleProviderWebhook": allow("admin"),
}


class KitAppSettings(KitSettings):
    service_name: ClassVar[str] = "kitapp"
    default_grpc_port: ClassVar[int] = 0
    default_ops_port: ClassVar[int] = 0


class TemplateLocked(Exception):
    """A "domain" exception of this app: no grpc in it; the app's error map translates it."""


def map_errors(exc: Exception) -> MeshError | None:
    if isinstance(exc, TemplateLocked):
        return FailedPrecondition(str(exc), reason="TEMPLATE_LOCKED")
    return None


class KitAppServicer(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.upsert_runs = 0
        self.render_runs = 0
        self.events: list[str] = []

    async def RenderTemplate(
        self, request: notify_pb2.RenderTemplateRequest, context: Any
    ) -> notify_pb2.RenderTemplateResponse:
        self.render_runs += 1
        variables = dict(request.variables)
        if request.template_id == "locked":
            raise TemplateLocked("template locked is being edited")
        if request.template_id == "slow":
            await asyncio.sleep(float(variables.get("delay", "1")))
        elif request.template_id == "bad":
            raise invalid_argument([FieldViolation("variables.name", "must not be empty")])
        elif request.template_id == "missing":
            raise NotFound("template missing does not exist", reason="TEMPLATE_NOT_FOUND")
        elif request.template_id == "abort":
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "aborted by the handler itself")
        elif request.template_id == "boom":
            raise RuntimeError("db password is hunter2")  # must never reach the client
        return notify_pb2.RenderTemplateResponse(subject=f"hello {variables.get('name', '')}")

    @idempotent
    async def UpsertTemplate(
        self, request: notify_pb2.UpsertTemplateRequest, context: Any
    ) -> notify_pb2.UpsertTemplateResponse:
        self.upsert_runs += 1
        if request.template.id == "locked":
            raise TemplateLocked("template locked is being edited")
        await asyncio.sleep(0.05)
        template = notify_pb2.Template()
        template.CopyFrom(request.template)
        template.version = self.upsert_runs
        return notify_pb2.UpsertTemplateResponse(template=template, created=True)


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    servicer = KitAppServicer(kit)

    async def started() -> None:
        servicer.events.append(f"start:http={kit.http.port}")

    async def stopping_first() -> None:
        servicer.events.append("stop:registered-last")

    async def stopping_last() -> None:
        servicer.events.append("stop:registered-first")

    kit.on_start(started)
    kit.on_stop(stopping_last)
    kit.on_stop(stopping_first)
    return [
        ServiceRegistration(
            descriptor=notify_pb2.DESCRIPTOR.services_by_name["NotifyService"],
            add_to_server=notify_pb2_grpc.add_NotifyServiceServicer_to_server,
            servicer=servicer,
            policy=POLICY,
            errors=map_errors,
        )
    ]


DEFINITION = ServiceDefinition(
    settings_cls=KitAppSettings,
    migrations=MigrationSource("kitapp", Path(__file__).parent / "kitapp_migrations"),
    build=build,
)

if __name__ == "__main__":
    run_service(DEFINITION)
