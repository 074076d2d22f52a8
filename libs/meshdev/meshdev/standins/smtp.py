"""A real SMTP server that keeps every message as an `.eml` file: the mail sink for `make run`
and tests (never a relay: nothing leaves the machine).

It is aiosmtpd's SMTP protocol on 127.0.0.1, so a client (aiosmtplib, smtplib) speaks the real
protocol to it: EHLO, optional AUTH (PLAIN / LOGIN, without TLS), MAIL, RCPT, DATA, QUIT; SMTPUTF8
and 8BITMIME are accepted. Every message it answers `250` to is first written to its directory,
one file per message, atomically (a reader never sees half a file):

    <UTC time, sortable>-<sequence>-<Message-ID>.eml     e.g. 20260301T101502.123456Z-000007-
                                                          ticket.42@tickettoken.test.eml

The file holds the message's bytes as received, after three trace headers an MTA adds on final
delivery: `Return-Path` (the envelope sender), `X-Envelope-To` (the envelope recipients, Bcc
included) and `Received`. `Mailbox(directory).messages()` reads them back as `KeptMessage`s
(`email.message.EmailMessage` with `policy.default`: headers, `text` and `html` parts).

In-process, for tests (the server runs in the test's event loop):

    async with SmtpSink(tmp_path / "mail") as smtp:
        await aiosmtplib.send(message, hostname=smtp.host, port=smtp.port)
        [kept] = await smtp.wait_for(1)

As a child process (`meshdev.embedded.DevSmtp` runs and stops it, like the other dev servers):

    python -m meshdev.standins.smtp --port 2525 --dir .dev/mail

Fault injection, for tests of the sender's retries. Each applies to the next messages (at the end
of DATA, whatever the connection), in the order scripted:

* `refuse_next(n)`: answer `451 4.3.0` (transient: the sender should retry later) and keep nothing;
  `refuse_next(n, permanent=True)`: answer `554 5.7.1` (permanent: the sender must not retry);
* `drop_next(n)`: keep the message, then close the connection without answering: the server
  accepted it but the client never heard (it sees a disconnect and cannot know);
* `refuse_recipients(addr, ...)`: `550 5.1.1` at RCPT for these addresses (a hard bounce).

A sink running as a child process is scripted the same way over SMTP itself, with the non-standard
command `XFAULT` (only this sink knows it): `XFAULT REFUSE <n> TEMP|PERM`, `XFAULT DROP <n>`,
`XFAULT RCPT <address>`, `XFAULT CLEAR`; `DevSmtp` sends them for you.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import itertools
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "SUFFIX",
    "KeptMessage",
    "Mailbox",
    "SinkHandler",
    "SmtpFault",
    "SmtpSink",
    "main",
    "read_message",
]

logger = logging.getLogger(__name__)

SUFFIX = ".eml"
HOSTNAME = "meshdev-smtp-sink"
TEMPORARY_REPLY = "451 4.3.0 Temporary failure, try again later (meshdev fault)"
PERMANENT_REPLY = "554 5.7.1 Message rejected (meshdev fault)"
UNKNOWN_USER_REPLY = "550 5.1.1 Recipient address rejected: user unknown (meshdev fault)"

_SAFE_ID = re.compile(r"[^A-Za-z0-9._@+=-]+")


class _QuietDeprecation(logging.Filter):
    """aiosmtpd itself sets the deprecated `Session.login_data` on every AUTH and then logs a
    warning about it; that line says nothing about the sink."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_QuietDeprecation())


