"""Routes on the public HTTP port.

* `GET /oauth/callback?state&code|error[&realmId]`: the provider sends the admin's browser back
  here (when the redirect URI is the service's own): CompleteOAuth for whoever started the
  authorization (the state is the proof: random, single-use, short-lived). 200 JSON with the
  connection id, or 400/403/503 JSON with the reason.
* `POST /webhooks/square`, `POST /webhooks/quickbooks`: signed with the app's secrets.
* `POST /webhooks/stripe/{connection_id}`: signed with the connection's endpoint secret.
* `GET|POST /webhooks/mailchimp/{connection_id}?secret=…`: the URL secret; Mailchimp's GET (the
  check it sends when a webhook is saved) is answered 200 and changes nothing.

Webhook answers: 200 once handled (a replay too: it changed nothing), 401 for a bad signature or
secret, 400 for a stale or malformed delivery, 404 when the provider is not configured or the
connection is unknown, 503 when processing failed and changed nothing (the provider retries).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from integration_service.api.errors import to_mesh_error
from integration_service.domain.errors import (
    Forbidden,
    IntegrationError,
    InvalidInput,
    NotFound,
    ProviderNotConfigured,
    WebhookStale,
    WebhookUnverified,
)
from integration_service.usecases.oauth import OAuthCases
from integration_service.usecases.webhooks import WebhookCases, WebhookDelivery

Handler = Callable[[web.Request], Awaitable[web.Response]]
CALLBACK_PATH = "/oauth/callback"


def _error(exc: IntegrationError) -> web.Response:
    mapped = to_mesh_error(exc)
    reason = mapped.reason if mapped is not None else type(exc).__name__
    if isinstance(exc, WebhookStale):
        status = 400
    elif isinstance(exc, WebhookUnverified) and exc.reason == "WEBHOOK_SIGNATURE_INVALID":
        status = 401
    elif isinstance(exc, InvalidInput):
        status = 400
    elif isinstance(exc, ProviderNotConfigured | NotFound):
        status = 404
    elif isinstance(exc, Forbidden):
        status = 403
    else:
        status = 503
    return web.json_response({"error": reason, "message": exc.message}, status=status)


def oauth_callback(oauth: OAuthCases) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        query = request.query
        params = {k: v for k, v in query.items() if k not in ("state", "code", "error")}
        try:
            connection = await oauth.complete(
                None,
                state=query.get("state", ""),
                code=query.get("code", ""),
                error=query.get("error", ""),
                params=params,
            )
        except IntegrationError as exc:
            return _error(exc)
        return web.json_response(
            {
                "connection_id": str(connection.id),
                "venue_id": connection.venue_id,
                "provider": connection.provider.value,
                "status": connection.status.value,
            }
        )

    return handle


def webhook(cases: WebhookCases, provider: str, public_base: Callable[[], str]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        connection_id: uuid.UUID | None = None
        if "connection_id" in request.match_info:
            try:
                connection_id = uuid.UUID(request.match_info["connection_id"])
            except ValueError:
                return web.json_response({"error": "CONNECTION_NOT_FOUND"}, status=404)
        delivery = WebhookDelivery(
            provider=provider,
            payload=await request.read(),
            headers={k.lower(): ", ".join(request.headers.getall(k)) for k in request.headers},
            url=public_base() + request.raw_path,
            method=request.method,
            connection_id=connection_id,
            secret=request.query.get("secret", ""),
        )
        try:
            handled = await cases.handle(delivery)
        except IntegrationError as exc:
            return _error(exc)
        return web.json_response({"event_id": handled.event_id, "status": handled.outcome})

    return handle
