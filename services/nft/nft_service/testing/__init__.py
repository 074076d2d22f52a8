"""Test support shipped with the nft service (never imported by production code paths)."""
