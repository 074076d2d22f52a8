"""SQL of the nft service, one module per aggregate: `mint_jobs`, `tickets` (the ticket NFT
records and the platform's moves), `mint_queue` (the tickets' mint lifecycle: claim, lease,
outcomes) and `metadata` (content-addressed JSON documents).

SQL in, domain entities out. Every function takes the connection to run on as its first
argument, so the caller (a use case or a job) decides the transaction, always the same way:
writes that belong together (a state change and its outbox event) share one
`Database.run_in_tx`; reads and single-statement writes run on `Database.acquire()` (one
statement is its own transaction).
"""
