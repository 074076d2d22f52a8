"""Background work of the payment service: the reconciliation job (one replica at a time) and,
in dev/test only, registering the webhook endpoint with localstripe at start."""
