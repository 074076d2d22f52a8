"""Contract messages ⇄ domain types: the only place that knows both nft.proto's shapes and the
domain's entities (the servicer uses it for requests and responses)."""

from __future__ import annotations

from typing import Any, cast

from meshkit.convert import optional_timestamp as ts
from meshkit.convert import to_datetime
from nft_service.domain.metadata import MetadataVerdict
from nft_service.domain.model import (
    BuyerContact,
    JobView,
    ListFilter,
    MintRequest,
    OwnershipAnswer,
    Priority,
    RevocationMethod,
    RevokeReason,
    TicketNft,
    TicketSpec,
    TransferReason,
    WalletInfo,
)
from nft_service.domain.onchain import TicketOnChain, matches_record
from nft_service.domain.states import MintState, NftStatus
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import nft_pb2

_METHODS = {
    RevocationMethod.BURN: nft_pb2.REVOCATION_METHOD_BURN,
    RevocationMethod.FREEZE: nft_pb2.REVOCATION_METHOD_FREEZE,
}
_METHOD_OF: dict[int, RevocationMethod] = {int(n): method for method, n in _METHODS.items()}


# -- requests -----------------------------------------------------------------------------------


def contact(message: common_pb2.ContactInfo) -> BuyerContact:
    """Every set field, by name: new ContactInfo fields are carried without a change here."""
    return BuyerContact({f.name: str(value) for f, value in message.ListFields()})


def ticket_spec(t: nft_pb2.TicketToMint) -> TicketSpec:
    return TicketSpec(
        ticket_id=t.ticket_id,
        owner_wallet=t.owner_wallet,
        event_name=t.event_name,
        venue_name=t.venue_name,
        event_starts_at=(to_datetime(t, "event_starts_at")),
        section=t.section,
        row=t.row,
        seat=t.seat,
        ticket_type=t.ticket_type,
        image_url=t.image_url,
        attributes=dict(t.attributes),
        name=t.name,
    )


def mint_request(request: nft_pb2.MintTicketsRequest) -> MintRequest:
    return MintRequest(
        payment_id=request.payment_id,
        order_id=request.order_id,
        event_id=request.event_id,
        venue_id=request.venue_id,
        buyer_id=request.buyer_id,
        priority=Priority(request.priority or Priority.STANDARD),
        tickets=tuple(ticket_spec(t) for t in request.tickets),
        buyer_contact=contact(request.buyer_contact),
    )


def list_filter(request: nft_pb2.ListTicketNftsRequest, buyer_id: str) -> ListFilter:
    return ListFilter(
        owner_wallet=request.owner_wallet,
        buyer_id=buyer_id,
        event_id=request.event_id,
        payment_id=request.payment_id,
        statuses=tuple(
            dict.fromkeys(
                NftStatus(nft_pb2.TicketNftStatus.Name(s).removeprefix("TICKET_NFT_STATUS_"))
                for s in request.statuses
                if s != nft_pb2.TICKET_NFT_STATUS_UNSPECIFIED
            )
        ),
    )


def revocation_method(number: int) -> RevocationMethod | None:
    """The requested method; None (UNSPECIFIED): the service's default."""
    return _METHOD_OF.get(number)


def transfer_reason(number: int) -> TransferReason:
    return TransferReason(number)


def revoke_reason(number: int) -> RevokeReason:
    return RevokeReason(number)


# -- responses ----------------------------------------------------------------------------------


