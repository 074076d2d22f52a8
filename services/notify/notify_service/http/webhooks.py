"""`POST /webhooks/sendgrid`, `POST /webhooks/twilio/status`, `POST /webhooks/twilio/inbound`:
receipts as the providers deliver them, handled by the same use case as the gRPC method
`HandleProviderWebhook`.

Answers 200 once the receipt's transaction committed (a replay too: it changed nothing); 403
for a forged signature, 400 for a stale or malformed delivery (neither is retried usefully);
404 when the provider is not configured here; 503 when processing failed and changed nothing
(the provider delivers again). Twilio signs the URL it called, so the URL is rebuilt from the
public base URL and the raw path and query as received.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from notify_service.api.errors import to_mesh_error
from notify_service.domain.errors import (
    NotifyError,
    ProviderNotConfigured,
    WebhookStale,
    WebhookUnverified,
)
from notify_service.usecases.links import Links
from notify_service.usecases.receipts import Receipts, WebhookDelivery

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def route(
    receipts: Receipts, links: Links, provider: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        delivery = WebhookDelivery(
            provider=provider,
            payload=await request.read(),
            headers={k.lower(): ", ".join(request.headers.getall(k)) for k in request.headers},
            url=links.base() + request.raw_path,
        )
        try:
            handled = await receipts.handle(delivery)
        except NotifyError as exc:
            mapped = to_mesh_error(exc)
            reason = mapped.reason if mapped is not None else type(exc).__name__
            if isinstance(exc, WebhookStale):
                status = 400
            elif isinstance(exc, WebhookUnverified):
                status = 403 if "signature" in exc.message else 400
            elif isinstance(exc, ProviderNotConfigured):
                status = 404
            else:
                status = 503
            return web.json_response({"error": reason}, status=status)
        if provider == "twilio":
            return web.Response(text=EMPTY_TWIML, content_type="text/xml")
        return web.json_response(
            {
                "event_id": handled.event_id,
                "status": handled.outcome.value,
                "event_count": handled.event_count,
                "notification_ids": handled.notification_ids,
            }
        )

    return handle
