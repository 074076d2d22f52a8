"""Background work of the integration service (periodic, one replica at a time)."""
