"""A small service built on the kit, used by the kit's own tests (in-process and as a process).

It implements a few NotifyService methods with scripted behaviour so the tests can drive every
path of the kit: OK, domain errors with details, unexpected exceptions, slow calls (graceful
drain), and an idempotent mutating RPC that counts how often its handler really ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import grpc

from meshkit.auth import Policy, allow
from meshkit.errors import FieldViolation, NotFound, invalid_argument
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


class KitAppServicer(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.upsert_runs = 0

    async def RenderTemplate(
        self, request: notify_pb2.RenderTemplateRequest, context: Any
    ) -> notify_pb2.RenderTemplateResponse:
        variables = dict(request.variables)
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

    async def UpsertTemplate(
        self, request: notify_pb2.UpsertTemplateRequest, context: Any
    ) -> bytes:
        async def handle() -> notify_pb2.UpsertTemplateResponse:
            self.upsert_runs += 1
            await asyncio.sleep(0.05)
            template = notify_pb2.Template()
            template.CopyFrom(request.template)
            template.version = self.upsert_runs
            return notify_pb2.UpsertTemplateResponse(template=template, created=True)

        return await self.kit.idempotent(request, handle)


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    return [
        ServiceRegistration(
            descriptor=notify_pb2.DESCRIPTOR.services_by_name["NotifyService"],
            add_to_server=notify_pb2_grpc.add_NotifyServiceServicer_to_server,
            servicer=KitAppServicer(kit),
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition(
    settings_cls=KitAppSettings,
    migrations=MigrationSource("kitapp", Path(__file__).parent / "kitapp_migrations"),
    build=build,
)

if __name__ == "__main__":
    run_service(DEFINITION)
