"""MintTickets without an owner wallet mints to the buyer's custodial wallet (the relay of
PaymentSucceeded sends an empty owner_wallet when the buyer gave no wallet address): one wallet
per buyer, derived from the buyer id, the same for every purchase, holding the token on chain."""

from __future__ import annotations

from typing import Any

from solders.keypair import Keypair

from meshkit.server import App
from tests.nft.integration.support import (
    CONTACT,
    derivation_of,
    mint_request,
    outbox_events,
    wait_job,
)
from tickettoken.nft.v1 import events_pb2, nft_pb2


async def test_no_owner_wallet_mints_to_the_buyers_custodial_wallet(
    nft_app: App, stub: Any, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    own = str(Keypair().pubkey())
    first = mint_request(count=2, contact=CONTACT)  # buyer-1, no wallet
    first.tickets[1].owner_wallet = own  # a wallet given for one ticket: that one goes there
    again = mint_request(count=1)  # buyer-1's next purchase
    other = mint_request(count=1)
    other.buyer_id = "buyer-2"
    jobs = []
    for request in (first, again, other):
        reply = await stub.MintTickets(request, metadata=payment_md)
        jobs.append(await wait_job(stub, payment_md, reply.job.id))
    assert all(j.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED for j in jobs)

    derivation = derivation_of(nft_app)
    buyer1 = str(derivation.custodial_address("buyer-1"))
    buyer2 = str(derivation.custodial_address("buyer-2"))
    assert buyer1 != buyer2
    (custodial, given), (later,), (theirs,) = (j.results for j in jobs)
    assert (custodial.owner_wallet, custodial.custodial) == (buyer1, True)
    assert (given.owner_wallet, given.custodial) == (own, False)
    assert (later.owner_wallet, later.custodial) == (buyer1, True)  # same buyer, same wallet
    assert (theirs.owner_wallet, theirs.custodial) == (buyer2, True)

    # The chain says the custodial wallet holds each of its tickets.
    for result, wallet in ((custodial, buyer1), (later, buyer1), (theirs, buyer2)):
        answer = await stub.VerifyOwnership(
            nft_pb2.VerifyOwnershipRequest(ticket_id=result.ticket_id, wallet=wallet),
            metadata=admin_md,
        )
        assert answer.owned and answer.holder_wallet == wallet
    not_theirs = await stub.VerifyOwnership(
        nft_pb2.VerifyOwnershipRequest(ticket_id=custodial.ticket_id, wallet=buyer2),
        metadata=admin_md,
    )
    assert not not_theirs.owned and not_theirs.holder_wallet == buyer1

    # TicketMinted tells notify it is custodial (and where it is held).
    minted = {
        e.ticket_id: e for e in await outbox_events(postgres_url, nft_app, events_pb2.TicketMinted)
    }
    assert (minted[custodial.ticket_id].owner_wallet, minted[custodial.ticket_id].custodial) == (
        buyer1,
        True,
    )
    assert minted[given.ticket_id].custodial is False
