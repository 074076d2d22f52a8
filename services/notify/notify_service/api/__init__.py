"""The notify service's gRPC surface: the servicer (proto ⇄ domain)."""
