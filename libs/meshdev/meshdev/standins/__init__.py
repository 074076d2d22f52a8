"""Local stand-ins for outside systems, for tests, benchmarks and `make run` only.

`provider.ProviderStandIn` (a scriptable HTTP provider), `solana_rpc.LiteSvmRpcServer` (a Solana
JSON-RPC node on LiteSVM), `stripe` (Stripe's idempotency rules: a proxy in front of localstripe
and a sub-millisecond Stripe stand-in for benchmarks), `faultproxy.FaultProxy` (a
fault-injecting proxy in front of any HTTP upstream), `smtp.SmtpSink` (a real SMTP server that
keeps every message as an `.eml` file, with refusals and accept-then-drop faults),
`sendgrid.SendGridServer` (v3 Mail Send and the ECDSA-signed Event Webhook) and
`twilio.TwilioServer` (the Messages API, HMAC-signed status callbacks and inbound replies), the
last three reached by aiosmtplib and the official `sendgrid` / `twilio` SDKs unchanged.
"""
