"""Reading tickets: GetTicketNft (optionally checked against the chain and its metadata document
checked against its uri), ListTicketNfts, VerifyOwnership (the entry gate: the chain is asked,
never our record), and the metadata documents the on-chain uris point to.

The metadata check fetches the document at the ticket's uri over HTTP (adapters/metadata_http:
through the kit's guard) and hashes it: MATCHES when it hashes to the address in the uri,
TAMPERED when it does not (or is larger than any document we issue), UNREACHABLE when nothing
could be fetched (an answer, not an error), NOT_CHECKED when the uri names no content address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from solders.pubkey import Pubkey

from meshkit.db import Database
from nft_service.adapters.chain.token import associated_token_address, is_address
from nft_service.adapters.metadata_http import FetchFailed, MetadataFetcher, TooLarge
from nft_service.domain.errors import TicketNotFound, raise_if
from nft_service.domain.metadata import (
    MetadataCheck,
    MetadataVerdict,
    content_address,
    judge_document,
)
from nft_service.domain.model import ListFilter, OwnershipAnswer, TicketNft
from nft_service.domain.onchain import (
    TicketOnChain,
    holder_ownership,
    presented_ownership,
)
from nft_service.domain.rules import address_violations, list_violations
from nft_service.domain.states import NftStatus
from nft_service.store import metadata, tickets
from nft_service.usecases.onchain import TicketsOnChain, decoded_holding, decoded_mint


class Tickets:
    def __init__(self, *, db: Database, onchain: TicketsOnChain, fetcher: MetadataFetcher) -> None:
        self._db = db
        self.onchain = onchain
        self._fetcher = fetcher

    async def get(self, *, ticket_id: str = "", mint_address: str = "") -> TicketNft:
        """By ticket id, else by mint address (the contract requires one of them)."""
        async with self._db.acquire() as conn:
            if ticket_id:
                found = await tickets.by_id(conn, ticket_id)
            else:
                found = await tickets.by_mint(conn, mint_address)
        if found is None:
            raise TicketNotFound()
        return found

    async def on_chain(self, ticket: TicketNft) -> TicketOnChain:
        return await self.onchain.view(ticket)

    async def page(self, filt: ListFilter, *, after: str | None, limit: int) -> Sequence[TicketNft]:
        """Up to `limit` tickets matching `filt`, by ticket id, after `after`."""
        raise_if(list_violations(filt))
        async with self._db.acquire() as conn:
            return await tickets.page(conn, filt, after=after, limit=limit)

    async def check_metadata(
        self, ticket: TicketNft, view: TicketOnChain | None = None
    ) -> MetadataVerdict:
        """Fetch the ticket's metadata document and check it against its uri: the uri on the
        mint when `view` read one, else our record's (module docstring)."""
        uri = view.uri if view is not None and view.exists and view.uri else ticket.metadata_uri
        return await self._check_uri(uri)

    async def _check_uri(self, uri: str) -> MetadataVerdict:
        """The verdict on the document served at `uri` (module docstring)."""
        now = datetime.now(UTC)
        address = content_address(uri)
        if address is None:
            return MetadataVerdict(
                MetadataCheck.NOT_CHECKED, uri, "", "", "the uri names no content address", now
            )
        try:
            body = await self._fetcher.fetch(uri)
        except TooLarge as exc:
            return MetadataVerdict(
                MetadataCheck.TAMPERED, uri, address.address, "", exc.detail, now
            )
        except FetchFailed as exc:
            return MetadataVerdict(
                MetadataCheck.UNREACHABLE, uri, address.address, "", exc.detail, now
            )
        return judge_document(uri, address, body, datetime.now(UTC))

    async def verify_ownership(
        self, *, ticket_id: str, mint_address: str, wallet: str, verify_metadata: bool = False
    ) -> OwnershipAnswer:
        """Does `wallet` hold the ticket right now, and if not, who does (and, when asked, is
        the metadata document at the uri on the mint the one the uri names)."""
        raise_if(address_violations("wallet", wallet, is_address=is_address))
        ticket = await self.get(ticket_id=ticket_id, mint_address=mint_address)
        mint = Pubkey.from_string(ticket.mint_address)
        presented = associated_token_address(Pubkey.from_string(wallet), mint)
        read = await self.onchain.read([mint, presented])
        mint_account, wallet_account = read.accounts
        now = datetime.now(UTC)
        state = decoded_mint(mint_account)
        status = presented_ownership(
            state.supply if state is not None else None,
            decoded_holding(presented, wallet_account),
            record_revoked=ticket.status is NftStatus.REVOKED,
        )
        holder = wallet
        if status is None:
            other = await self.onchain.holder_of(mint)
            status = holder_ownership(other)
            holder = other.wallet if other is not None else ""
        elif state is None or state.supply == 0:
            holder = ""
        answer = OwnershipAnswer(
            status, ticket.ticket_id, ticket.mint_address, holder, read.slot, now
        )
        if not verify_metadata:
            return answer
        uri = state.uri if state is not None and state.uri else ticket.metadata_uri
        return replace(answer, metadata=await self._check_uri(uri))

    async def metadata_document(self, sha: str) -> bytes | None:
        """The stored document whose sha256 (hex) is `sha`."""
        async with self._db.acquire() as conn:
            return await metadata.body(conn, sha)
