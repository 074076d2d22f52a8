"""Who may call each NftService RPC. Methods missing here are denied (checked at start)."""

from __future__ import annotations

from meshkit.auth import Policy, allow

POLICY: Policy = {
    "MintTickets": allow("admin", services=["payment"]),
    "GetMintJob": allow("admin", services=["payment"]),
    "GetTicketNft": allow("buyer", "venue_admin", "admin", services=["payment", "notify"]),
    "ListTicketNfts": allow("buyer", "venue_admin", "admin"),
    "TransferTicket": allow("admin", services=["payment"]),
    "RevokeTicket": allow("admin", services=["payment"]),
    "VerifyOwnership": allow("buyer", "venue_admin", "admin", services=["payment"]),
    "GetMintingWallet": allow("admin"),
}
