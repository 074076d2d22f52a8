"""Pure payment logic: money arithmetic, fees and taxes, the state machine and ledger postings.

Nothing here imports grpc, the database or Stripe, so every rule is unit-testable on its own.
"""
