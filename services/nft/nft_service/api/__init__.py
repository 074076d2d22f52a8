"""The NftService contract's side of the service: the servicer (proto ⇄ domain only), the
conversions, row-level access rules and the error map the kit applies to domain errors."""
