"""An email through gRPC → queue → a real SMTP server: headers, both parts, unsubscribe headers
and the one-click link, the event, and what the logs never contain."""

from __future__ import annotations

import logging
import uuid

import aiohttp
import pytest

from meshdev.standins.smtp import SmtpSink
from tests.notify.integration.support import EMAIL, Client, events_of, send_request
from tickettoken.notify.v1 import events_pb2, notify_pb2

SENT = notify_pb2.NOTIFICATION_STATUS_SENT


async def test_email_arrives_with_headers_html_text_and_unsubscribe(
    client: Client, smtp: SmtpSink
) -> None:
    reply = await client.send(send_request(metadata={"payment_id": "pay-1"}))
    n = reply.notification
    assert n.status == notify_pb2.NOTIFICATION_STATUS_QUEUED and not reply.duplicate
    assert n.destination_masked == "a***@example.com"
    assert (n.template_id, n.template_version, n.template_locale) == (
        "ticket_confirmation",
        1,
        "en-US",
    )
    sent = await client.wait_status(n.id, SENT)
    assert (sent.provider, sent.attempts) == ("smtp", 1)

    [kept] = await smtp.wait_for(1)
    message = kept.message
    assert kept.rcpt_tos == (EMAIL,)
    assert kept.mail_from == "tickets@tickettoken.test"
    assert message["From"] == "TicketToken <tickets@tickettoken.test>"
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["Subject"] == "Your ticket for The Band: Fall Tour"
    assert kept.message_id == f"<{uuid.UUID(n.id).hex}@tickettoken.test>"
    assert sent.provider_message_id == kept.message_id
    assert message["X-Notification-Id"] == n.id
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    html, text = kept.html or "", kept.text or ""
    assert "<strong>The Band: Fall Tour</strong>" in html
    assert "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin" in html and "9xQeWvG8" in text
    assert (
        "https://explorer.solana.com/address/9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin" in text
    )
    assert "?cluster=devnet" in text and "https://tkt.example/m/abc" in text
    # RFC 8058: an https-or-http URI in angle brackets, and the one-click marker.
    unsubscribe = str(message["List-Unsubscribe"])
    assert unsubscribe.startswith("<http://127.0.0.1:") and "/unsubscribe/" in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = unsubscribe.strip("<>")
    assert url in html and url in text  # the footer links to the same place

    [(kind, event)] = await events_of(client.app)
    assert kind == events_pb2.NotificationSent.DESCRIPTOR.full_name
    assert (event.notification_id, event.provider, event.destination_masked) == (
        n.id,
        "smtp",
        "a***@example.com",
    )
    assert (event.template_id, event.template_version, event.metadata["payment_id"]) == (
        "ticket_confirmation",
        1,
        "pay-1",
    )

    # A GET (a person, or a scanner prefetching links) only shows the button ...
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as page:
            assert page.status == 200 and "<form" in await page.text()
        prefs = await client.stub.GetPreferences(
            notify_pb2.GetPreferencesRequest(user_id="buyer-1"), metadata=client.admin_md
        )
        assert list(prefs.preferences.categories) == []
        # ... the one-click POST unsubscribes (RFC 8058), a forged token does not.
        async with http.post(url, data=b"List-Unsubscribe=One-Click") as done:
            assert done.status == 200
        async with http.post(url[:-3] + "AAA", data=b"List-Unsubscribe=One-Click") as forged:
            assert forged.status == 404
    prefs = await client.stub.GetPreferences(
        notify_pb2.GetPreferencesRequest(user_id="buyer-1"), metadata=client.admin_md
    )
    # From a transactional message: everything but transactional is off on email.
    off = {(c.category, c.channel) for c in prefs.preferences.categories if not c.enabled}
    assert (notify_pb2.NOTIFICATION_CATEGORY_MARKETING, notify_pb2.CHANNEL_EMAIL) in off
    assert (notify_pb2.NOTIFICATION_CATEGORY_EVENT_UPDATES, notify_pb2.CHANNEL_EMAIL) in off
    # Transactional mail still goes out.
    again = await client.send(send_request())
    await client.wait_status(again.notification.id, SENT)


async def test_text_part_is_derived_from_html_when_the_template_has_none(
    client: Client, smtp: SmtpSink
) -> None:
    reply = await client.send(
        send_request(
            template_id="payment_failed",
            variables={
                "event_name": "Jazz <Night>",
                "amount": "$100.00",
                "failure_message": "card declined",
            },
        )
    )
    await client.wait_status(reply.notification.id, SENT)
    [kept] = await smtp.wait_for(1)
    assert "Jazz &lt;Night&gt;" in (kept.html or "")  # autoescaped in HTML
    text = kept.text or ""
    assert "Your payment of $100.00 for Jazz <Night> did not go through" in " ".join(text.split())
    assert "<p>" not in text
    assert kept.subject == "Your payment for Jazz <Night> did not go through"


async def test_inline_content_with_an_attachment(client: Client, smtp: SmtpSink) -> None:
    request = send_request(
        inline=notify_pb2.InlineContent(
            subject="Receipt {{ order }}", body_html="<p>Order <b>{{ order }}</b></p>"
        ),
        variables={"order": "o-1"},
        category=notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL,
        attachments=[
            notify_pb2.Attachment(
                filename="ticket.pdf", content_type="application/pdf", content=b"%PDF-1.4 x"
            )
        ],
    )
    reply = await client.send(request)
    await client.wait_status(reply.notification.id, SENT)
    [kept] = await smtp.wait_for(1)
    assert kept.subject == "Receipt o-1"
    [attachment] = list(kept.message.iter_attachments())
    assert attachment.get_filename() == "ticket.pdf"
    assert attachment.get_content() == b"%PDF-1.4 x"


async def test_addresses_never_reach_the_logs(
    client: Client, smtp: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    phone = "+15551239876"
    email = "private.person@example.com"
    a = await client.send(send_request(email=email))
    b = await client.send(
        send_request(
            channel=notify_pb2.CHANNEL_SMS,
            template_id="ticket_confirmation_sms",
            recipient=notify_pb2.Recipient(user_id="u-9", phone=phone),
        )
    )
    await client.wait_status(a.notification.id, SENT)
    await client.wait_status(b.notification.id, SENT, notify_pb2.NOTIFICATION_STATUS_DELIVERED)
    assert b.notification.destination_masked == "+1******9876"
    text = "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name.startswith("notify")
    )
    assert "notification accepted" in text  # the service did log these sends ...
    assert email not in text and phone not in text  # ... with the destinations masked
    assert "p***@example.com" in text
