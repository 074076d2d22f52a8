"""The messaging stand-ins (meshdev.standins.smtp / sendgrid / twilio), driven through the
official clients the notify service uses: aiosmtplib, the `sendgrid` SDK and the `twilio` SDK,
pointed at the stand-ins exactly as the service points them. Webhooks land on a real HTTP
receiver in this event loop that checks them with the providers' own validators
(`sendgrid.helpers.eventwebhook.EventWebhook`, `twilio.request_validator.RequestValidator`).

In-process servers run in this event loop; the child-process forms are the ones `make run`
starts (`meshdev.embedded.DevSmtp`, `SendGridStandIn`, `TwilioStandIn`). The `sendgrid` SDK and
twilio's default client are synchronous, so they are called through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import aiosmtplib
import psutil
import pytest
import sendgrid
from aiohttp import web
from python_http_client import exceptions as sg_errors
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sendgrid.helpers.mail import CustomArg, Header, Mail
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from meshdev.embedded import DevSmtp, SendGridStandIn, TwilioStandIn
from meshdev.standins.sendgrid import DEV_API_KEY, SendGridServer
from meshdev.standins.smtp import SmtpSink
from meshdev.standins.twilio import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, DEV_PHONE_NUMBER, TwilioServer

HANDSET = "+15551230001"
OTHER_HANDSET = "+15551230002"


# -- a webhook receiver that checks signatures with the providers' validators -----------------


@dataclass
class Received:
    path: str
    url: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)
        return events


@dataclass
class Receiver:
    """Answers 200 to a webhook whose signature verifies, 403 otherwise, and keeps both."""

    sendgrid_public_key: str = ""
    twilio_auth_token: str = DEV_AUTH_TOKEN
    url: str = ""
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        url = str(request.url)
        if request.path.startswith("/sendgrid/"):
            verified = EventWebhook(self.sendgrid_public_key).verify_signature(
                body.decode(),
                request.headers.get(EventWebhookHeader.SIGNATURE, ""),
                request.headers.get(EventWebhookHeader.TIMESTAMP, ""),
            )
        else:
            params = dict(parse_qsl(body.decode(), keep_blank_values=True))
            verified = RequestValidator(self.twilio_auth_token).validate(
                url, params, request.headers.get("X-Twilio-Signature", "")
            )
        self.received.append(Received(request.path, url, dict(request.headers), body, verified))
        self.arrived.set()
        return web.Response(status=200 if verified else 403)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait(self, path: str, count: int, timeout: float = 10.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.at(path)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.at(path)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", hooks.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    hooks.url = f"http://{host}:{port}"
    try:
        yield hooks
    finally:
        await runner.cleanup()


# -- SMTP ---------------------------------------------------------------------------------------


def ticket_email(to: str = "buyer@example.test", *, marker: str | None = None) -> EmailMessage:
    marker = marker or uuid.uuid4().hex
    message = EmailMessage()
    message["From"] = "TicketToken <tickets@tickettoken.test>"
    message["To"] = to
    message["Subject"] = "Your tickets for Café Night"
    message["Message-ID"] = f"<{marker}@tickettoken.test>"
    message["List-Unsubscribe"] = "<https://tickettoken.test/unsubscribe/abc>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(f"Your ticket {marker} is attached.\n")
    message.add_alternative(f"<p>Your ticket <b>{marker}</b> is attached.</p>\n", subtype="html")
    return message


@pytest.fixture
async def smtp(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    async with SmtpSink(tmp_path / "mail") as sink:
        yield sink


async def send(sink: SmtpSink, message: EmailMessage, **kwargs: Any) -> Any:
    return await aiosmtplib.send(message, hostname=sink.host, port=sink.port, timeout=10, **kwargs)


async def test_smtp_keeps_each_message_as_eml_with_headers_and_both_parts(smtp: SmtpSink) -> None:
    message = ticket_email(marker="m1")
    errors, reply = await send(
        smtp, message, recipients=["buyer@example.test", "audit@tickettoken.test"]
    )
    assert errors == {} and reply == "OK"

    [kept] = await smtp.wait_for(1)
    assert kept.path.parent == smtp.directory
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-\d{6}-m1@tickettoken\.test\.eml", kept.path.name)
    assert kept.mail_from == "tickets@tickettoken.test"
    assert kept.rcpt_tos == ("buyer@example.test", "audit@tickettoken.test")  # Bcc included
    assert kept.message_id == "<m1@tickettoken.test>"
    assert kept.subject == "Your tickets for Café Night"
    assert kept.message["To"] == "buyer@example.test"
    assert kept.message["List-Unsubscribe"] == "<https://tickettoken.test/unsubscribe/abc>"
    assert kept.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert kept.message.get_content_type() == "multipart/alternative"
    assert kept.text == "Your ticket m1 is attached.\n"
    assert kept.html == "<p>Your ticket <b>m1</b> is attached.</p>\n"

    # File names sort in arrival order.
    await send(smtp, ticket_email(marker="m2"))
    await send(smtp, ticket_email(marker="m3"))
    kept_all = await smtp.wait_for(3)
    assert [m.message_id for m in kept_all] == [f"<m{i}@tickettoken.test>" for i in (1, 2, 3)]
    assert [p.name for p in smtp.mailbox.paths()] == sorted(p.name for p in smtp.mailbox.paths())
    assert smtp.mailbox.find(subject="Your tickets for Café Night", to="audit@tickettoken.test")


async def test_smtp_refuses_transiently_then_permanently_and_keeps_nothing_refused(
    smtp: SmtpSink,
) -> None:
    smtp.refuse_next(1)
    with pytest.raises(aiosmtplib.SMTPDataError) as transient:
        await send(smtp, ticket_email())
    assert transient.value.code == 451

    smtp.refuse_next(1, permanent=True)
    with pytest.raises(aiosmtplib.SMTPDataError) as permanent:
        await send(smtp, ticket_email())
    assert permanent.value.code == 554
    assert smtp.count() == 0

    smtp.refuse_recipients("gone@example.test")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as bounced:
        await send(smtp, ticket_email("gone@example.test"))
    assert bounced.value.recipients[0].code == 550

    await send(smtp, ticket_email())  # the script is used up: accepted again
    assert smtp.count() == 1
    assert (smtp.handler.refused, smtp.handler.accepted) == (2, 1)


async def test_smtp_accept_then_drop_keeps_the_message_but_the_client_never_hears(
    smtp: SmtpSink,
) -> None:
    smtp.drop_next(1)
    message = ticket_email(marker="dropped")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(smtp, message)
    [kept] = await smtp.wait_for(1)
    assert kept.message_id == "<dropped@tickettoken.test>"
    assert smtp.handler.dropped == 1

    # A sender that retries blindly delivers it twice: what the notify service must bound.
    await send(smtp, message)
    assert [m.message_id for m in smtp.messages()] == ["<dropped@tickettoken.test>"] * 2


async def test_smtp_auth_is_enforced_when_credentials_are_set(tmp_path: Path) -> None:
    async with SmtpSink(tmp_path / "mail", credentials=("notify", "s3cret")) as sink:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as anonymous:
            await send(sink, ticket_email())
        assert anonymous.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await send(sink, ticket_email(), username="notify", password="wrong")
        await send(sink, ticket_email(), username="notify", password="s3cret")
        assert sink.count() == 1


async def test_dev_smtp_runs_as_a_child_process_with_faults_over_smtp(tmp_path: Path) -> None:
    with DevSmtp(tmp_path / "smtp") as server:
        assert server.pid is not None and psutil.pid_exists(server.pid)
        await aiosmtplib.send(ticket_email(marker="child"), hostname=server.host, port=server.port)
        [kept] = await asyncio.to_thread(server.wait_for, 1)
        assert kept.message_id == "<child@tickettoken.test>"
        assert kept.path.parent == server.mail_dir

        await asyncio.to_thread(server.refuse_next, 1, permanent=True)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await aiosmtplib.send(ticket_email(), hostname=server.host, port=server.port)
        assert refused.value.code == 554
        await asyncio.to_thread(server.drop_next, 1)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await aiosmtplib.send(ticket_email(), hostname=server.host, port=server.port)
        assert len(await asyncio.to_thread(server.wait_for, 2)) == 2

        # Its own scripting verb answers 501 to nonsense, never silently.
        with smtplib.SMTP(server.host, server.port) as client:
            assert client.docmd("XFAULT", "EXPLODE")[0] == 501
        pid = server.pid
    assert not psutil.pid_exists(pid)


# -- SendGrid -----------------------------------------------------------------------------------


@pytest.fixture
async def sg(receiver: Receiver) -> AsyncIterator[SendGridServer]:
    async with SendGridServer(webhook_url=receiver.url + "/sendgrid/events") as server:
        receiver.sendgrid_public_key = server.public_key
        yield server


def sg_client(server: SendGridServer | SendGridStandIn, key: str = DEV_API_KEY) -> Any:
    """The SDK pointed at the stand-in, as the notify service configures it."""
    return sendgrid.SendGridAPIClient(api_key=key, host=server.url)


def ticket_mail(marker: str = "n1", to: str = "buyer@example.test") -> Mail:
    mail = Mail(
        from_email="tickets@tickettoken.test",
        to_emails=to,
        subject="Your tickets",
        plain_text_content=f"ticket {marker}",
        html_content=f"<p>ticket {marker}</p>",
    )
    mail.custom_arg = [CustomArg("notification_id", marker), CustomArg("env", "test")]
    mail.header = Header("List-Unsubscribe", "<https://tickettoken.test/u/abc>")
    return mail


async def sg_send(
    server: SendGridServer | SendGridStandIn, mail: Any, key: str = DEV_API_KEY
) -> Any:
    return await asyncio.to_thread(sg_client(server, key).send, mail)


async def test_sendgrid_refuses_an_unknown_api_key_with_its_error_shape(sg: SendGridServer) -> None:
    with pytest.raises(sg_errors.UnauthorizedError) as refused:
        await sg_send(sg, ticket_mail(), key="SG.not-configured")
    assert refused.value.status_code == 401
    assert json.loads(refused.value.body) == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(sg.url + "/v3/mail/send", json={}) as response,
    ):
        assert response.status == 401
        assert (await response.json())["errors"][0]["message"] == "authorization required"
    assert sg.messages == []


async def test_sendgrid_accepts_a_send_with_202_and_keeps_it(sg: SendGridServer) -> None:
    response = await sg_send(sg, ticket_mail("n1"))
    assert response.status_code == 202
    assert response.body == b""
    message_id = response.headers["X-Message-Id"]
    assert message_id and response.headers["X-RateLimit-Limit"] == "600"

    [kept] = sg.messages
    assert kept.message_id == message_id
    assert kept.recipients() == ["buyer@example.test"]
    assert kept.from_ == {"email": "tickets@tickettoken.test"}
    assert kept.subject == "Your tickets"
    assert (kept.text, kept.html) == ("ticket n1", "<p>ticket n1</p>")
    assert kept.custom_args == {"notification_id": "n1", "env": "test"}
    assert kept.headers == {"List-Unsubscribe": "<https://tickettoken.test/u/abc>"}


async def test_sendgrid_answers_400_with_every_error_for_a_malformed_body(
    sg: SendGridServer,
) -> None:
    body = {
        "personalizations": [{"to": [{"email": "not-an-address"}]}],
        "content": [
            {"type": "text/html", "value": "<p>x</p>"},
            {"type": "text/plain", "value": "x"},
        ],
    }
    with pytest.raises(sg_errors.BadRequestsError) as bad:
        await sg_send(sg, body)
    fields = {e["field"] for e in json.loads(bad.value.body)["errors"]}
    assert fields == {"personalizations.0.to.0.email", "from", "subject", "content"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            sg.url + "/v3/mail/send",
            data=b"{not json",
            headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        ) as response,
    ):
        assert response.status == 400
    assert sg.messages == []


async def test_sendgrid_sends_rate_limit_headers_then_429_beyond_the_limit(
    sg: SendGridServer,
) -> None:
    sg.window.limit = 2
    sg.window.clock = lambda: 1_000_000.0  # one window for the whole test
    first = await sg_send(sg, ticket_mail("a"))
    second = await sg_send(sg, ticket_mail("b"))
    assert [r.headers["X-RateLimit-Remaining"] for r in (first, second)] == ["1", "0"]
    with pytest.raises(sg_errors.TooManyRequestsError) as limited:
        await sg_send(sg, ticket_mail("c"))
    headers = limited.value.headers
    assert limited.value.status_code == 429
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("2", "0")
    assert headers["X-RateLimit-Reset"] == "1000020"  # the end of the 60 s window, epoch seconds
    assert json.loads(limited.value.body)["errors"][0]["message"] == "too many requests"
    assert len(sg.messages) == 2


async def test_sendgrid_scripted_faults_5xx_429_and_latency(sg: SendGridServer) -> None:
    sg.fail_next(1, status=503)
    with pytest.raises(sg_errors.ServiceUnavailableError):
        await sg_send(sg, ticket_mail())
    sg.fail_next(1, status=500)
    with pytest.raises(sg_errors.InternalServerError):
        await sg_send(sg, ticket_mail())
    sg.throttle_next(1, retry_after=7)
    with pytest.raises(sg_errors.TooManyRequestsError) as throttled:
        await sg_send(sg, ticket_mail())
    assert throttled.value.headers["Retry-After"] == "7"
    assert sg.messages == []

    sg.slow_next(1, delay_s=0.3)
    started = time.monotonic()
    assert (await sg_send(sg, ticket_mail())).status_code == 202
    assert time.monotonic() - started >= 0.3
    assert len(sg.messages) == 1


async def test_sendgrid_event_webhook_is_signed_so_eventwebhook_verifies_it(
    sg: SendGridServer, receiver: Receiver
) -> None:
    response = await sg_send(sg, ticket_mail("n7"))
    message_id = response.headers["X-Message-Id"]

    delivery = await sg.emit(message_id, "delivered")
    assert delivery.status == 200  # the receiver verified it with EventWebhook
    [hook] = receiver.at("/sendgrid/events")
    assert hook.verified
    [event] = hook.events
    assert event["event"] == "delivered"
    assert event["email"] == "buyer@example.test"
    assert event["sg_message_id"].startswith(message_id + ".")
    assert event["sg_event_id"] and isinstance(event["timestamp"], int)
    assert (event["notification_id"], event["env"]) == ("n7", "test")  # custom_args echoed

    # Verified again here, from the exact bytes and headers that were posted ...
    signature = hook.headers[EventWebhookHeader.SIGNATURE]
    timestamp = hook.headers[EventWebhookHeader.TIMESTAMP]
    key = EventWebhook().convert_public_key_to_ecdsa(sg.public_key)
    webhook = EventWebhook()
    assert webhook.verify_signature(hook.body.decode(), signature, timestamp, key)
    # ... and refused once anything is tampered with: the payload, the timestamp.
    tampered = hook.body.decode().replace('"delivered"', '"bounce"')
    assert not webhook.verify_signature(tampered, signature, timestamp, key)
    assert not webhook.verify_signature(hook.body.decode(), signature, str(int(timestamp) + 1), key)
    # The PEM form is the same key.
    assert "".join(sg.public_key_pem.splitlines()[1:-1]) == sg.public_key

    # A forged POST (signed with another key) is refused by the receiver.
    forged = await sg.emit(message_id, "bounce", forge=True)
    assert forged.status == 403
    assert not receiver.at("/sendgrid/events")[-1].verified

    # A bounce for one recipient, backdated (what a stale receipt looks like).
    old = int(time.time()) - 3600
    stale = await sg.emit(message_id, "bounce", email="buyer@example.test", signed_at=old)
    assert stale.status == 200
    [bounce] = receiver.at("/sendgrid/events")[-1].events
    assert (bounce["event"], bounce["timestamp"], bounce["type"]) == ("bounce", old, "bounce")
    assert stale.headers[EventWebhookHeader.TIMESTAMP] == str(old)


async def test_sendgrid_automatic_events_processed_then_delivered_or_bounce(
    sg: SendGridServer, receiver: Receiver
) -> None:
    sg.auto_events = True
    sg.set_outcome("gone@example.test", "bounce")
    await sg_send(sg, ticket_mail("ok", to="buyer@example.test"))
    await sg_send(sg, ticket_mail("gone", to="gone@example.test"))
    hooks = await receiver.wait("/sendgrid/events", 4)
    assert all(h.verified for h in hooks)
    seen = {(e["notification_id"], e["event"]) for h in hooks for e in h.events}
    assert seen == {
        ("ok", "processed"),
        ("ok", "delivered"),
        ("gone", "processed"),
        ("gone", "bounce"),
    }
    await sg.idle()
    assert [d.status for d in sg.deliveries] == [200] * 4
    # Every event has its own id (the receiver's deduplication key).
    ids = [e["sg_event_id"] for h in hooks for e in h.events]
    assert len(set(ids)) == len(ids) == 4


async def test_sendgrid_stand_in_process_keeps_its_key_and_is_driven_by_control_calls(
    tmp_path: Path, receiver: Receiver
) -> None:
    base = tmp_path / "sendgrid"
    server = SendGridStandIn(base, webhook_url=receiver.url + "/sendgrid/events")
    public_key = server.public_key  # known before start: the service is configured with it
    receiver.sendgrid_public_key = public_key
    with server:
        assert server.settings()["public_key"] == public_key
        response = await sg_send(server, ticket_mail("p1"))
        assert response.status_code == 202
        [kept] = await asyncio.to_thread(server.messages)
        assert kept["message_id"] == response.headers["X-Message-Id"]
        assert kept["custom_args"]["notification_id"] == "p1"

        delivery = await asyncio.to_thread(server.emit, kept["message_id"], "delivered")
        assert delivery["status"] == 200
        assert receiver.at("/sendgrid/events")[-1].verified

        await asyncio.to_thread(server.fail_next, 1, 503)
        with pytest.raises(sg_errors.ServiceUnavailableError):
            await sg_send(server, ticket_mail())
    # The same signing key after a restart.
    with SendGridStandIn(base) as again:
        assert again.settings()["public_key"] == public_key


# -- Twilio -------------------------------------------------------------------------------------


@pytest.fixture
async def tw(receiver: Receiver) -> AsyncIterator[TwilioServer]:
    async with TwilioServer(inbound_url=receiver.url + "/twilio/inbound") as server:
        yield server


@pytest.fixture
async def twilio_client(tw: TwilioServer) -> AsyncIterator[Client]:
    """The async SDK client pointed at the stand-in, as the notify service configures it."""
    http = AsyncTwilioHttpClient()
    client = Client(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, http_client=http)
    client.api.base_url = tw.url
    try:
        yield client
    finally:
        await http.close()


async def test_twilio_refuses_wrong_credentials_with_20003(tw: TwilioServer) -> None:
    http = AsyncTwilioHttpClient()
    client = Client(DEV_ACCOUNT_SID, "wrong-token", http_client=http)
    client.api.base_url = tw.url
    try:
        with pytest.raises(TwilioRestException) as refused:
            await client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="hi")
    finally:
        await http.close()
    assert (refused.value.status, refused.value.code) == (401, 20003)
    async with (
        aiohttp.ClientSession() as raw,
        raw.post(
            f"{tw.url}/2010-04-01/Accounts/{DEV_ACCOUNT_SID}/Messages.json",
            data={"To": HANDSET, "From": DEV_PHONE_NUMBER, "Body": "hi"},
        ) as response,
    ):
        assert response.status == 401
        assert await response.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }
    assert tw.messages == {}


async def test_twilio_creates_a_message_201_with_an_sm_sid(
    tw: TwilioServer, twilio_client: Client
) -> None:
    message = await twilio_client.messages.create_async(
        to=HANDSET, from_=DEV_PHONE_NUMBER, body="Your ticket is ready"
    )
    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid or "")
    assert (message.status, message.to, message.from_) == ("queued", HANDSET, DEV_PHONE_NUMBER)
    assert message.account_sid == DEV_ACCOUNT_SID
    assert tw.message(message.sid or "").body == "Your ticket is ready"
    fetched = await twilio_client.messages(message.sid or "").fetch_async()
    assert fetched.sid == message.sid

    # A Messaging Service instead of From: accepted.
    via_service = await twilio_client.messages.create_async(
        to=HANDSET, messaging_service_sid="MG" + "0" * 32, body="hi"
    )
    assert via_service.status == "accepted"

    # The synchronous client (requests) is pointed the same way.
    sync_client = Client(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN)
    sync_client.api.base_url = tw.url
    sync = await asyncio.to_thread(
        sync_client.messages.create, to=HANDSET, from_=DEV_PHONE_NUMBER, body="sync"
    )
    assert sync.status == "queued"


async def test_twilio_invalid_to_is_21211_and_other_400s(
    tw: TwilioServer, twilio_client: Client
) -> None:
    for to in ("12345", "+15005550001"):
        with pytest.raises(TwilioRestException) as invalid:
            await twilio_client.messages.create_async(to=to, from_=DEV_PHONE_NUMBER, body="x")
        assert (invalid.value.status, invalid.value.code) == (400, 21211)
    with pytest.raises(TwilioRestException) as no_body:
        await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER)
    assert no_body.value.code == 21602
    with pytest.raises(TwilioRestException) as too_long:
        await twilio_client.messages.create_async(
            to=HANDSET, from_=DEV_PHONE_NUMBER, body="x" * 1601
        )
    assert too_long.value.code == 21617
    assert tw.messages == {}


async def test_twilio_answers_20429_beyond_its_rate_and_concurrency(
    tw: TwilioServer, twilio_client: Client
) -> None:
    tw.window.limit = 2
    tw.window.clock = lambda: 5_000.0
    for _ in range(2):
        await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")
    with pytest.raises(TwilioRestException) as limited:
        await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")
    assert (limited.value.status, limited.value.code) == (429, 20429)

    tw.window.limit = None
    tw.max_concurrency = 2
    tw.faults.latency_s = 0.3
    results = await asyncio.gather(
        *(
            twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, TwilioRestException)]
    assert [(r.status, r.code) for r in refused] == [(429, 20429)]
    assert tw.max_in_flight == 3 and len(tw.messages) == 4


async def test_twilio_scripted_faults(tw: TwilioServer, twilio_client: Client) -> None:
    tw.fail_next(1, status=500)
    with pytest.raises(TwilioRestException) as failed:
        await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")
    assert (failed.value.status, failed.value.code) == (500, 20500)
    tw.fail_next(1, status=503)
    with pytest.raises(TwilioRestException) as unavailable:
        await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")
    assert (unavailable.value.status, unavailable.value.code) == (503, 20503)
    tw.throttle_next(1, retry_after=2)
    with pytest.raises(TwilioRestException) as throttled:
        await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")
    assert (throttled.value.status, throttled.value.code) == (429, 20429)
    assert tw.messages == {}
    tw.slow_next(1, delay_s=0.3)
    started = time.monotonic()
    await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")
    assert time.monotonic() - started >= 0.3


async def test_twilio_status_callbacks_are_signed_so_requestvalidator_accepts_them(
    tw: TwilioServer, twilio_client: Client, receiver: Receiver
) -> None:
    callback = receiver.url + "/twilio/status?notification=n1"
    tw.set_outcome(OTHER_HANDSET, "undelivered", 30003)
    ok = await twilio_client.messages.create_async(
        to=HANDSET, from_=DEV_PHONE_NUMBER, body="x", status_callback=callback
    )
    failed = await twilio_client.messages.create_async(
        to=OTHER_HANDSET, from_=DEV_PHONE_NUMBER, body="x", status_callback=callback
    )
    hooks = await receiver.wait("/twilio/status", 4)
    assert all(h.verified for h in hooks)
    await tw.idle()
    assert [d.status for d in tw.deliveries] == [200] * 4
    by_sid: dict[str, list[dict[str, str]]] = {}
    for hook in hooks:
        by_sid.setdefault(hook.form["MessageSid"], []).append(hook.form)
    assert [f["MessageStatus"] for f in by_sid[ok.sid or ""]] == ["sent", "delivered"]
    assert [f["MessageStatus"] for f in by_sid[failed.sid or ""]] == ["sent", "undelivered"]
    assert by_sid[failed.sid or ""][-1]["ErrorCode"] == "30003"
    assert "ErrorCode" not in by_sid[ok.sid or ""][-1]
    assert tw.message(failed.sid or "").status == "undelivered"
    fetched = await twilio_client.messages(failed.sid or "").fetch_async()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)

    # Verified again from what was posted, and refused once tampered with.
    hook = hooks[-1]
    validator = RequestValidator(DEV_AUTH_TOKEN)
    signature = hook.headers["X-Twilio-Signature"]
    assert hook.url == callback
    assert validator.validate(hook.url, hook.form, signature)
    assert not validator.validate(hook.url, {**hook.form, "MessageStatus": "delivered"}, signature)
    assert not validator.validate(hook.url.replace("n1", "n2"), hook.form, signature)
    assert not RequestValidator("another-token").validate(hook.url, hook.form, signature)

    # A callback on demand, and a forged one that the receiver refuses.
    emitted = await tw.emit_status(ok.sid or "", "failed", 30008)
    assert emitted.status == 200
    forged = await tw.emit_status(ok.sid or "", "delivered", forge=True)
    assert forged.status == 403


async def test_twilio_inbound_stop_is_posted_signed_and_opts_the_handset_out(
    tw: TwilioServer, twilio_client: Client, receiver: Receiver
) -> None:
    delivery = await tw.inbound(HANDSET, body="STOP")
    assert delivery.status == 200
    [hook] = receiver.at("/twilio/inbound")
    assert hook.verified
    form = hook.form
    assert (form["From"], form["To"], form["Body"]) == (HANDSET, DEV_PHONE_NUMBER, "STOP")
    assert form["OptOutType"] == "STOP" and form["SmsStatus"] == "received"
    assert re.fullmatch(r"SM[0-9a-f]{32}", form["MessageSid"])
    assert form["AccountSid"] == DEV_ACCOUNT_SID

    with pytest.raises(TwilioRestException) as unsubscribed:
        await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")
    assert (unsubscribed.value.status, unsubscribed.value.code) == (400, 21610)

    await tw.inbound(HANDSET, body="START")
    await twilio_client.messages.create_async(to=HANDSET, from_=DEV_PHONE_NUMBER, body="x")

    forged = await tw.inbound(HANDSET, body="STOP", forge=True)
    assert forged.status == 403


async def test_twilio_stand_in_process_callbacks_and_inbound(
    tmp_path: Path, receiver: Receiver
) -> None:
    with TwilioStandIn(tmp_path / "twilio", inbound_url=receiver.url + "/twilio/inbound") as server:
        client = Client(server.account_sid, server.auth_token)
        client.api.base_url = server.url
        message = await asyncio.to_thread(
            client.messages.create,
            to=HANDSET,
            from_=DEV_PHONE_NUMBER,
            body="x",
            status_callback=receiver.url + "/twilio/status",
        )
        hooks = await receiver.wait("/twilio/status", 2)
        assert [h.form["MessageStatus"] for h in hooks] == ["sent", "delivered"]
        assert all(h.verified for h in hooks)
        [kept] = await asyncio.to_thread(server.messages)
        assert (kept["sid"], kept["status"]) == (message.sid, "delivered")

        reply = await asyncio.to_thread(server.inbound, HANDSET, "STOP")
        assert reply["status"] == 200
        assert receiver.at("/twilio/inbound")[-1].form["Body"] == "STOP"
        await asyncio.to_thread(server.throttle_next, 1)
        with pytest.raises(TwilioRestException) as throttled:
            await asyncio.to_thread(
                client.messages.create, to=OTHER_HANDSET, from_=DEV_PHONE_NUMBER, body="x"
            )
        assert throttled.value.code == 20429
