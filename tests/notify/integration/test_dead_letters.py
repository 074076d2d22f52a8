"""Classified retries, the dead-letter state and the operator's retry (notifyctl)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from meshdev.standins.smtp import SmtpSink
from meshkit.server import App
from tests.notify.integration.support import Start, events_of, send_request
from tickettoken.notify.v1 import notify_pb2 as pb


async def notifyctl(app: App, postgres_url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": postgres_url, "DB_SCHEMA": app.settings.schema_name}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notify_service.notifyctl",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_transient_failures_retry_then_dead_letter_then_operator_retry(
    start_notify: Start, connect: object, smtp: SmtpSink, postgres_url: str
) -> None:
    app = await start_notify(
        notify_max_attempts=2,
        provider_policies=json.dumps({"smtp": {"breaker": False, "backoff_base_s": 0.01}}),
    )
    smtp.refuse_next(6)  # 451: two rounds of the guard's three attempts
    async with connect(app) as client:  # type: ignore[operator]
        reply = await client.send(send_request())
        failed = await client.wait_status(reply.notification.id, pb.NOTIFICATION_STATUS_FAILED)
        assert failed.dead_lettered and failed.attempts == 2
        assert failed.error_code in ("provider_unavailable", "smtp_451")
        assert smtp.count() == 0
        [(_, event)] = [(k, e) for k, e in await events_of(app) if "Failed" in k]
        assert event.dead_lettered and event.notification_id == failed.id

        listed = [
            json.loads(line) for line in (await notifyctl(app, postgres_url, "list")).splitlines()
        ]
        assert [(r["id"], r["status"], r["destination"]) for r in listed] == [
            (failed.id, "DEAD_LETTERED", "a***@example.com")
        ]
        assert "ada@example.com" not in json.dumps(listed)

        retried = await notifyctl(app, postgres_url, "retry", failed.id)
        assert retried.split() == [failed.id]
        sent = await client.wait_status(failed.id, pb.NOTIFICATION_STATUS_SENT)
        assert sent.attempts == 1 and not sent.dead_lettered
        [kept] = await smtp.wait_for(1)
        assert kept.message["X-Notification-Id"] == failed.id
        assert await notifyctl(app, postgres_url, "list") == ""


async def test_a_permanent_refusal_fails_at_once(
    start_notify: Start, connect: object, smtp: SmtpSink
) -> None:
    app = await start_notify()
    smtp.refuse_next(1, permanent=True)  # 554 at DATA: the message itself
    async with connect(app) as client:  # type: ignore[operator]
        reply = await client.send(send_request())
        failed = await client.wait_status(reply.notification.id, pb.NOTIFICATION_STATUS_FAILED)
        assert (failed.error_code, failed.attempts, failed.dead_lettered) == ("smtp_554", 1, False)
