"""Rendering: the sandbox, StrictUndefined, HTML escaping, required variables, the derived text
part, locale fallback."""

from __future__ import annotations

import pytest

from notify_service.domain import templates as t
from notify_service.domain.errors import MissingVariables, TemplateBroken
from notify_service.domain.model import Category, Channel, Template
from notify_service.templates import shipped


def email(**fields: object) -> Template:
    values: dict[str, object] = {
        "id": "x",
        "channel": Channel.EMAIL,
        "locale": "en-US",
        "category": Category.TRANSACTIONAL,
        "subject_template": "Hi {{ name }}",
        "body_html_template": "<p>Hello {{ name }}</p>",
        "required_variables": ("name",),
    }
    values.update(fields)
    return Template(**values)  # type: ignore[arg-type]


def test_html_is_escaped_text_and_subject_are_not() -> None:
    content = t.render_template(email(), {"name": "<script>x</script> & co"})
    assert content.body_html == "<p>Hello &lt;script&gt;x&lt;/script&gt; &amp; co</p>"
    assert content.subject == "Hi <script>x</script> & co"
    assert content.body_text == "Hello <script>x</script> & co\n"


def test_required_variables_are_all_listed_before_rendering() -> None:
    template = email(required_variables=("name", "venue", "when"))
    with pytest.raises(MissingVariables) as info:
        t.render_template(template, {"venue": "Hall"})
    assert info.value.names == ("name", "when")
    assert [v.field for v in info.value.violations] == ['variables["name"]', 'variables["when"]']


def test_an_undeclared_variable_the_template_uses_fails_instead_of_rendering_empty() -> None:
    template = email(required_variables=(), subject_template="Hi {{ nobody }}")
    with pytest.raises(TemplateBroken) as info:
        t.render_template(template, {"name": "A"})
    assert "nobody" in info.value.violations[0].description


def test_the_sandbox_refuses_unsafe_attribute_access() -> None:
    template = email(subject_template="{{ name.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateBroken):
        t.render_template(template, {"name": "A"})
    mutate = email(subject_template="{{ items.append(1) }}", required_variables=())
    with pytest.raises(TemplateBroken):
        t.render(mutate.subject_template, "", "", {"items": []}, channel=Channel.EMAIL)  # type: ignore[dict-item]


def test_syntax_errors_and_missing_parts_are_refused_at_upsert() -> None:
    with pytest.raises(TemplateBroken) as info:
        t.check_template(email(subject_template="{{ name "))
    assert info.value.violations[0].field == "template.subject_template"
    with pytest.raises(TemplateBroken) as info:
        t.check_template(email(subject_template="", body_html_template=""))
    assert {v.field for v in info.value.violations} == {
        "template.subject_template",
        "template.body_html_template",
    }
    with pytest.raises(TemplateBroken):
        t.check_template(email(channel=Channel.SMS, body_text_template=""))


def test_text_is_derived_from_html() -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body><h1>Title</h1>"
        "<p>Para one with <a href='https://x.test/a'>a link</a>.</p>"
        "<ul><li>one</li><li>two</li></ul><p>Line<br>break &amp; more</p>"
        "<script>alert(1)</script></body></html>"
    )
    text = t.html_to_text(html)
    assert text == (
        "Title\n\nPara one with a link (https://x.test/a).\n\n- one\n- two\n\nLine\nbreak & more\n"
    )


def test_locale_fallback_order() -> None:
    assert t.locale_candidates("es-mx", "en-US") == ["es-MX", "es", "en-US", "en"]
    assert t.locale_candidates("", "en-US") == ["en-US", "en"]
    assert t.locale_candidates("en_gb", "en-US") == ["en-GB", "en", "en-US"]
    assert t.normalise_locale("zh-hant-tw") == "zh-Hant-TW"


def test_the_shipped_templates_render_with_their_required_variables() -> None:
    templates = shipped()
    ids = {tpl.id for tpl in templates}
    assert ids == {
        "ticket_confirmation",
        "ticket_confirmation_sms",
        "payment_failed",
        "refund_issued",
        "ticket_transferred",
        "ticket_delayed",
    }
    for template in templates:
        t.check_template(template)
        values = {name: f"<{name}>" for name in template.required_variables}
        values.update(recipient_name="Ada", unsubscribe_url="https://u.test/x")
        content = t.render_template(template, values)
        assert content.body_text
        if template.channel is Channel.EMAIL:
            assert content.subject and content.body_html
            assert "https://u.test/x" in content.body_html  # every email can be unsubscribed from
    confirmation = next(
        x for x in templates if x.id == "ticket_confirmation" and x.locale == "en-US"
    )
    content = t.render_template(
        confirmation,
        {
            "event_name": "E",
            "venue_name": "V",
            "event_starts_at": "now",
            "ticket_id": "t1",
            "mint_address": "Mint111",
            "cluster": "mainnet-beta",
            "metadata_uri": "https://m.test/1",
            "recipient_name": "",
            "unsubscribe_url": "https://u.test",
        },
    )
    assert 'https://explorer.solana.com/address/Mint111"' in content.body_html  # no ?cluster
    assert "https://m.test/1" in content.body_html