# -- reading kept messages ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeptMessage:
    """One message the sink accepted, as read back from its file."""

    path: Path
    mail_from: str
    """The envelope sender (`MAIL FROM`), `""` for a bounce."""
    rcpt_tos: tuple[str, ...]
    """The envelope recipients (`RCPT TO`), Bcc included."""
    message: EmailMessage
    """The parsed message (`policy.default`): `message["Subject"]`, `message.get_all(...)`."""

    @property
    def subject(self) -> str | None:
        value = self.message["Subject"]
        return None if value is None else str(value)

    @property
    def message_id(self) -> str | None:
        value = self.message["Message-ID"]
        return None if value is None else str(value).strip()

    @property
    def text(self) -> str | None:
        """The `text/plain` body (the first one, not an attachment) with `\n` line ends, or None."""
        return _body(self.message, "plain")

    @property
    def html(self) -> str | None:
        """The `text/html` body (the first one, not an attachment) with `\n` line ends, or None."""
        return _body(self.message, "html")


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    content = part.get_content()
    # The file keeps SMTP's CRLF line ends (RFC 5322); callers compare text.
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def read_message(path: Path) -> KeptMessage:
    """Parse one kept `.eml` file (the trace headers the sink added give the envelope)."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    mail_from = str(message["Return-Path"] or "").strip().removeprefix("<").removesuffix(">")
    rcpt = str(message["X-Envelope-To"] or "")
    return KeptMessage(
        path=path,
        mail_from=mail_from,
        rcpt_tos=tuple(r.strip() for r in rcpt.split(",") if r.strip()),
        message=message,
    )


class Mailbox:
    """The messages kept in a directory, oldest first (file names sort by arrival)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*" + SUFFIX))

    def count(self) -> int:
        return len(self.paths())

    def messages(self) -> list[KeptMessage]:
        return [read_message(path) for path in self.paths()]

    def find(self, *, to: str | None = None, subject: str | None = None) -> list[KeptMessage]:
        """Kept messages sent to envelope recipient `to` and/or with exactly `subject`."""
        return [
            m
            for m in self.messages()
            if (to is None or to in m.rcpt_tos) and (subject is None or m.subject == subject)
        ]

    def clear(self) -> int:
        """Delete every kept message; returns how many."""
        paths = self.paths()
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[KeptMessage]:
        """Block until at least `count` messages are kept (polling, for other processes' sinks);
        `TimeoutError` names how many arrived."""
        deadline = time.monotonic() + timeout
        while (have := self.count()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{have} of {count} messages in {self.directory}")
            time.sleep(0.02)
        return self.messages()


# -- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpFault:
    """One scripted answer to a message: refuse it (`reply`) or keep it and drop the line."""

    kind: Literal["refuse", "drop"]
    reply: str = ""


class SinkHandler:
    """aiosmtpd's handler: accepts every message into `directory` (module doc), applies faults."""

    def __init__(self, directory: Path, *, credentials: tuple[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.credentials = credentials
        self.faults: deque[SmtpFault] = deque()
        self.refused_recipients: set[str] = set()
        self.accepted = 0
        """Messages kept (including those whose connection was then dropped)."""
        self.refused = 0
        self.dropped = 0
        self._sequence = itertools.count(1)
        self.changed = asyncio.Condition()
        """Notified after every kept message (in-process waiters)."""

    # -- scripting ----------------------------------------------------------------------------
    def refuse_next(self, count: int = 1, *, permanent: bool = False) -> None:
        reply = PERMANENT_REPLY if permanent else TEMPORARY_REPLY
        self.faults.extend(SmtpFault("refuse", reply) for _ in range(count))

    def drop_next(self, count: int = 1) -> None:
        self.faults.extend(SmtpFault("drop") for _ in range(count))

    def refuse_recipients(self, *addresses: str) -> None:
        self.refused_recipients.update(a.lower() for a in addresses)

    def clear_faults(self) -> None:
        self.faults.clear()
        self.refused_recipients.clear()

    # -- aiosmtpd hooks -----------------------------------------------------------------------
    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self.refused_recipients:
            return UNKNOWN_USER_REPLY
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "refuse":
            self.refused += 1
            return fault.reply
        path = self._keep(session, envelope)
        self.accepted += 1
        async with self.changed:
            self.changed.notify_all()
        if fault is not None:  # drop: kept, and the client never hears the 250
            self.dropped += 1
            logger.info("kept %s, dropping the connection before the reply", path.name)
            if isinstance(server.transport, asyncio.Transport):
                # abort(), not close(): close() would still flush the reply written next.
                server.transport.abort()
        return "250 OK"

    def _keep(self, session: Session, envelope: Envelope) -> Path:
        content = envelope.original_content or b""
        head, _, _ = content.partition(b"\r\n\r\n")
        parsed = email.message_from_bytes(head + b"\r\n\r\n", policy=email.policy.compat32)
        message_id = str(parsed.get("Message-ID", "") or "").strip().strip("<>")
        now = datetime.now(UTC)
        safe_id = _SAFE_ID.sub("_", message_id)[:120] or "no-message-id"
        name = f"{now:%Y%m%dT%H%M%S.%f}Z-{next(self._sequence):06d}-{safe_id}{SUFFIX}"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        trace = (
            f"Return-Path: <{envelope.mail_from or ''}>\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
            f"Received: from {session.host_name or 'unknown'} ([{peer}])\r\n"
            f"\tby {HOSTNAME} with ESMTP; {format_datetime(now)}\r\n"
        ).encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(trace + content)
        os.replace(tmp, path)
        return path

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Any login succeeds unless `credentials` are set; then only those."""
        if self.credentials is None:
            return AuthResult(success=True)
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(errors="replace"),
            auth_data.password.decode(errors="replace"),
        ) == tuple(self.credentials)
        # handled=False: aiosmtpd then answers 535 itself (handled=True would leave it unsaid).
        return AuthResult(success=ok, handled=False)


class _SinkSMTP(SMTP):
    """aiosmtpd's protocol plus the sink's `XFAULT` scripting command (module doc)."""

    def __init__(self, handler: SinkHandler, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            handler,
            hostname=HOSTNAME,
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=handler.authenticate,
            loop=loop,
        )
        self.sink = handler

    async def smtp_XFAULT(self, arg: str) -> None:
        words = (arg or "").split()
        verb = words[0].upper() if words else ""
        try:
            if verb == "REFUSE" and len(words) == 3 and words[2].upper() in ("TEMP", "PERM"):
                self.sink.refuse_next(int(words[1]), permanent=words[2].upper() == "PERM")
            elif verb == "DROP" and len(words) == 2:
                self.sink.drop_next(int(words[1]))
            elif verb == "RCPT" and len(words) == 2:
                self.sink.refuse_recipients(words[1].strip("<>"))
            elif verb == "CLEAR" and len(words) == 1:
                self.sink.clear_faults()
            else:
                raise ValueError(arg)
        except ValueError:
            await self.push(
                "501 Syntax: XFAULT REFUSE <n> TEMP|PERM | DROP <n> | RCPT <address> | CLEAR"
            )
            return
        await self.push("250 OK")


class SmtpSink:
    """The sink served in the running event loop (module doc); `port` once started."""

    def __init__(
        self,
        directory: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.handler = SinkHandler(directory, credentials=credentials)
        self.mailbox = Mailbox(directory)
        self._server: asyncio.Server | None = None

    @property
    def directory(self) -> Path:
        return self.handler.directory

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    # -- scripting and reading (see SinkHandler and Mailbox) -----------------------------------
    def refuse_next(self, count: int = 1, *, permanent: bool = False) -> None:
        """Refuse the next `count` messages: 451 (transient) or, `permanent`, 554."""
        self.handler.refuse_next(count, permanent=permanent)

    def drop_next(self, count: int = 1) -> None:
        """Keep the next `count` messages but drop the connection instead of answering 250."""
        self.handler.drop_next(count)

    def refuse_recipients(self, *addresses: str) -> None:
        """Answer 550 5.1.1 at RCPT for these addresses."""
        self.handler.refuse_recipients(*addresses)

    def clear_faults(self) -> None:
        self.handler.clear_faults()

    def messages(self) -> list[KeptMessage]:
        return self.mailbox.messages()

    def count(self) -> int:
        return self.mailbox.count()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[KeptMessage]:
        """Wait until the directory holds at least `count` messages; return them all."""
        changed = self.handler.changed
        try:
            async with changed:
                await asyncio.wait_for(
                    changed.wait_for(lambda: self.mailbox.count() >= count), timeout
                )
        except TimeoutError:
            raise TimeoutError(
                f"{self.mailbox.count()} of {count} messages in {self.directory}"
            ) from None
        return self.messages()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _SinkSMTP(self.handler, loop), self.host, self.port, backlog=1024
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _serve(
    directory: Path, host: str, port: int, credentials: tuple[str, str] | None
) -> None:
    sink = SmtpSink(directory, host, port, credentials=credentials)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with sink:
        logger.info("smtp sink on %s:%d, keeping mail in %s", host, sink.port, directory)
        await stopping.wait()
    logger.info("smtp sink stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshdev.standins.smtp",
        description="An SMTP server that keeps every message as an .eml file (dev/test only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where .eml files are kept")
    parser.add_argument("--login", help="require AUTH with this login (and --password)")
    parser.add_argument("--password")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    # aiosmtpd logs every command at INFO; keep the log to our own lines.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    credentials = (args.login, args.password or "") if args.login else None
    asyncio.run(_serve(args.dir.resolve(), args.host, args.port, credentials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