def ticket_nft(ticket: TicketNft) -> nft_pb2.TicketNft:
    method = ticket.revocation_method
    minted = ticket.mint_state is MintState.MINTED
    return nft_pb2.TicketNft(
        ticket_id=ticket.ticket_id,
        mint_address=ticket.mint_address,
        owner_wallet=ticket.owner_wallet,
        custodial=ticket.custodial,
        status=nft_pb2.TicketNftStatus.Value(f"TICKET_NFT_STATUS_{ticket.status.value}"),
        payment_id=ticket.payment_id,
        order_id=ticket.order_id,
        event_id=ticket.event_id,
        venue_id=ticket.venue_id,
        buyer_id=ticket.buyer_id,
        event_name=ticket.event_name,
        venue_name=ticket.venue_name,
        event_starts_at=ts(ticket.event_starts_at),
        section=ticket.section,
        row=ticket.row,
        seat=ticket.seat,
        ticket_type=ticket.ticket_type,
        metadata_uri=ticket.metadata_uri,
        mint_signature=ticket.mint_signature,
        token_program=ticket.token_program,
        minted_at=ts(ticket.minted_at),
        revoke_reason=cast(Any, int(ticket.revoke_reason or 0)),
        revocation_method=cast(Any, _METHODS[method] if method is not None else 0),
        revoked_at=ts(ticket.revoked_at),
        updated_at=ts(ticket.updated_at),
        name=ticket.token_name,
        cost_lamports=(ticket.cost_lamports or 0) if minted else 0,
        mint_account_size=(ticket.mint_size or 0) if minted else 0,
        revocation_pending=ticket.revocation_pending,
    )


def mint_result(ticket: TicketNft) -> nft_pb2.TicketMintResult:
    return nft_pb2.TicketMintResult(
        ticket_id=ticket.ticket_id,
        mint_address=ticket.mint_address,
        owner_wallet=ticket.owner_wallet,
        custodial=ticket.custodial,
        state=nft_pb2.MintState.Value(f"MINT_STATE_{ticket.mint_state.value}"),
        signature=ticket.signature,
        metadata_uri=ticket.metadata_uri,
        attempts=ticket.attempts,
        error_code=ticket.error_code,
        error_message=ticket.error_message,
        minted_at=ts(ticket.minted_at),
    )


def mint_job(view: JobView) -> nft_pb2.MintJob:
    """The job with every ticket; its status is derived from all of them."""
    job = view.job
    return nft_pb2.MintJob(
        id=str(job.id),
        status=nft_pb2.MintJobStatus.Value(f"MINT_JOB_STATUS_{view.status.value}"),
        priority=cast(Any, int(job.priority)),
        payment_id=job.payment_id,
        order_id=job.order_id,
        event_id=job.event_id,
        venue_id=job.venue_id,
        buyer_id=job.buyer_id,
        results=[mint_result(t) for t in view.tickets],
        created_at=ts(job.created_at),
        updated_at=ts(view.updated_at),
        completed_at=ts(view.completed_at),
    )


def on_chain(ticket: TicketNft, view: TicketOnChain) -> nft_pb2.OnChainState:
    return nft_pb2.OnChainState(
        exists=view.exists,
        holder_wallet=view.holder_wallet,
        supply=view.supply,
        decimals=view.decimals,
        frozen=view.frozen,
        has_mint_authority=view.has_mint_authority,
        matches_record=matches_record(ticket, view),
        slot=view.slot,
        checked_at=ts(view.checked_at),
    )


def metadata_verification(verdict: MetadataVerdict) -> nft_pb2.MetadataVerification:
    return nft_pb2.MetadataVerification(
        check=nft_pb2.MetadataCheck.Value(f"METADATA_CHECK_{verdict.check.value}"),
        uri=verdict.uri,
        expected_address=verdict.expected_address,
        computed_address=verdict.computed_address,
        detail=verdict.detail,
        checked_at=ts(verdict.checked_at),
    )


def ownership(answer: OwnershipAnswer) -> nft_pb2.VerifyOwnershipResponse:
    return nft_pb2.VerifyOwnershipResponse(
        owned=answer.owned,
        status=nft_pb2.OwnershipStatus.Value(f"OWNERSHIP_STATUS_{answer.status.value}"),
        ticket_id=answer.ticket_id,
        mint_address=answer.mint_address,
        holder_wallet=answer.holder_wallet,
        slot=answer.slot,
        checked_at=ts(answer.checked_at),
        metadata=metadata_verification(answer.metadata) if answer.metadata else None,
    )


def wallet(info: WalletInfo) -> nft_pb2.GetMintingWalletResponse:
    return nft_pb2.GetMintingWalletResponse(
        address=info.address,
        balance_lamports=info.balance,
        low_balance_threshold_lamports=info.threshold,
        low_balance=info.low,
        lamports_per_mint=info.lamports_per_mint,
        estimated_mints_remaining=info.mints_remaining,
        cluster=info.cluster,
        slot=info.slot,
        checked_at=ts(info.checked_at),
    )
