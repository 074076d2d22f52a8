"""SQL of the payment service, one module per aggregate: venues, payments (and their
transitions), refunds, payouts, the ledger and the webhook inbox.

Functions take an open connection, so a use case composes them into one transaction (a state
change, its ledger posting and its outbox event commit together or not at all), and return the
domain's typed entities. The state machine's table is enforced here by conditional UPDATEs
(`payments.transition`), the ledger's "never twice" by the (object_id, kind) unique constraint
(`ledger.post`), and refund limits by the payment's row lock.
"""
