"""Who may call each PaymentService RPC. Methods missing here are denied (checked at start).

Object-level rules (a buyer's own payments, a venue admin's own venues) are in access.py.
"""

from __future__ import annotations

from meshkit.auth import Policy, allow

POLICY: Policy = {
    "CalculateFees": allow("buyer", "venue_admin", "admin", services=["payment"]),
    "CreatePayment": allow("buyer", "admin"),
    "GetPayment": allow("buyer", "venue_admin", "admin", services=["nft", "notify"]),
    "ListPayments": allow("buyer", "venue_admin", "admin"),
    "RefundPayment": allow("buyer", "venue_admin", "admin"),
    "CancelPayment": allow("buyer", "admin"),
    "HandleProviderWebhook": allow("admin", services=["integration"]),
    "GetVenueBalance": allow("venue_admin", "admin"),
    "RequestPayout": allow("venue_admin", "admin"),
    "ReconcilePayments": allow("admin"),
}
