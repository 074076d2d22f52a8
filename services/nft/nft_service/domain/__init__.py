"""The nft domain: states, validation, metadata and retry decisions (pure logic, no I/O)."""
