"""The gRPC face of the payment service: the servicer (proto ⇄ use case), the proto ⇄ domain
mapping, the row-level access rules and the error map the kit applies to domain errors."""
