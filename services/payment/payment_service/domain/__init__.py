"""Pure payment logic: entities, money, fees and taxes, the state machines, ledger postings, the
settlement decisions and the service's typed errors.

Nothing here imports grpc, protobuf, asyncpg, Stripe, aiohttp or the kit (a unit test parses
every module to keep it so), so every rule is unit-testable on its own.
"""
