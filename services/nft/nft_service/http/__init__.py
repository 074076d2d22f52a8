"""The nft service's public HTTP port: the metadata documents the on-chain uris point to."""
