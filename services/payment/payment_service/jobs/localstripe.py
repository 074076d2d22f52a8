"""Dev/test only: once the HTTP port is bound, point localstripe's webhooks at this service.

localstripe's `/_config/webhooks/{id}` is not part of Stripe's API; production settings refuse
the option that leads here (STRIPE_DEV_REGISTER_WEBHOOK).
"""

from __future__ import annotations

import logging

from meshkit.server import Kit
from payment_service.adapters.stripe_gateway import StripeGateway
from payment_service.http.stripe_webhook import PATH

logger = logging.getLogger(__name__)

WEBHOOK_ID = "payment"


def register_on_start(kit: Kit, gateway: StripeGateway, secret: str) -> None:
    async def register() -> None:
        url = kit.http.local_url(PATH)
        try:
            await gateway.register_local_webhook(webhook_id=WEBHOOK_ID, url=url, secret=secret)
        except Exception:
            # A dev convenience: the service runs without it (webhooks then never arrive).
            logger.exception("could not register the localstripe webhook", extra={"url": url})

    kit.on_start(register)
