"""Revocation in the domain, without I/O: which way a revocation takes by where the ticket's mint
stands, the CANCELLED state in the mint state machine and in a job's status, and the gate's
answer for a ticket revoked before it was minted."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from nft_service.domain.model import (
    Ownership,
    Priority,
    RevocationMethod,
    RevokeReason,
    TicketNft,
)
from nft_service.domain.onchain import presented_ownership
from nft_service.domain.revocation import RevocationPath, revocation_path
from nft_service.domain.states import (
    JobStatus,
    MintState,
    NftStatus,
    can_move,
    job_status,
    sources,
)

NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)


def _ticket(**changes: object) -> TicketNft:
    ticket = TicketNft(
        ticket_id="t-1",
        job_id=uuid.uuid4(),
        position=0,
        payment_id="pay-1",
        order_id="order-1",
        event_id="event-1",
        venue_id="venue-1",
        buyer_id="buyer-1",
        mint_address="mint",
        mint_seed="seed",
        token_program="token",
        owner_wallet="wallet",
        custodial=True,
        event_name="The Band",
        venue_name="Hall",
        event_starts_at=None,
        section="",
        row="",
        seat="",
        ticket_type="GA",
        image_url="",
        attributes={},
        metadata_sha="sha",
        metadata_uri="uri",
        token_name="",
        token_symbol="",
        status=NftStatus.PENDING,
        mint_state=MintState.QUEUED,
        priority=Priority.STANDARD,
        attempts=0,
        picked_at=None,
        signature="",
        signatures=(),
        cost_lamports=None,
        mint_size=None,
        error_code="",
        error_message="",
        minted_at=None,
        minted_slot=None,
        revoke_reason=None,
        revocation_method=None,
        revoke_note="",
        revoke_reference="",
        revoke_signature="",
        revoked_at=None,
        revoke_requested_at=None,
        created_at=NOW,
        updated_at=NOW,
    )
    return replace(ticket, **changes)  # type: ignore[arg-type]


SENT = {"signatures": ("sig-1",), "signature": "sig-1", "attempts": 1}


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({}, RevocationPath.CANCEL),
        ({"mint_state": MintState.RETRYING}, RevocationPath.CANCEL),  # chain down before a send
        ({"mint_state": MintState.SUBMITTED, **SENT}, RevocationPath.AFTER_MINT),
        ({"mint_state": MintState.RETRYING, **SENT}, RevocationPath.AFTER_MINT),
        # An operator's requeue resets the attempts, not the signatures: it may be on chain.
        ({"mint_state": MintState.RETRYING, "signatures": ("s",)}, RevocationPath.AFTER_MINT),
        (
            {"mint_state": MintState.MINTED, "status": NftStatus.ACTIVE, **SENT},
            RevocationPath.ON_CHAIN,
        ),
        ({"mint_state": MintState.DEAD_LETTERED, **SENT}, RevocationPath.SETTLE),
        ({"mint_state": MintState.FAILED, **SENT}, RevocationPath.SETTLE),
        (
            {"mint_state": MintState.SUBMITTED, "revoke_requested_at": NOW, **SENT},
            RevocationPath.PENDING,
        ),
        (
            {"mint_state": MintState.CANCELLED, "status": NftStatus.REVOKED, "revoked_at": NOW},
            RevocationPath.ALREADY,
        ),
        (
            {
                "mint_state": MintState.MINTED,
                "status": NftStatus.REVOKED,
                "revoke_requested_at": NOW,
                **SENT,
            },
            RevocationPath.ALREADY,
        ),
    ],
)
def test_revocation_path(changes: dict[str, object], path: RevocationPath) -> None:
    assert revocation_path(_ticket(**changes)) is path


def test_pending_means_accepted_and_not_applied() -> None:
    accepted = _ticket(
        mint_state=MintState.SUBMITTED,
        revoke_requested_at=NOW,
        revoke_reason=RevokeReason.REFUND,
        revocation_method=RevocationMethod.BURN,
        **SENT,  # type: ignore[arg-type]
    )
    assert accepted.revocation_pending and accepted.may_be_on_chain
    done = replace(accepted, status=NftStatus.REVOKED, mint_state=MintState.MINTED)
    assert not done.revocation_pending
    assert not _ticket().revocation_pending and _ticket().never_sent
    # Requeued by an operator (attempts reset): signatures say the chain must be read first.
    assert _ticket(mint_state=MintState.RETRYING, signatures=("s",)).may_be_on_chain


def test_cancelled_is_final_and_reached_only_from_unminted_states() -> None:
    assert MintState.CANCELLED.final and not MintState.CANCELLED.failed
    assert set(sources(MintState.CANCELLED)) == {
        MintState.QUEUED,
        MintState.RETRYING,
        MintState.FAILED,
        MintState.DEAD_LETTERED,
    }
    assert not can_move(MintState.SUBMITTED, MintState.CANCELLED)  # a send may land
    assert not can_move(MintState.MINTED, MintState.CANCELLED)
    assert not any(can_move(MintState.CANCELLED, s) for s in MintState)


def test_job_status_leaves_cancelled_tickets_out() -> None:
    c, m, f, q = MintState.CANCELLED, MintState.MINTED, MintState.FAILED, MintState.QUEUED
    assert job_status([c, c], touched=False) is JobStatus.CANCELLED
    assert job_status([c, m], touched=True) is JobStatus.SUCCEEDED
    assert job_status([c, f], touched=True) is JobStatus.FAILED
    assert job_status([c, m, f], touched=True) is JobStatus.PARTIALLY_FAILED
    assert job_status([c, q], touched=False) is JobStatus.QUEUED


def test_a_ticket_revoked_before_its_mint_is_revoked_at_the_gate() -> None:
    assert presented_ownership(None, None, record_revoked=True) is Ownership.REVOKED
    assert presented_ownership(None, None, record_revoked=False) is Ownership.NOT_MINTED
