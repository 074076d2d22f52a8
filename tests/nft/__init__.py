"""Tests of the nft service: `unit/` (pure domain and token encoding, no I/O) and
`integration/` (real Postgres, Redis and LiteSVM, the RPC stand-in, the service over gRPC)."""
