"""Dev and test kit for the TicketToken Mesh; never installed in a service image.

- `embedded`: real PostgreSQL, Redis and localstripe servers from wheels, as child processes
  (localstripe behind a proxy with Stripe's idempotency semantics), a fast Stripe stand-in, and
  the messaging stand-ins as processes: the SMTP sink (`DevSmtp`), `SendGridStandIn` and
  `TwilioStandIn`.
- `launcher`: `make run` (`python -m meshdev.launcher run`), the whole mesh on embedded defaults.
- `tokens`: `make tokens` (`python -m meshdev.tokens`), dev-signed JWTs for grpcurl.
- `testing`: the pytest plugin (fixtures for databases, in-process servers, tokens) and the
  guard replica process for multi-process tests.
- `standins`: outside systems stood in locally: a scriptable HTTP provider (`provider`), a
  LiteSVM-backed Solana JSON-RPC node (`solana_rpc`), Stripe's idempotency rules as a proxy and
  a sub-millisecond Stripe stand-in (`stripe`), a fault-injecting HTTP proxy to put in front
  of any of them (`faultproxy`), an SMTP server that keeps every message as an `.eml` file
  (`smtp`), and SendGrid's Mail Send API and Twilio's Messages API with their signed webhooks
  (`sendgrid`, `twilio`).

Production code never imports this package (tests/kit/unit/test_packaging.py holds that).
"""
