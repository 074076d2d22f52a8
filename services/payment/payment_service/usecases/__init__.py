"""The payment service's use cases, one module per group: fees, payments (create, get, list),
refunds, cancel, settlement, webhooks, reconciliation and payouts.

Each use case takes domain values (never proto requests), owns its transactions (opened with
`db.transaction()`; plain reads borrow a connection with `db.acquire()`), calls the store and the
Stripe adapter, and publishes its events in the transaction that changes the state. Use cases
do not call each other; the steps they share are `settlement` (apply a provider result, with the
late-capture protocol) and `views.load` (a payment with its refunds).
"""
