"""The nft domain without I/O: retry decisions, the state machines, job status, metadata, the
request rules, and ownership as read from the chain."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from nft_service.domain.errors import Violation
from nft_service.domain.metadata import canonical, metadata_json, onchain_metadata
from nft_service.domain.model import (
    BuyerContact,
    JobView,
    ListFilter,
    MintJob,
    MintRequest,
    Ownership,
    Priority,
    TicketSpec,
)
from nft_service.domain.onchain import Holding, holder_ownership, presented_ownership
from nft_service.domain.retry import ErrorKind, RetryPolicy, decide, not_sent
from nft_service.domain.rules import destination_violations, list_violations, mint_violations
from nft_service.domain.states import JobStatus, MintState, can_move, job_status, sources

POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0)


@pytest.mark.parametrize(
    ("kind", "attempts", "state", "immediate"),
    [
        (ErrorKind.INSUFFICIENT_FUNDS, 1, MintState.FAILED, True),
        (ErrorKind.PROGRAM_ERROR, 1, MintState.FAILED, True),
        (ErrorKind.ACCOUNT_IN_USE, 1, MintState.FAILED, True),
        (ErrorKind.BLOCKHASH_EXPIRED, 1, MintState.RETRYING, True),
        (ErrorKind.RATE_LIMITED, 1, MintState.RETRYING, False),
        (ErrorKind.NODE_BEHIND, 2, MintState.RETRYING, False),
        (ErrorKind.UNAVAILABLE, 3, MintState.RETRYING, False),
        (ErrorKind.CONFIRM_TIMEOUT, 4, MintState.DEAD_LETTERED, True),
        (ErrorKind.BLOCKHASH_EXPIRED, 4, MintState.DEAD_LETTERED, True),
    ],
)
def test_retry_decisions(kind: ErrorKind, attempts: int, state: MintState, immediate: bool) -> None:
    decision = decide(kind, attempts, POLICY, rng=random.Random(1))
    assert decision.state is state
    assert (decision.delay == 0) is immediate


def test_backoff_is_capped_and_honours_retry_after() -> None:
    rng = random.Random(7)
    delays = [POLICY.backoff(n, rng) for n in range(1, 10)]
    assert all(0 < d <= 8.0 for d in delays)
    assert decide(ErrorKind.RATE_LIMITED, 1, POLICY, retry_after=30.0).delay == 30.0


def test_job_status_follows_its_tickets() -> None:
    m, f, q, d = MintState.MINTED, MintState.FAILED, MintState.QUEUED, MintState.DEAD_LETTERED
    assert job_status([q, q], touched=False) is JobStatus.QUEUED
    assert job_status([m, q], touched=True) is JobStatus.RUNNING
    assert job_status([m, m], touched=True) is JobStatus.SUCCEEDED
    assert job_status([m, f], touched=True) is JobStatus.PARTIALLY_FAILED
    assert job_status([d, f], touched=True) is JobStatus.FAILED


def _spec(**changes: object) -> TicketSpec:
    values: dict[str, object] = {
        "ticket_id": "t1",
        "owner_wallet": "",
        "event_name": "The Band",
        "venue_name": "Hall",
        "event_starts_at": datetime(2026, 5, 1, 20, tzinfo=UTC),
        "section": "A",
        "row": "1",
        "seat": "2",
        "ticket_type": "VIP",
        "image_url": "https://img.example/a.png",
    }
    values.update(changes)
    return TicketSpec(**values)  # type: ignore[arg-type]


def test_metadata_is_canonical_and_metaplex_shaped() -> None:
    def sha_body(spec: TicketSpec) -> tuple[str, bytes]:
        return canonical(
            metadata_json(spec, name="BAND 1-2", symbol="TIX", event_id="e1", mint_address="M")
        )

    sha, body = sha_body(_spec())
    assert (sha, body) == sha_body(_spec())
    document = json.loads(body)
    assert document["properties"]["files"][0]["type"] == "image/png"
    assert sha_body(_spec(seat="3"))[0] != sha
    onchain = onchain_metadata(name="BAND 1-2", symbol="TIX", uri="u")
    assert onchain.fields == ()  # the facts are in the JSON only


def _request(*specs: TicketSpec) -> MintRequest:
    return MintRequest("p", "o", "e", "v", "b", Priority.STANDARD, specs)


def _check(
    request: MintRequest,
    *,
    max_batch: int = 10,
    is_address: Callable[[str], bool] = lambda _: True,
    size: int = 100,
) -> list[Violation]:
    return mint_violations(
        request,
        max_batch=max_batch,
        is_address=is_address,
        transaction_size=lambda _: size,
        max_transaction_size=1232,
    )


def test_mint_rules_name_the_field_of_every_problem() -> None:
    request = _request(
        _spec(ticket_id="a"), _spec(ticket_id="b", owner_wallet="short"), _spec(ticket_id="a")
    )
    found = _check(request, is_address=lambda w: w != "short")
    assert [(v.field, v.description) for v in found] == [
        ("tickets[1].owner_wallet", "not a base58 Solana address (32 bytes)"),
        ("tickets[2].ticket_id", "duplicate"),
    ]
    assert [v.field for v in _check(_request(*[_spec()] * 3), max_batch=2)] == ["tickets"]
    too_big = _check(_request(_spec()), size=1233)
    assert too_big[0].field == "tickets[0]" and "one Solana transaction" in too_big[0].description


def test_transfer_and_list_rules() -> None:
    def ok(_: str) -> bool:
        return True

    assert destination_violations("", "", is_address=ok)[0].field == "to_wallet"
    assert destination_violations("", "buyer-2", is_address=ok) == []
    assert destination_violations("w", "", is_address=lambda _: False)[0].field == "to_wallet"
    assert list_violations(ListFilter())[0].field == "owner_wallet"
    assert list_violations(ListFilter(payment_id="p")) == []


def test_mint_state_machine() -> None:
    assert can_move(MintState.QUEUED, MintState.SUBMITTED)
    assert not can_move(MintState.MINTED, MintState.RETRYING)  # minted is forever
    assert not can_move(MintState.QUEUED, MintState.MINTED)  # nothing lands unsent
    assert can_move(MintState.DEAD_LETTERED, MintState.RETRYING)  # the operator's requeue
    assert set(sources(MintState.MINTED)) == {MintState.SUBMITTED, MintState.RETRYING}
    assert MintState.MINTED not in sources(MintState.FAILED)
    rng = random.Random(3)
    assert not_sent(MintState.SUBMITTED, 2, POLICY, rng=rng).state is MintState.SUBMITTED
    later = not_sent(MintState.QUEUED, 0, POLICY, retry_after=9.0, rng=rng)
    assert later.state is MintState.RETRYING and later.delay == 9.0


def test_job_view_derives_status_and_completion() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    job = MintJob(
        uuid.uuid4(), "p", "o", "e", "v", "b", Priority.HIGH, b"", BuyerContact(), now, now
    )
    assert JobView(job, ()).status is JobStatus.QUEUED
    assert JobView(job, ()).completed_at is None


def test_ownership_is_decided_from_the_chain() -> None:
    mine = Holding("acct", "wallet", 1, False)
    assert presented_ownership(None, mine, record_revoked=False) is Ownership.NOT_MINTED
    assert presented_ownership(0, mine, record_revoked=False) is Ownership.REVOKED
    assert presented_ownership(1, mine, record_revoked=False) is Ownership.OWNED
    assert presented_ownership(1, mine, record_revoked=True) is Ownership.REVOKED
    frozen = Holding("acct", "wallet", 1, True)
    assert presented_ownership(1, frozen, record_revoked=False) is Ownership.REVOKED
    assert presented_ownership(1, None, record_revoked=False) is None  # ask who holds it
    assert holder_ownership(Holding("x", "other", 1, False)) is Ownership.NOT_OWNER
    assert holder_ownership(Holding("x", "other", 1, True)) is Ownership.REVOKED
    assert holder_ownership(None) is Ownership.NOT_OWNER
