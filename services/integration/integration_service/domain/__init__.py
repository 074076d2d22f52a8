"""The integration service's pure domain: providers, connections, sealed credentials, OAuth
state, token timing and webhook verification. No grpc, SQL or provider SDKs here."""
