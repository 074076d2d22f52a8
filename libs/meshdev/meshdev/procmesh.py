"""The mesh as separate processes, like `make run`, but owned by a test or a benchmark.

`ProcessMesh` starts its own embedded PostgreSQL and Redis (fixed ports, so either can be
restarted under running services), a Stripe (localstripe behind the idempotency proxy, which
sends signed webhooks to payment's HTTP port, or the fast in-memory stand-in, which sends none:
payment then settles from the create's answer), the SMTP sink as a process writing `.eml` files,
a LiteSVM Solana node as its own process (nft runs `SOLANA_CHAIN=rpc` against it, so the chain
outlives any nft process), and the services as `python -m <service>` processes on fixed ports.
Each service can be SIGKILLed and started again on the same ports; `ensure_running()` restarts
whatever died. Relays, workers, leases and retries are set short (`QUICK`) so a journey takes
about a second and a killed worker's claims come back within seconds.

Used by tests/e2e/test_chaos.py, tests/e2e/test_demo.py's fallback and bench/journey.py. Dev and
tests only.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from meshdev.embedded import (
    DevSmtp,
    EmbeddedPostgres,
    EmbeddedRedis,
    LocalStripe,
    StripeStandIn,
    _ServerProcess,
    free_port,
)
from meshdev.launcher import DEMO_VENUE, SERVICES, ServiceSpec, is_serving
from meshkit.auth import TokenMinter, ensure_dev_keys, load_private_key
from meshkit.settings import DEV_ISSUER

__all__ = [
    "QUICK",
    "STRIPE_KEY",
    "WEBHOOK_SECRET",
    "ProcessMesh",
    "RestartablePostgres",
    "ServiceProcess",
    "SolanaNode",
]

STRIPE_KEY = "sk_test_tickettoken_mesh"
WEBHOOK_SECRET = "whsec_tickettoken_mesh"  # noqa: S105 - a test secret

# Short polls, retries, leases and locks: a journey in about a second, a killed worker's claims
# back within seconds, and no event dead-lettered by an outage that lasts a few seconds.
QUICK: dict[str, dict[str, str]] = {
    "*": {
        "ACCESS_LOG": "false",
        "HEALTH_CHECK_INTERVAL_S": "0.5",
        "IDEMPOTENCY_LOCK_S": "3",
        "IDEMPOTENCY_HEARTBEAT_S": "1",
        "SHUTDOWN_GRACE_S": "2",
        "RELAY_POLL_S": "0.05",
        "RELAY_BACKOFF_BASE_S": "0.1",
        "RELAY_BACKOFF_MAX_S": "1",
        "RELAY_MAX_ATTEMPTS": "500",
        "RELAY_CALL_TIMEOUT_S": "5",
        "RELAY_HANDLER_TIMEOUT_S": "20",
    },
    "payment": {
        "RECONCILE_INTERVAL_S": "0",
        "FUNDS_HOLD_S": "0",
        "REFUND_RATE_LIMIT_PER_MINUTE": "0",
    },
    "nft": {
        "NFT_WORKER_POLL_S": "0.05",
        "NFT_RETRY_BASE_S": "0.1",
        "NFT_RETRY_MAX_S": "1",
        "NFT_MAX_ATTEMPTS": "100",
        "NFT_WORKER_LEASE_S": "6",
        "NFT_WALLET_CHECK_INTERVAL_S": "3600",
        "SOLANA_CONFIRM_TIMEOUT_S": "2",
        "SOLANA_CONFIRM_POLL_S": "0.02",
        "SOLANA_RESEND_INTERVAL_S": "0.25",
        "SOLANA_RPC_TIMEOUT_S": "5",
        "SOLANA_DEV_AIRDROP_LAMPORTS": str(1000 * 10**9),
        "PROVIDER_POLICIES": json.dumps(
            {
                "solana": {
                    "rate": None,
                    "concurrency": None,
                    "breaker": False,
                    "backoff_base_s": 0.05,
                    "retry_budget_min_per_s": 1000,
                }
            }
        ),
    },
    "notify": {
        "NOTIFY_WORKER_POLL_S": "0.05",
        "NOTIFY_RETRY_BASE_S": "0.1",
        "NOTIFY_RETRY_MAX_S": "1",
        "NOTIFY_MAX_ATTEMPTS": "100",
        "NOTIFY_WORKER_LEASE_S": "5",
        "SMTP_TIMEOUT_S": "2",
        "PROVIDER_POLICIES": json.dumps(
            {"smtp": {"breaker": False, "backoff_base_s": 0.05, "retry_budget_min_per_s": 1000}}
        ),
    },
}


def _json_rpc(url: str, method: str, params: list[Any] | None = None, timeout: float = 5) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(  # noqa: S310 - our own node on 127.0.0.1
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


class SolanaNode(_ServerProcess):
    """`python -m meshdev.solana_node` (LiteSVM behind Solana JSON-RPC) as a child process."""

    name = "solana"
    stop_signal = signal.SIGTERM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "meshdev.solana_node", "--port", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def _ready(self) -> bool:
        try:
            return bool(_json_rpc(self.url, "getHealth", timeout=0.5) == "ok")
        except OSError:
            return False

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call to the node (what any Solana client would send)."""
        return _json_rpc(self.url, method, params, timeout=30)


