"""Email over SMTP with aiosmtplib, through the kit's "smtp" guard, on pooled connections.

Each send speaks MAIL, RCPT and DATA itself (not `sendmail`) so that a failure says how far the
message got:

* before DATA's content was handed over (connect, MAIL, RCPT, a 4xx to DATA): not accepted —
  a transient failure the guard retries, or a refusal (5xx at RCPT: the recipient, a hard
  bounce; 5xx elsewhere: the message or our account);
* after the content was handed over but before the final reply (the line dropped, a timeout):
  UNKNOWN — the server may have kept it (the dev sink's accept-then-drop fault does exactly
  that). The guard tries again at once on a new connection; the copy carries the same
  Message-ID and X-Notification-Id, so receiving systems collapse the two.

Connections are reused (a pool of `pool_size`), refreshed after `max_messages` messages or
`max_idle_s` idle; a reused connection that turns out dead before MAIL is replaced without
counting as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import logging
import quopri
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr

import aiosmtplib

from meshkit.errors import MeshError
from meshkit.resilience import ProviderGuard
from notify_service.adapters.base import (
    Accepted,
    OutboundEmail,
    OutboundSms,
    SendError,
    Uncertain,
    guard_failure,
)
from notify_service.domain.model import Channel
from notify_service.domain.retry import FailureKind, SendFailure

logger = logging.getLogger(__name__)

PROVIDER = "smtp"


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    username: str = ""
    password: str = ""
    tls: str = "off"
    """off, starttls, or tls (implicit)."""
    timeout_s: float = 20.0
    pool_size: int = 16
    max_messages: int = 100
    max_idle_s: float = 30.0


class _Refused(Exception):
    """A definite SMTP refusal inside the guarded call (not retried by the guard)."""

    retryable = False

    def __init__(self, failure: SendFailure) -> None:
        super().__init__(failure.code)
        self.failure = failure


class _Transient(Exception):
    """Definitely not accepted, worth retrying (4xx, connection failures before DATA)."""

    retryable = True

    def __init__(self, code: str, message: str, stage: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.stage = stage


@dataclass(slots=True)
class _Conn:
    client: aiosmtplib.SMTP
    sent: int = 0
    last_used: float = 0.0


# CRLF line ends; lines folded only past RFC 5322's hard limit, so a long List-Unsubscribe URL
# stays one `<...>` token (folding would turn it into an encoded word no client parses).
POLICY = email.policy.SMTP.clone(max_line_length=998)
_CRLF = re.compile(r"\r\n|\r|\n")


def _header_value(value: str) -> str:
    """A header value on one line (no CR/LF can be smuggled in), RFC 2047-encoded when it is
    not ASCII."""
    flat = " ".join(_CRLF.split(value))
    if flat.isascii():
        return flat
    return Header(flat, "utf-8", maxlinelen=998).encode(linesep="\r\n")


def _address(name: str, address: str) -> str:
    name = " ".join(_CRLF.split(name))
    return formataddr((name, address), charset="utf-8") if name else address


def _qp(text: str) -> bytes:
    """UTF-8, quoted-printable, CRLF line ends."""
    normal = "\n".join(_CRLF.split(text))
    if not normal.endswith("\n"):
        normal += "\n"
    return quopri.encodestring(normal.encode("utf-8")).replace(b"\n", b"\r\n")


def build_message(mail: OutboundEmail) -> EmailMessage:
    """The RFC 5322 message as an EmailMessage (multipart/alternative text + HTML, mixed with
    attachments): the general path, used for mail with attachments."""
    message = EmailMessage(policy=POLICY)
    name, address = parseaddr(mail.from_address)
    message["From"] = formataddr((name, address)) if name else address
    if mail.to_name:
        message["To"] = Address(display_name=mail.to_name, addr_spec=mail.to_address)
    else:
        message["To"] = mail.to_address
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = mail.message_id
    if mail.reply_to:
        message["Reply-To"] = mail.reply_to
    for key, value in mail.headers.items():
        message[key] = value
    message.set_content(mail.text or " ")
    if mail.html:
        message.add_alternative(mail.html, subtype="html")
    for attachment in mail.attachments:
        maintype, _, subtype = (attachment.content_type or "application/octet-stream").partition(
            "/"
        )
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    return message


def message_bytes(mail: OutboundEmail) -> bytes:
    """The message's bytes. Without attachments (nearly every notification) it is written
    directly — the same structure as `build_message`, at a fraction of the stdlib email
    package's cost (its header objects take about a millisecond per message)."""
    if mail.attachments:
        return build_message(mail).as_bytes()
    from_name, from_address = parseaddr(mail.from_address)
    headers = [
        ("From", _address(from_name, from_address)),
        ("To", _address(mail.to_name, mail.to_address)),
        ("Subject", _header_value(mail.subject)),
        ("Date", formatdate(localtime=False, usegmt=True)),
        ("Message-ID", _header_value(mail.message_id)),
    ]
    if mail.reply_to:
        headers.append(("Reply-To", _header_value(mail.reply_to)))
    headers += [(k, _header_value(v)) for k, v in mail.headers.items()]
    headers.append(("MIME-Version", "1.0"))
    text_part = (
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + _qp(mail.text or " ")
    )
    if mail.html:
        boundary = "=_tt_" + uuid.uuid4().hex
        headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
        html_part = (
            b'Content-Type: text/html; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + _qp(mail.html)
        )
        marker = f"--{boundary}\r\n".encode()
        body = (
            marker + text_part + b"\r\n" + marker + html_part + f"\r\n--{boundary}--\r\n".encode()
        )
        head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("ascii")
        return head + b"\r\n" + body
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("ascii")
    return head + text_part


