"""Integration tests of the nft service: real Postgres, Redis and LiteSVM, the Solana RPC
stand-in, the service in-process over gRPC (and as a process where a crash is needed)."""
