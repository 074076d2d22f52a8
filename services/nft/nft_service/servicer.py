"""NftService servicer: proto in, core call, proto out — nothing else.

Mutating RPCs are `@idempotent` (key = `request.idempotency_key`, per caller and RPC).
Buyers only see their own tickets: listing and reading are scoped to the caller's subject unless
the caller is an admin, a venue admin or another service.
"""

from __future__ import annotations

from typing import Any

import grpc

from meshkit.context import current_call
from meshkit.errors import NotFound, PermissionDenied
from meshkit.idempotency import idempotent
from meshkit.server import Kit
from nft_service import convert, store
from nft_service.core import NftCore, OwnershipAnswer
from nft_service.domain.model import NftStatus
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc


def _buyer_scope() -> str | None:
    """The subject a buyer-only caller is limited to, or None for privileged callers."""
    call = current_call()
    if call is None:
        return None
    principal = call.principal
    if principal.is_service or principal.has_role("admin", "venue_admin"):
        return None
    return principal.subject


class NftServicer(nft_pb2_grpc.NftServiceServicer):
    """Thin adapter between the NftService contract and `NftCore`."""

    def __init__(self, kit: Kit, core: NftCore) -> None:
        self.kit = kit
        self.core = core

    @idempotent
    async def MintTickets(
        self, request: nft_pb2.MintTicketsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nft_pb2.MintTicketsResponse:
        job, tickets = await self.core.enqueue(convert.mint_request(request))
        return nft_pb2.MintTicketsResponse(job=convert.mint_job(job, tickets))

    async def GetMintJob(
        self, request: nft_pb2.GetMintJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nft_pb2.GetMintJobResponse:
        job, tickets = await self.core.job(job_id=request.job_id, payment_id=request.payment_id)
        return nft_pb2.GetMintJobResponse(job=convert.mint_job(job, tickets))

    async def GetTicketNft(
        self, request: nft_pb2.GetTicketNftRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nft_pb2.GetTicketNftResponse:
        row = await self.core.ticket(
            ticket_id=request.ticket_id, mint_address_=request.mint_address
        )
        scope = _buyer_scope()
        if scope is not None and row["buyer_id"] != scope:
            # NOT_FOUND rather than PERMISSION_DENIED: do not confirm that the ticket exists.
            raise NotFound("no such ticket NFT", reason="TICKET_NOT_FOUND")
        response = nft_pb2.GetTicketNftResponse(nft=convert.ticket_nft(row))
        if request.verify_on_chain:
            view = await self.core.chain_view(row)
            response.on_chain.CopyFrom(
                nft_pb2.OnChainState(
                    exists=view.exists,
                    holder_wallet=view.holder_wallet,
                    supply=view.supply,
                    decimals=view.decimals,
                    frozen=view.frozen,
                    has_mint_authority=view.has_mint_authority,
                    matches_record=self.core.matches_record(row, view),
                    slot=view.slot,
                    checked_at=convert.ts(view.checked_at),
                )
            )
        return response

    async def ListTicketNfts(
        self, request: nft_pb2.ListTicketNftsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nft_pb2.ListTicketNftsResponse:
        buyer_id = request.buyer_id
        scope = _buyer_scope()
        if scope is not None:
            if buyer_id and buyer_id != scope:
                raise PermissionDenied(
                    "buyers can only list their own tickets", reason="NOT_YOUR_TICKETS"
                )
            buyer_id = scope
        statuses = tuple(
            nft_pb2.TicketNftStatus.Name(s).removeprefix("TICKET_NFT_STATUS_")
            for s in request.statuses
            if s in nft_pb2.TicketNftStatus.values() and s != 0
        )
        filt = store.ListFilter(
            owner_wallet=request.owner_wallet,
            buyer_id=buyer_id,
            event_id=request.event_id,
            payment_id=request.payment_id,
            statuses=tuple(s for s in statuses if s in NftStatus.__members__),
        )
        rows, token = await self.core.list_tickets(
            filt, page_size=request.page_size, page_token=request.page_token
        )
        return nft_pb2.ListTicketNftsResponse(
            nfts=[convert.ticket_nft(r) for r in rows], next_page_token=token
        )

    @idempotent
    async def TransferTicket(
        self, request: nft_pb2.TransferTicketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nft_pb2.TransferTicketResponse:
        row, from_wallet, signature = await self.core.transfer(
            ticket_id=request.ticket_id,
            to_wallet=request.to_wallet,
            to_user_id=request.to_user_id,
            reason=request.reason,
            reference_id=request.reference_id,
            note=request.note,
        )
        return nft_pb2.TransferTicketResponse(
            nft=convert.ticket_nft(row), from_wallet=from_wallet, signature=signature
        )

    @idempotent
    async def RevokeTicket(
        self, request: nft_pb2.RevokeTicketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nft_pb2.RevokeTicketResponse:
        row, signature = await self.core.revoke(
            ticket_id=request.ticket_id,
            reason=request.reason,
            note=request.note,
            method=request.method,
            reference_id=request.reference_id,
        )
        return nft_pb2.RevokeTicketResponse(nft=convert.ticket_nft(row), signature=signature)

    async def VerifyOwnership(
        self, request: nft_pb2.VerifyOwnershipRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nft_pb2.VerifyOwnershipResponse:
        answer: OwnershipAnswer = await self.core.verify_ownership(
            ticket_id=request.ticket_id,
            mint_address_=request.mint_address,
            wallet=request.wallet,
        )
        status = nft_pb2.OwnershipStatus.Value(f"OWNERSHIP_STATUS_{answer.status.value}")
        return nft_pb2.VerifyOwnershipResponse(
            owned=status == nft_pb2.OWNERSHIP_STATUS_OWNED,
            status=status,
            ticket_id=answer.ticket_id,
            mint_address=answer.mint_address,
            holder_wallet=answer.holder_wallet,
            slot=answer.slot,
            checked_at=convert.ts(answer.checked_at),
        )

    async def GetMintingWallet(
        self, request: nft_pb2.GetMintingWalletRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nft_pb2.GetMintingWalletResponse:
        info = await self.core.wallet()
        return nft_pb2.GetMintingWalletResponse(
            address=info.address,
            balance_lamports=info.balance,
            low_balance_threshold_lamports=info.threshold,
            low_balance=info.low,
            lamports_per_mint=info.lamports_per_mint,
            estimated_mints_remaining=info.balance // max(1, info.lamports_per_mint),
            cluster=info.cluster,
            slot=info.slot,
            checked_at=convert.ts(info.checked_at),
        )
