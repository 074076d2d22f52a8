"""Who may call each IntegrationService RPC. Methods missing here are denied (checked at start)."""

from __future__ import annotations

from meshkit.auth import Policy, allow

POLICY: Policy = {
    "ListProviders": allow("venue_admin", "admin"),
    "StartOAuth": allow("venue_admin", "admin"),
    "CompleteOAuth": allow("venue_admin", "admin"),
    "ConnectWithApiKey": allow("venue_admin", "admin"),
    "GetConnection": allow("venue_admin", "admin"),
    "ListConnections": allow("venue_admin", "admin"),
    "TestConnection": allow("venue_admin", "admin"),
    "Disconnect": allow("venue_admin", "admin"),
    "SetFieldMappings": allow("venue_admin", "admin"),
    "GetFieldMappings": allow("venue_admin", "admin"),
    "StartSync": allow("venue_admin", "admin"),
    "GetSyncJob": allow("venue_admin", "admin"),
    "WatchSyncJob": allow("venue_admin", "admin"),
    "CancelSync": allow("venue_admin", "admin"),
    "ListSyncLogs": allow("venue_admin", "admin"),
    "ListDeadLetters": allow("venue_admin", "admin"),
    "RetryDeadLetters": allow("venue_admin", "admin"),
    "HandleProviderWebhook": allow("admin"),
    "IngestCatalog": allow("venue_admin", "admin"),
    "IngestInventory": allow("venue_admin", "admin"),
    "RecordTransaction": allow("admin", services=["payment"]),
    "SetSyncSchedule": allow("venue_admin", "admin"),
    "GetSyncSchedule": allow("venue_admin", "admin"),
}
