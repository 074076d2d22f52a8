"""Templates over gRPC: versions, optimistic concurrency, locales with fallback, previews that
escape HTML, refusals; each notification records the version it used."""

from __future__ import annotations

import uuid

import grpc
import pytest

from meshdev.testing.rpc import reason, violations
from tests.notify.integration.support import Client, send_request
from tickettoken.notify.v1 import notify_pb2 as pb


def upsert(template: pb.Template, expected: int = 0) -> pb.UpsertTemplateRequest:
    return pb.UpsertTemplateRequest(
        idempotency_key=str(uuid.uuid4()), template=template, expected_version=expected
    )


def greeting(subject: str, locale: str = "en-US") -> pb.Template:
    return pb.Template(
        id="greeting",
        channel=pb.CHANNEL_EMAIL,
        locale=locale,
        category=pb.NOTIFICATION_CATEGORY_ACCOUNT,
        subject_template=subject,
        body_html_template="<p>Hello {{ name }}</p>",
        required_variables=["name"],
    )


async def test_versions_locales_previews_and_the_version_a_notification_used(
    client: Client,
) -> None:
    md = client.admin_md
    first = await client.stub.UpsertTemplate(upsert(greeting("Hi {{ name }}")), metadata=md)
    assert (first.created, first.template.version) == (True, 1)
    second = await client.stub.UpsertTemplate(
        upsert(greeting("Hello {{ name }}"), expected=1), metadata=md
    )
    assert (second.created, second.template.version) == (False, 2)
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await client.stub.UpsertTemplate(upsert(greeting("x {{ name }}"), expected=1), metadata=md)
    assert reason(stale.value) == "TEMPLATE_VERSION_MISMATCH"
    es = await client.stub.UpsertTemplate(upsert(greeting("Hola {{ name }}", "es")), metadata=md)
    assert es.template.version == 1

    old = await client.stub.GetTemplate(
        pb.GetTemplateRequest(template_id="greeting", version=1), metadata=md
    )
    assert old.template.subject_template == "Hi {{ name }}"

    preview = await client.stub.RenderTemplate(
        pb.RenderTemplateRequest(
            template_id="greeting", locale="es-MX", variables={"name": "<b>Ana</b>"}
        ),
        metadata=md,
    )
    assert preview.subject == "Hola <b>Ana</b>"  # subjects are text
    assert preview.body_html == "<p>Hello &lt;b&gt;Ana&lt;/b&gt;</p>"  # HTML is escaped
    assert preview.body_text.strip() == "Hello <b>Ana</b>"
    fallback = await client.stub.RenderTemplate(
        pb.RenderTemplateRequest(template_id="greeting", locale="fr-CA", variables={"name": "A"}),
        metadata=md,
    )
    assert (fallback.subject, fallback.template_version) == ("Hello A", 2)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.stub.RenderTemplate(
            pb.RenderTemplateRequest(template_id="greeting"), metadata=md
        )
    assert missing.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(missing.value) == [('variables["name"]', "required by the template")]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await client.stub.GetTemplate(pb.GetTemplateRequest(template_id="nope"), metadata=md)
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND

    sent = await client.send(
        send_request(template_id="greeting", variables={"name": "Ada"}, key=str(uuid.uuid4()))
    )
    assert (sent.notification.template_version, sent.notification.template_locale) == (2, "en-US")
    assert sent.notification.subject == "Hello Ada"


async def test_bad_templates_are_refused(client: Client) -> None:
    md = client.admin_md
    broken = greeting("Hi {{ name ")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.UpsertTemplate(upsert(broken), metadata=md)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(info.value)[0][0] == "template.subject_template"
    sms = pb.Template(
        id="ticket_confirmation",  # shipped for EMAIL
        channel=pb.CHANNEL_SMS,
        category=pb.NOTIFICATION_CATEGORY_TRANSACTIONAL,
        body_text_template="x",
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.UpsertTemplate(upsert(sms), metadata=md)
    assert reason(info.value) == "TEMPLATE_CHANNEL_MISMATCH"
    # The sandbox refuses attribute games.
    evil = greeting("{{ name.__class__.__mro__ }}")
    await client.stub.UpsertTemplate(upsert(evil), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.RenderTemplate(
            pb.RenderTemplateRequest(template_id="greeting", variables={"name": "x"}), metadata=md
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_purchase_journey_templates_ship(client: Client) -> None:
    for template_id in (
        "ticket_confirmation",
        "ticket_confirmation_sms",
        "payment_failed",
        "refund_issued",
        "ticket_transferred",
        "ticket_delayed",
    ):
        found = await client.stub.GetTemplate(
            pb.GetTemplateRequest(template_id=template_id), metadata=client.admin_md
        )
        assert found.template.version == 1
        assert found.template.category == pb.NOTIFICATION_CATEGORY_TRANSACTIONAL
