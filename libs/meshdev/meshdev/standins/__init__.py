"""Local stand-ins for outside systems, for tests, benchmarks and `make run` only.

`provider.ProviderStandIn` (a scriptable HTTP provider), `solana_rpc.LiteSvmRpcServer` (a Solana
JSON-RPC node on LiteSVM) and `faultproxy.FaultProxy` (a fault-injecting proxy in front of any
HTTP upstream).
"""
