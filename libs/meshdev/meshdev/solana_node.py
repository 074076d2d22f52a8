"""A LiteSVM Solana JSON-RPC node as its own process, for tests and benchmarks of the mesh.

`meshdev.standins.solana_rpc.LiteSvmRpcServer` runs inside the caller's event loop; a chain that
must outlive the nft process (the chaos test kills nft, not the chain) runs here instead, on a
fixed port, with nft configured `SOLANA_CHAIN=rpc`, `SOLANA_RPC_URL=<url>`. It adds the one read a
test needs to see the chain whole: `getProgramAccounts` (Solana's own method, base64 encoding,
`dataSize` filters), so "exactly one NFT per ticket" is counted on chain, not in our tables.

    python -m meshdev.solana_node --port 8899
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal
import sys
from typing import Any

from aiohttp import web
from solders.pubkey import Pubkey

from meshdev.standins.solana_rpc import LiteSvmRpcServer

__all__ = ["ChainNode", "main"]


class ChainNode(LiteSvmRpcServer):
    """LiteSvmRpcServer on a given port, with `getProgramAccounts`."""

    async def serve(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = port

    def _m_getProgramAccounts(self, params: list[Any], fault: str | None) -> Any:
        program = Pubkey.from_string(params[0])
        config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        sizes = [f["dataSize"] for f in config.get("filters") or [] if "dataSize" in f]
        found = []
        for key, account in self.svm.get_program_accounts(program):
            data = bytes(account.data)
            if any(len(data) != size for size in sizes):
                continue
            found.append(
                {
                    "pubkey": str(key),
                    "account": {
                        "lamports": account.lamports,
                        "owner": str(account.owner),
                        "data": [base64.b64encode(data).decode(), "base64"],
                        "executable": account.executable,
                        "rentEpoch": 0,
                        "space": len(data),
                    },
                }
            )
        return found


async def _run(host: str, port: int) -> None:
    node = ChainNode()
    await node.serve(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshdev.solana_node")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
