"""NotifyService servicer: proto in, domain call, proto out — nothing else.

Business RPCs not built yet answer UNIMPLEMENTED (after auth) through the generated base
class; the issues that build them replace the methods here.
"""

from __future__ import annotations

from meshkit.server import Kit
from tickettoken.notify.v1 import notify_pb2_grpc


class NotifyServicer(notify_pb2_grpc.NotifyServiceServicer):
    """Thin adapter between the NotifyService contract and the domain."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