class SmtpSender:
    """Sends email through an SMTP relay (build once; `close()` at shutdown)."""

    name = PROVIDER
    channel = Channel.EMAIL
    sessions = True

    def __init__(self, config: SmtpConfig, guard: ProviderGuard, *, timeout_s: float) -> None:
        self._config = config
        self._guard = guard
        self._timeout_s = timeout_s
        self._idle: list[_Conn] = []
        self._closed = False

    async def send(self, message: OutboundEmail | OutboundSms) -> Accepted:
        [outcome] = await self.send_many([message])
        if isinstance(outcome, SendFailure):
            raise SendError(outcome)
        return outcome

    async def send_many(
        self, messages: Sequence[OutboundEmail | OutboundSms]
    ) -> list[Accepted | SendFailure]:
        """Send `messages` over one SMTP session, as ONE call through the guard (the way an MTA
        delivers a queue: the connection, not the message, is what the SMTP server limits).
        Each message has its own outcome: a refusal of one message (5xx, or 4xx at RCPT) is
        that message's and the session goes on; a failure of the session (connection, 4xx at
        MAIL or DATA, no reply) is retried by the guard from the first message not yet
        accepted — never re-sending one the server already confirmed."""
        mails = [m for m in messages if isinstance(m, OutboundEmail)]
        assert len(mails) == len(messages)
        raws = [message_bytes(m) for m in mails]
        outcomes: list[Accepted | SendFailure | None] = [None] * len(mails)
        in_doubt: set[int] = set()

        async def attempt() -> None:
            conn = await self._acquire()
            keep = False
            try:
                for i, mail in enumerate(mails):
                    if outcomes[i] is not None:
                        continue
                    sender = parseaddr(mail.from_address)[1]
                    try:
                        conn = await self._transaction(conn, sender, mail.to_address, raws[i])
                    except Uncertain:
                        in_doubt.add(i)
                        raise
                    except _Refused as refused:
                        outcomes[i] = refused.failure
                        await self._reset(conn)
                        continue
                    except _Transient as exc:
                        if exc.stage != "rcpt":
                            raise
                        outcomes[i] = SendFailure(FailureKind.TRANSIENT, exc.code, str(exc))
                        await self._reset(conn)
                        continue
                    in_doubt.discard(i)
                    outcomes[i] = Accepted(mail.message_id)
                keep = True
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError) as exc:
                raise _Transient("smtp_connection", type(exc).__name__) from None
            finally:
                if keep:
                    self._release(conn)
                else:
                    await self._discard(conn)

        try:
            await self._guard.call("send", attempt, idempotent=True, timeout=self._timeout_s)
        except (MeshError, Uncertain, _Transient) as exc:
            for i, outcome in enumerate(outcomes):
                if outcome is None:
                    outcomes[i] = self._gave_up(exc, uncertain=i in in_doubt)
        return [o if o is not None else SendFailure(FailureKind.UNKNOWN, "smtp") for o in outcomes]

    @staticmethod
    def _gave_up(exc: Exception, *, uncertain: bool) -> SendFailure:
        if isinstance(exc, MeshError):
            return guard_failure(exc, uncertain=uncertain)
        if isinstance(exc, Uncertain):
            return SendFailure(FailureKind.UNKNOWN, "smtp_no_reply", str(exc))
        assert isinstance(exc, _Transient)
        return SendFailure(FailureKind.TRANSIENT, exc.code, str(exc))

    async def _transaction(self, conn: _Conn, sender: str, to: str, raw: bytes) -> _Conn:
        """MAIL, RCPT, DATA for one message; returns the connection used (a stale pooled one
        is replaced once, before anything was handed over)."""
        try:
            await self._mail(conn.client, sender)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError, TimeoutError):
            if conn.sent == 0:
                raise
            await self._discard(conn)
            conn = await self._acquire(fresh=True)
            await self._mail(conn.client, sender)
        await self._rcpt(conn.client, to)
        await self._data(conn.client, raw)
        conn.sent += 1
        return conn

    @staticmethod
    async def _reset(conn: _Conn) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await conn.client.rset()

    async def _mail(self, client: aiosmtplib.SMTP, sender: str) -> None:
        await self._command(client.mail, sender, stage="mail")

    async def _rcpt(self, client: aiosmtplib.SMTP, to: str) -> None:
        await self._command(client.rcpt, to, stage="rcpt")

    async def _command(
        self,
        fn: Callable[[str], Awaitable[aiosmtplib.SMTPResponse]],
        arg: str,
        *,
        stage: str,
    ) -> None:
        try:
            await fn(arg)
        except aiosmtplib.SMTPResponseException as exc:
            raise self._refusal(exc.code, exc.message, stage) from None

    async def _data(self, client: aiosmtplib.SMTP, raw: bytes) -> None:
        try:
            await client.data(raw)
        except aiosmtplib.SMTPResponseException as exc:
            if not isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                raise self._refusal(exc.code, exc.message, "data") from None
            raise Uncertain(
                "the connection dropped before the reply to DATA", retryable=True
            ) from None
        except (ConnectionError, TimeoutError, OSError) as exc:
            # The content may have reached the server: we cannot know whether it kept it.
            raise Uncertain(f"no reply to DATA ({type(exc).__name__})", retryable=True) from None

    @staticmethod
    def _refusal(code: int, message: str, stage: str) -> Exception:
        text = f"{code} at {stage.upper()}: {message[:200]}"
        if 400 <= code < 500:
            return _Transient(f"smtp_{code}", text, stage)
        if stage == "rcpt" and code in (550, 551, 553):
            return _Refused(SendFailure(FailureKind.RECIPIENT, f"smtp_{code}", text, suppress=True))
        if code in (530, 535, 538):
            return _Refused(SendFailure(FailureKind.REJECTED, f"smtp_{code}", text))
        if stage == "rcpt":
            return _Refused(SendFailure(FailureKind.RECIPIENT, f"smtp_{code}", text))
        return _Refused(SendFailure(FailureKind.CONTENT, f"smtp_{code}", text))

    # -- the pool ------------------------------------------------------------------------------
    async def _acquire(self, *, fresh: bool = False) -> _Conn:
        now = time.monotonic()
        while self._idle and not fresh:
            conn = self._idle.pop()
            if (
                conn.client.is_connected
                and now - conn.last_used < self._config.max_idle_s
                and conn.sent < self._config.max_messages
            ):
                # A completed DATA ends the mail transaction: no RSET needed before the next.
                return conn
            await self._discard(conn)
        return await self._connect()

    async def _connect(self) -> _Conn:
        c = self._config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            timeout=c.timeout_s,
            use_tls=c.tls == "tls",
            start_tls=c.tls == "starttls",
            username=c.username or None,
            password=c.password or None,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPResponseException as exc:
            raise self._refusal(exc.code, exc.message, "connect") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _Transient("smtp_connect", f"cannot connect: {type(exc).__name__}") from None
        return _Conn(client)

    def _release(self, conn: _Conn) -> None:
        conn.last_used = time.monotonic()
        if self._closed or len(self._idle) >= self._config.pool_size:
            asyncio.get_running_loop().create_task(self._discard(conn))
            return
        self._idle.append(conn)

    @staticmethod
    async def _discard(conn: _Conn) -> None:
        with contextlib.suppress(Exception):
            if conn.client.is_connected:
                await asyncio.wait_for(conn.client.quit(), 2.0)
        with contextlib.suppress(Exception):
            conn.client.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._discard(c) for c in idle), return_exceptions=True)
