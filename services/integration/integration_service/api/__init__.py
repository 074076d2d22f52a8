"""The integration service's gRPC surface: the servicer (proto ⇄ domain)."""
