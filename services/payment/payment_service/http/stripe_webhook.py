"""`POST /webhooks/stripe`: Stripe's signed deliveries, handled by the same use case as the gRPC
method `HandleProviderWebhook`.

Answers 200 with the outcome once the event's transaction has committed; 400 when the delivery
fails verification (Stripe does not retry a 4xx); 503 when processing failed and changed nothing
(Stripe delivers it again later). The error bodies carry the same reasons as the gRPC errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from payment_service.api.errors import to_mesh_error
from payment_service.domain.errors import PaymentError, WebhookUnverified
from payment_service.usecases.webhooks import Delivery, Webhooks

PATH = "/webhooks/stripe"


def route(webhooks: Webhooks) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler for PATH."""

    async def handle(request: web.Request) -> web.Response:
        delivery = Delivery(
            payload=await request.read(),
            headers={k.lower(): ", ".join(request.headers.getall(k)) for k in request.headers},
        )
        try:
            handled = await webhooks.handle(delivery)
        except PaymentError as exc:
            mapped = to_mesh_error(exc)
            reason = mapped.reason if mapped is not None else type(exc).__name__
            if isinstance(exc, WebhookUnverified):
                return web.json_response({"error": reason, "message": exc.message}, status=400)
            return web.json_response({"error": reason}, status=503)
        return web.json_response(
            {
                "event_id": handled.event_id,
                "status": handled.outcome.value,
                "payment_id": str(handled.payment_id) if handled.payment_id else "",
            }
        )

    return handle
