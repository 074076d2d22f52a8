"""Provider trouble through the kit's guard: a 429 (with Retry-After) or a 5xx from a provider is
retried and the call succeeds; a provider that keeps failing answers UNAVAILABLE with
RetryInfo — never INTERNAL, and the connection keeps its state."""

from __future__ import annotations

import grpc
import pytest

from meshdev.standins.mailchimp import MailchimpServer
from meshdev.standins.quickbooks import QuickBooksServer
from meshdev.standins.square import SquareServer
from meshdev.testing.rpc import retry_delay
from tests.integration.integration.support import Client
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def _test(client: Client, connection_id: str) -> pb.TestConnectionResponse:
    return await client.stub.TestConnection(
        pb.TestConnectionRequest(connection_id=connection_id), metadata=client.md()
    )


async def test_throttled_and_failing_providers_are_retried(
    client: Client,
    square: SquareServer,
    quickbooks: QuickBooksServer,
    mailchimp: MailchimpServer,
) -> None:
    sq = await client.dance(pb.PROVIDER_SQUARE)
    qb = await client.dance(pb.PROVIDER_QUICKBOOKS)
    mc = await client.dance(pb.PROVIDER_MAILCHIMP)
    square.throttle_next(1, retry_after=1)
    assert (await _test(client, sq.id)).ok
    quickbooks.fail_next(1, status=503)
    assert (await _test(client, qb.id)).ok
    mailchimp.throttle_next(1)
    assert (await _test(client, mc.id)).ok

    square.fail_next(10, status=500)  # beyond the guard's attempts
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _test(client, sq.id)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert retry_delay(info.value) is not None
    square.faults.clear()
    tested = await _test(client, sq.id)
    assert tested.ok and tested.connection.status == pb.CONNECTION_STATUS_CONNECTED
