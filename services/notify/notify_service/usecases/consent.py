"""The shared consent steps: a one-click unsubscribe, and the suppression list.

Used by the unsubscribe link (preferences), by receipts (SendGrid unsubscribe events, bounces,
complaints, SMS STOP) and by delivery (a hard bounce at send time). Every function works inside
the caller's transaction.
"""

from __future__ import annotations

import asyncpg

from notify_service.domain import preferences as rules
from notify_service.domain.addresses import AddressRules, normalise_email, normalise_phone
from notify_service.domain.errors import BadAddress
from notify_service.domain.model import Channel, Notification, SuppressionReason
from notify_service.store import preferences, suppressions


async def unsubscribe(conn: asyncpg.Connection, n: Notification, source: str) -> None:
    """What a recipient's unsubscribe from notification `n` does: for a user, their preference
    for its category on its channel (TRANSACTIONAL: everything else on that channel); for a
    guest, the address goes on the suppression list for everything but transactional mail."""
    if n.user_id:
        current = await preferences.get(conn, n.user_id) or rules.defaults(n.user_id)
        await preferences.put(conn, rules.unsubscribed(current, n.category, n.channel))
    else:
        await suppressions.add(
            conn, n.channel, n.destination, SuppressionReason.UNSUBSCRIBED, source
        )


def normalised(channel: Channel, destination: str, address_rules: AddressRules) -> str | None:
    """A provider-reported destination in our normal form (None when it is not one)."""
    try:
        if channel is Channel.EMAIL:
            return normalise_email(destination, address_rules)
        if channel is Channel.SMS:
            return normalise_phone(destination, address_rules)
    except BadAddress:
        return None
    return destination


async def suppress(
    conn: asyncpg.Connection,
    channel: Channel,
    destination: str,
    reason: SuppressionReason,
    source: str,
    address_rules: AddressRules,
) -> bool:
    address = normalised(channel, destination, address_rules)
    if address is None:
        return False
    return await suppressions.add(conn, channel, address, reason, source)


async def unsuppress(
    conn: asyncpg.Connection,
    channel: Channel,
    destination: str,
    reason: SuppressionReason,
    address_rules: AddressRules,
) -> bool:
    address = normalised(channel, destination, address_rules)
    if address is None:
        return False
    return await suppressions.remove(conn, channel, address, reason)
