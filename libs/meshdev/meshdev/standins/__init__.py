"""Local stand-ins for outside systems, for tests, benchmarks and `make run` only.

`provider.ProviderStandIn` (a scriptable HTTP provider), `solana_rpc.LiteSvmRpcServer` (a Solana
JSON-RPC node on LiteSVM), `stripe` (Stripe's idempotency rules: a proxy in front of localstripe
and a sub-millisecond Stripe stand-in for benchmarks) and `faultproxy.FaultProxy` (a
fault-injecting proxy in front of any HTTP upstream).
"""
