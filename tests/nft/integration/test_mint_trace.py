"""A purchase's trace survives nft's queue: the MintTickets request's trace context is stored with
its job, and minters — in another process, after a restart — announce each ticket's TicketMinted
in that trace and log its outcome under it; a RevokeTicket applied later by the minters' sweep
announces TicketRevoked (and logs the burn) in the revocation request's trace."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from meshdev.testing.servers import channel_for
from tests.nft.integration.support import CONTACT, Start, mint_request, outbox_envelopes, wait_job
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"
TRACE_C = "5c0a1e4d2b3f4a5b8c9d0e1f2a3b4c5d"
CALLER_SPAN = "00f067aa0ba902b7"


def traceparent(trace_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{CALLER_SPAN}-{flags}"


def trace_id_of(value: str) -> str:
    version, trace_id, span_id, _ = value.split("-")
    assert version == "00" and span_id != CALLER_SPAN  # a span of nft's own, in that trace
    return trace_id


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not {what} in {timeout}s")
        await asyncio.sleep(0.05)


async def test_minted_and_revoked_tickets_continue_their_requests_traces(
    start_nft: Start,
    payment_md: Any,
    admin_md: Any,
    postgres_url: str,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    first = await start_nft(db_schema=schema, nft_mint_workers=0)  # nothing mints yet
    async with channel_for(first) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        a = await stub.MintTickets(
            mint_request(count=2, contact=CONTACT),
            metadata=(*payment_md, ("traceparent", traceparent(TRACE_A)), ("tracestate", "v=1")),
        )
        b = await stub.MintTickets(
            mint_request(count=1, contact=CONTACT),
            metadata=(*payment_md, ("traceparent", traceparent(TRACE_B, "00"))),
        )
        plain = await stub.MintTickets(mint_request(count=1), metadata=payment_md)
    await first.stop()

    # Minters in another process over the same database: each ticket's outcome in its trace.
    second = await start_nft(db_schema=schema)
    async with channel_for(second) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        for reply in (a, b, plain):
            job = await wait_job(stub, admin_md, reply.job.id)
            assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED

        revoked_id = a.job.results[0].ticket_id
        await stub.RevokeTicket(
            nft_pb2.RevokeTicketRequest(
                idempotency_key=str(uuid.uuid4()),
                ticket_id=revoked_id,
                reason=nft_pb2.REVOKE_REASON_REFUND,
                reference_id="refund-1",
            ),
            metadata=(*payment_md, ("traceparent", traceparent(TRACE_C))),
        )

        async def revoked() -> bool:
            view = await stub.GetTicketNft(
                nft_pb2.GetTicketNftRequest(ticket_id=revoked_id), metadata=admin_md
            )
            return bool(view.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED)

        await _until(revoked, "revoked by the sweep")

    envelopes = await outbox_envelopes(postgres_url, second)
    minted = {e.aggregate_id: e.trace for e in envelopes if e.event_type.endswith(".TicketMinted")}
    tickets_a = [r.ticket_id for r in a.job.results]
    [ticket_b] = [r.ticket_id for r in b.job.results]
    [ticket_plain] = [r.ticket_id for r in plain.job.results]
    assert set(minted) == {*tickets_a, ticket_b, ticket_plain}
    for ticket_id in tickets_a:
        assert trace_id_of(minted[ticket_id].traceparent) == TRACE_A
        assert minted[ticket_id].traceparent.endswith("-01")
        assert minted[ticket_id].tracestate == "v=1"
    assert trace_id_of(minted[ticket_b].traceparent) == TRACE_B
    assert minted[ticket_b].traceparent.endswith("-00")  # the caller's sampling decision kept
    # A request without a trace had one of its own (its server span's), and the event keeps it.
    plain_trace = trace_id_of(minted[ticket_plain].traceparent)
    assert plain_trace not in (TRACE_A, TRACE_B, TRACE_C)
    [revocation] = [e for e in envelopes if e.event_type.endswith(".TicketRevoked")]
    assert revocation.aggregate_id == revoked_id
    assert trace_id_of(revocation.trace.traceparent) == TRACE_C

    lines = log_lines()
    logged = {
        line["ticket_id"]: line["trace_id"]
        for line in lines
        if line["message"] == "ticket minted" and line["logger"] == "nft_service.jobs.minter"
    }
    assert logged == {
        **{t: TRACE_A for t in tickets_a},
        ticket_b: TRACE_B,
        ticket_plain: plain_trace,
    }
    [burned] = [line for line in lines if line["message"] == "ticket revoked"]
    assert burned["ticket_id"] == revoked_id and burned["trace_id"] == TRACE_C
