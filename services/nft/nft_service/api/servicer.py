"""NftService servicer: contract message in, use case call, contract message out — nothing else.

The kit has already authenticated the caller, checked the policy table and the contract's input
rules before any method runs; mutating RPCs are `@idempotent` (key = `request.idempotency_key`,
per caller and RPC); domain errors become statuses through `api/errors.py`. Row-level rules
(buyers see only their own tickets) are in `api/access.py`.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from meshkit.idempotency import idempotent
from meshkit.paging import Page
from nft_service.api import access, convert
from nft_service.domain.model import TicketNft
from nft_service.usecases.custody import Custody
from nft_service.usecases.minting import Minting
from nft_service.usecases.tickets import Tickets
from nft_service.usecases.wallet import Wallet
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _after(ticket: TicketNft) -> tuple[str]:
    return (ticket.ticket_id,)


class NftServicer(nft_pb2_grpc.NftServiceServicer):
    def __init__(
        self, *, minting: Minting, tickets: Tickets, custody: Custody, wallet: Wallet
    ) -> None:
        self.minting = minting
        self.tickets = tickets
        self.custody = custody
        self.wallet = wallet

    @idempotent
    async def MintTickets(
        self, request: nft_pb2.MintTicketsRequest, context: Context
    ) -> nft_pb2.MintTicketsResponse:
        view = await self.minting.mint_tickets(convert.mint_request(request))
        return nft_pb2.MintTicketsResponse(job=convert.mint_job(view))

    async def GetMintJob(
        self, request: nft_pb2.GetMintJobRequest, context: Context
    ) -> nft_pb2.GetMintJobResponse:
        if request.WhichOneof("lookup") == "job_id":
            view = await self.minting.job(job_id=uuid.UUID(request.job_id))
        else:
            view = await self.minting.job(payment_id=request.payment_id)
        return nft_pb2.GetMintJobResponse(job=convert.mint_job(view))

    async def GetTicketNft(
        self, request: nft_pb2.GetTicketNftRequest, context: Context
    ) -> nft_pb2.GetTicketNftResponse:
        ticket = await self.tickets.get(
            ticket_id=request.ticket_id, mint_address=request.mint_address
        )
        access.check_visible(ticket)
        response = nft_pb2.GetTicketNftResponse(nft=convert.ticket_nft(ticket))
        view = None
        if request.verify_on_chain:
            view = await self.tickets.on_chain(ticket)
            response.on_chain.CopyFrom(convert.on_chain(ticket, view))
        if request.verify_metadata:
            verdict = await self.tickets.check_metadata(ticket, view)
            response.metadata.CopyFrom(convert.metadata_verification(verdict))
        return response

    async def ListTicketNfts(
        self, request: nft_pb2.ListTicketNftsRequest, context: Context
    ) -> nft_pb2.ListTicketNftsResponse:
        page: Page[TicketNft] = Page.of(request)
        filt = convert.list_filter(request, access.listed_buyer(request.buyer_id))
        after = str(page.after[0]) if page.after else None
        found = await self.tickets.page(filt, after=after, limit=page.size + 1)
        items, token = page.cut(found, key=_after)
        return nft_pb2.ListTicketNftsResponse(
            nfts=[convert.ticket_nft(t) for t in items], next_page_token=token
        )

    @idempotent
    async def TransferTicket(
        self, request: nft_pb2.TransferTicketRequest, context: Context
    ) -> nft_pb2.TransferTicketResponse:
        moved = await self.custody.transfer(
            ticket_id=request.ticket_id,
            to_wallet=request.to_wallet,
            to_user_id=request.to_user_id,
            reason=convert.transfer_reason(request.reason),
            reference_id=request.reference_id,
            note=request.note,
        )
        return nft_pb2.TransferTicketResponse(
            nft=convert.ticket_nft(moved.ticket),
            from_wallet=moved.from_wallet,
            signature=moved.signature,
        )

    @idempotent
    async def RevokeTicket(
        self, request: nft_pb2.RevokeTicketRequest, context: Context
    ) -> nft_pb2.RevokeTicketResponse:
        revoked = await self.custody.revoke(
            ticket_id=request.ticket_id,
            reason=convert.revoke_reason(request.reason),
            method=convert.revocation_method(request.method),
            reference_id=request.reference_id,
            note=request.note,
        )
        return nft_pb2.RevokeTicketResponse(
            nft=convert.ticket_nft(revoked.ticket), signature=revoked.signature
        )

    async def VerifyOwnership(
        self, request: nft_pb2.VerifyOwnershipRequest, context: Context
    ) -> nft_pb2.VerifyOwnershipResponse:
        answer = await self.tickets.verify_ownership(
            ticket_id=request.ticket_id,
            mint_address=request.mint_address,
            wallet=request.wallet,
            verify_metadata=request.verify_metadata,
        )
        return convert.ownership(answer)

    async def GetMintingWallet(
        self, request: nft_pb2.GetMintingWalletRequest, context: Context
    ) -> nft_pb2.GetMintingWalletResponse:
        return convert.wallet(await self.wallet.read())
