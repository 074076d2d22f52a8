"""Who may call each NotifyService RPC. Methods missing here are denied (checked at start)."""

from __future__ import annotations

from meshkit.auth import Policy, allow

POLICY: Policy = {
    "SendNotification": allow("admin", services=["payment", "nft", "integration"]),
    "GetNotification": allow("buyer", "admin", services=["payment", "nft", "integration"]),
    "ListNotifications": allow("buyer", "admin"),
    "UpsertTemplate": allow("admin"),
    "GetTemplate": allow("venue_admin", "admin"),
    "RenderTemplate": allow("venue_admin", "admin"),
    "SetPreferences": allow("buyer", "admin"),
    "GetPreferences": allow("buyer", "admin", services=["payment", "nft"]),
    "HandleProviderWebhook": allow("admin"),
}
