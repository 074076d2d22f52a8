"""Unit tests of the nft service: domain rules and token encoding, no I/O."""
