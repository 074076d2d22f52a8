"""kill -9 of the worker mid-send: the message is sent once after the restart.

The service runs as its own process (`python -m notify_service`, as `make run` starts it)
against the session's Postgres and Redis and a real SMTP server in this test's event loop. The
process is killed with SIGKILL — no drain, no cleanup — at the worst moments:

* after the SMTP server accepted (kept) the message but before the worker heard its answer, let
  alone recorded SENT: the unavoidable window. The notification is left SENDING (the attempt
  was recorded before the send); once its lease expires, the next process sends it again
  with the SAME Message-ID and X-Notification-Id. The bound: at most one extra copy per crash
  in that window, and every copy is the same message to anyone who looks (distinct Message-IDs
  at the server: exactly one; one NotificationSent event);
* before the server accepted anything (stuck at RCPT): after the restart it is sent exactly
  once, one copy;
* the server's accept-then-drop fault (it keeps the message, then drops the line before its
  250): the sender cannot know, so it sends again at once — same Message-ID again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from meshdev.embedded import free_port
from meshdev.standins.smtp import SinkHandler, SmtpSink
from meshdev.testing.servers import TestTokens
from tests.notify.integration.support import AUD, Start, events_of, send_request
from tickettoken.notify.v1 import notify_pb2 as pb
from tickettoken.notify.v1 import notify_pb2_grpc

LEASE_S = 4.0


class StallingHandler(SinkHandler):
    """The sink, able to stall forever at one stage: after keeping the message (`data`), or
    before accepting the recipient (`rcpt`)."""

    stall: str = ""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.stall == "rcpt":
            self.stalled.set()
            await asyncio.sleep(3600)
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.stall != "data":
            return await super().handle_DATA(server, session, envelope)
        self._keep(session, envelope)  # accepted and kept ...
        self.accepted += 1
        self.stalled.set()
        await asyncio.sleep(3600)  # ... but the sender never hears the 250
        return "250 OK"

    stalled: asyncio.Event


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    server = SmtpSink(tmp_path / "mail")
    handler = StallingHandler(server.directory)
    handler.stalled = asyncio.Event()
    server.handler = handler
    async with server:
        yield server


class NotifyProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "notify_service", env=self.env, stdout=out, stderr=out
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def wait(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def process_env(
    postgres_url: str, redis_url: str, dev_dir: Path, sink: SmtpSink
) -> AsyncIterator[dict[str, str]]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "DB_SCHEMA": schema,
        "OPS_PORT": "0",
        "HTTP_PORT": "0",
        "DEV_DIR": str(dev_dir),
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "GUARD_KEY_PREFIX": f"guard-{schema}",
        "NOTIFY_EMAIL_PROVIDERS": "smtp",
        "SMTP_HOST": sink.host,
        "SMTP_PORT": str(sink.port),
        "NOTIFY_WORKER_LEASE_S": str(LEASE_S),
        "NOTIFY_WORKER_POLL_S": "0.05",
        "NOTIFY_WORKERS": "1",
    }
    yield env
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def run_until_killed(
    env: dict[str, str], tmp_path: Path, tokens: TestTokens, stalled: asyncio.Event
) -> tuple[str, str]:
    """Start a process, send one notification, kill -9 the process once the sink stalls on
    it; returns (notification id, the schema)."""
    port = free_port()
    process = NotifyProcess({**env, "GRPC_PORT": str(port)}, tmp_path / "notify-1.log")
    await process.start()
    md = tokens.metadata(tokens.service("payment", aud=AUD))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = notify_pb2_grpc.NotifyServiceStub(channel)
            reply = await stub.SendNotification(
                send_request(), metadata=md, wait_for_ready=True, timeout=60
            )
        await asyncio.wait_for(stalled.wait(), 20)
    finally:
        process.kill()  # SIGKILL mid-send: no drain, no cleanup
        await process.wait()
    return reply.notification.id, env["DB_SCHEMA"]


async def row_of(postgres_url: str, schema: str, notification_id: str) -> Any:
    conn = await asyncpg.connect(postgres_url)
    try:
        return await conn.fetchrow(
            f'SELECT status, attempts, message_id FROM "{schema}".notifications WHERE id = $1',
            uuid.UUID(notification_id),
        )
    finally:
        await conn.close()


async def restart_and_wait_sent(
    env: dict[str, str], tmp_path: Path, tokens: TestTokens, notification_id: str
) -> pb.Notification:
    port = free_port()
    process = NotifyProcess({**env, "GRPC_PORT": str(port)}, tmp_path / "notify-2.log")
    await process.start()
    md = tokens.metadata(tokens.user("admin-1", ["admin"], aud=AUD))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = notify_pb2_grpc.NotifyServiceStub(channel)
            request = pb.GetNotificationRequest(notification_id=notification_id)
            for _ in range(600):
                reply = await stub.GetNotification(
                    request, metadata=md, wait_for_ready=True, timeout=30
                )
                if reply.notification.status == pb.NOTIFICATION_STATUS_SENT:
                    return reply.notification
                await asyncio.sleep(0.05)
    finally:
        await process.stop()
    raise AssertionError("not sent after the restart:\n" + (tmp_path / "notify-2.log").read_text())


@pytest.mark.timeout(120)
async def test_kill_after_the_server_accepted_resends_the_same_message_once(
    sink: SmtpSink,
    process_env: dict[str, str],
    tmp_path: Path,
    tokens: TestTokens,
    postgres_url: str,
) -> None:
    handler = sink.handler
    assert isinstance(handler, StallingHandler)
    handler.stall = "data"
    notification_id, schema = await run_until_killed(process_env, tmp_path, tokens, handler.stalled)
    assert sink.count() == 1  # the server kept it before the crash
    row = await row_of(postgres_url, schema, notification_id)
    assert (row["status"], row["attempts"]) == ("SENDING", 1)  # recorded before the send

    handler.stall = ""
    sent = await restart_and_wait_sent(process_env, tmp_path, tokens, notification_id)
    assert sent.attempts == 2
    messages = sink.messages()
    assert len(messages) == 2  # the bound: one extra copy for a crash in the window ...
    assert {m.message_id for m in messages} == {row["message_id"]}  # ... of the same message
    assert {m.message["X-Notification-Id"] for m in messages} == {notification_id}
    assert sent.provider_message_id == row["message_id"]


@pytest.mark.timeout(120)
async def test_kill_before_the_server_accepted_sends_once(
    sink: SmtpSink,
    process_env: dict[str, str],
    tmp_path: Path,
    tokens: TestTokens,
    postgres_url: str,
) -> None:
    handler = sink.handler
    assert isinstance(handler, StallingHandler)
    handler.stall = "rcpt"
    notification_id, schema = await run_until_killed(process_env, tmp_path, tokens, handler.stalled)
    assert sink.count() == 0
    assert (await row_of(postgres_url, schema, notification_id))["status"] == "SENDING"

    handler.stall = ""
    sent = await restart_and_wait_sent(process_env, tmp_path, tokens, notification_id)
    [kept] = sink.messages()
    assert kept.message["X-Notification-Id"] == notification_id
    assert sent.attempts == 2


async def test_accept_then_drop_resends_the_same_message_id(
    start_notify: Start, connect: object, smtp: SmtpSink
) -> None:
    app = await start_notify()
    smtp.drop_next(1)  # kept, then the line drops before the 250
    async with connect(app) as client:  # type: ignore[operator]
        reply = await client.send(send_request())
        sent = await client.wait_status(reply.notification.id, pb.NOTIFICATION_STATUS_SENT)
    messages = await smtp.wait_for(2)
    assert len(messages) == 2
    assert len({m.message_id for m in messages}) == 1
    assert messages[0].message_id == sent.provider_message_id
    assert sent.attempts == 1  # one round: the guard's immediate retry
    assert [k for k, _ in await events_of(app)] == ["tickettoken.notify.v1.NotificationSent"]