class RestartablePostgres(EmbeddedPostgres):
    """EmbeddedPostgres that can be started again while this process makes gRPC calls.

    As root the server runs as another user; `Popen(user=...)` then forks (CPython uses vfork
    only without a uid/gid change), and a fork while gRPC threads are busy can crash the child
    before it execs (gRPC skips its fork handlers). Here `setpriv` changes the user after the
    exec instead, so the spawn takes the vfork path like every other child.
    """

    _spawning = False

    def _user(self) -> str | None:
        return None if self._spawning else super()._user()

    def _command(self) -> list[str]:
        cmd = super()._command()
        user = EmbeddedPostgres._user(self)
        setpriv = shutil.which("setpriv")
        if user is None or setpriv is None:
            return cmd
        gid = pwd.getpwnam(user).pw_gid
        return [setpriv, f"--reuid={user}", f"--regid={gid}", "--clear-groups", *cmd]

    def _spawn_and_wait(self, timeout: float) -> None:
        self._spawning = shutil.which("setpriv") is not None
        try:
            super()._spawn_and_wait(timeout)
        finally:
            self._spawning = False


class ServiceProcess:
    """One service as `python -m <module>` on fixed ports; killable and restartable."""

    def __init__(
        self,
        spec: ServiceSpec,
        env: dict[str, str],
        *,
        grpc_port: int,
        ops_port: int,
        http_port: int,
        log_path: Path,
    ) -> None:
        self.spec = spec
        self.env = env
        self.grpc_port = grpc_port
        self.ops_port = ops_port
        self.http_port = http_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process (no wait); a no-op while it runs."""
        if self.alive:
            return
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.spec.module],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.starts += 1

    def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if is_serving(self.grpc_port, self.spec.grpc_service):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not SERVING in {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def start(self, timeout: float = 60.0) -> None:
        self.spawn()
        self.wait_serving(timeout)

    def kill(self) -> None:
        """SIGKILL: no drain, no lease given back, calls in flight cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.kills += 1

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ProcessMesh:
    """See the module docstring. Synchronous (start it before, or beside, an event loop)."""

    def __init__(
        self,
        work_dir: Path,
        *,
        services: Iterable[str] = ("payment", "nft", "notify", "integration"),
        stripe: Literal["localstripe", "fast"] = "localstripe",
        quick: bool = True,
        env: Mapping[str, str] | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        log_level: str = "WARNING",
    ) -> None:
        self.work = Path(work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.dev_dir = self.work / "dev"
        self.mail_dir = self.work / "mail"
        self.names = tuple(services)
        self.stripe_kind = stripe
        self.quick = quick
        self.extra_env = dict(env or {})
        self.service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self.log_level = log_level
        self.postgres = RestartablePostgres(self.work / "postgres", free_port())
        self.redis = EmbeddedRedis(self.work / "redis", free_port())
        self.stripe: LocalStripe | StripeStandIn = (
            LocalStripe(self.work / "localstripe", free_port())
            if stripe == "localstripe"
            else StripeStandIn(self.work / "stripe", free_port())
        )
        self.smtp = DevSmtp(self.work / "smtp", free_port(), mail_dir=self.mail_dir)
        self.chain = SolanaNode(self.work / "solana", free_port())
        self.services: dict[str, ServiceProcess] = {}
        self._minter: TokenMinter | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> ProcessMesh:
        try:
            with ThreadPoolExecutor(5) as pool:
                servers = (self.postgres, self.redis, self.stripe, self.smtp, self.chain)
                for future in [pool.submit(s.start, 60.0) for s in servers]:
                    future.result()
            keys = ensure_dev_keys(self.dev_dir)
            self._minter = TokenMinter(
                load_private_key(keys.private_key_path), kid=keys.kid, issuer=DEV_ISSUER
            )
            self._build_services()
            # nft and notify first: payment's and nft's relays deliver to them.
            for svc in self.services.values():
                svc.spawn()
            for svc in self.services.values():
                svc.wait_serving(timeout)
            if "payment" in self.services:
                self.add_venue(DEMO_VENUE)
        except BaseException:
            self.stop()
            raise
        return self

    def _build_services(self) -> None:
        specs = {spec.name: spec for spec in SERVICES}
        ports = {name: (free_port(), free_port(), free_port()) for name in self.names}
        targets = {
            f"{name.upper()}_GRPC_TARGET": f"127.0.0.1:{grpc}"
            for name, (grpc, _, _) in ports.items()
        }
        for name in self.names:
            grpc_port, ops_port, http_port = ports[name]
            env = {
                **{k: v for k, v in os.environ.items() if not k.endswith("_GRPC_TARGET")},
                "APP_ENV": "test",
                "LOG_LEVEL": self.log_level,
                "DATABASE_URL": self.postgres.url,
                "REDIS_URL": self.redis.url,
                "DEV_DIR": str(self.dev_dir),
                "MESH_EMBEDDED": "1",
                "GRPC_HOST": "127.0.0.1",
                "GRPC_PORT": str(grpc_port),
                "OPS_PORT": str(ops_port),
                "HTTP_PORT": str(http_port),
                "GUARD_KEY_PREFIX": f"guard-{uuid.uuid4().hex[:8]}",
                **targets,
                **(QUICK["*"] if self.quick else {}),
                **(QUICK.get(name, {}) if self.quick else {}),
                **self._provider_env(name),
                **self.extra_env,
                **self.service_env.get(name, {}),
            }
            self.services[name] = ServiceProcess(
                specs[name],
                env,
                grpc_port=grpc_port,
                ops_port=ops_port,
                http_port=http_port,
                log_path=self.work / f"{name}.log",
            )

    def _provider_env(self, name: str) -> dict[str, str]:
        if name == "payment":
            return {
                "STRIPE_API_BASE": self.stripe.url,
                "STRIPE_SECRET_KEY": STRIPE_KEY,
                "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "STRIPE_DEV_REGISTER_WEBHOOK": str(self.stripe_kind == "localstripe").lower(),
            }
        if name == "nft":
            return {"SOLANA_CHAIN": "rpc", "SOLANA_RPC_URL": self.chain.url}
        if name == "notify":
            return {
                "NOTIFY_EMAIL_PROVIDERS": "smtp",
                "SMTP_HOST": self.smtp.host,
                "SMTP_PORT": str(self.smtp.port),
            }
        return {}

    def stop(self) -> None:
        for svc in self.services.values():
            with contextlib.suppress(Exception):
                svc.stop(grace=5.0)
        for server in (self.stripe, self.smtp, self.chain, self.redis, self.postgres):
            with contextlib.suppress(Exception):
                server.stop()

    def __enter__(self) -> ProcessMesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- chaos ------------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        self.services[name].kill()

    def restart(self, name: str, *, wait: bool = True) -> None:
        svc = self.services[name]
        svc.kill()
        svc.spawn()
        if wait:
            svc.wait_serving()

    def dead(self) -> list[str]:
        return [name for name, svc in self.services.items() if not svc.alive]

    def ensure_running(self, timeout: float = 60.0) -> list[str]:
        """Start every service that is not running and wait until all are SERVING; returns the
        names started."""
        started = self.dead()
        for name in started:
            self.services[name].spawn()
        for svc in self.services.values():
            svc.wait_serving(timeout)
        return started

    def restart_postgres(self, down_s: float = 0.0) -> None:
        """Fast shutdown of PostgreSQL (sessions aborted), then the same server on the same port."""
        self.postgres.stop()
        time.sleep(down_s)
        self.postgres.start()

    def restart_redis(self, down_s: float = 0.0) -> None:
        """Redis stopped (it keeps nothing: leases, limits and breakers are gone) and started."""
        self.redis.stop()
        time.sleep(down_s)
        self.redis.start()

    # -- what callers need ------------------------------------------------------------------------
    def add_venue(self, venue_id: str) -> None:
        """A venue (Nashville, TN, entertainment tax); venues have no RPC."""
        subprocess.run(
            [
                sys.executable, "-m", "payment_service.venues", "upsert", venue_id,
                "--country", "US", "--region", "TN", "--locality", "Nashville",
                "--entertainment-tax",
            ],
            env={**os.environ, "DATABASE_URL": self.postgres.url, "DB_SCHEMA": "payment"},
            check=True,
            capture_output=True,
        )  # fmt: skip

    def token(self, aud: str, *, sub: str = "dev-admin", roles: Iterable[str] = ("admin",)) -> str:
        """A dev-signed token for `tickettoken.<aud>`; `sub="svc:<name>"` for a service's."""
        assert self._minter is not None, "start() the mesh first"
        service = sub.startswith("svc:")
        return self._minter.mint(
            subject=sub,
            audience=f"tickettoken.{aud}",
            ttl=3600,
            roles=[] if service else list(roles),
        )

    def metadata(self, aud: str, **kwargs: Any) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(aud, **kwargs)}"),)

    def state(self) -> dict[str, Any]:
        """The mesh as `make run`'s state file describes it (meshdev.demo reads this)."""
        return {
            "database_url": self.postgres.url,
            "redis_url": self.redis.url,
            "embedded": True,
            "dev_dir": str(self.dev_dir),
            "stripe": self.stripe.url,
            "stripe_webhooks": self.stripe_kind == "localstripe",
            "chain": self.chain.url,
            "mail": {"mail_dir": str(self.mail_dir), "smtp": f"{self.smtp.host}:{self.smtp.port}"},
            "demo_venue": DEMO_VENUE,
            "services": {
                name: {
                    "grpc": svc.grpc_port,
                    "ops": svc.ops_port,
                    "http": svc.http_port,
                    "pid": svc.proc.pid if svc.proc else None,
                    "service": svc.spec.grpc_service,
                }
                for name, svc in self.services.items()
            },
        }

    def write_state(self, path: Path) -> Path:
        path.write_text(json.dumps(self.state(), indent=2))
        return path
