"""The nft domain: entities, state machines, rules, metadata and retry decisions.

Pure code: no grpc, protobuf, asyncpg, chain SDKs, HTTP or kit imports (tests/nft/unit holds a
test that parses these files and fails on any), so every rule is unit-tested without I/O.
"""
