"""Templates: Jinja2 in its sandbox, strict about undefined variables, escaping HTML.

* Subjects and text bodies render with autoescape off; HTML bodies with autoescape on, so a
  variable such as a buyer's name can never inject markup. Both environments are immutable
  sandboxes (no attribute tricks, no mutation of the values passed in) with `StrictUndefined`:
  a variable the template uses but the caller did not give fails the render instead of
  rendering as an empty string.
* `required_variables` are checked first, so a caller learns every missing name at once.
* A text part is derived from the HTML when the template has none (`html_to_text`).
* Locales fall back: `fr-CA` → `fr` → the default locale (`en-US`) → its language (`en`).

Compiled templates are cached by source text (a template version's text never changes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from html.parser import HTMLParser

from jinja2 import StrictUndefined, TemplateError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from notify_service.domain.errors import MissingVariables, TemplateBroken, Violation
from notify_service.domain.model import Channel, Content, Template

MAX_RENDERED_CHARS = 512 * 1024
"""A rendered part larger than this is refused (a template loop gone wrong)."""
BUILTIN_VARIABLES = ("recipient_name", "unsubscribe_url", "notification_id")
"""Variables the service provides itself; templates may use them without declaring them."""

_TEXT = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_HTML = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True
)

# (template attribute, proto field name) of each part, in order.
PARTS = (
    ("subject_template", "subject_template"),
    ("body_text_template", "body_text_template"),
    ("body_html_template", "body_html_template"),
)


def normalise_locale(tag: str) -> str:
    """BCP 47 casing: language lower, region upper, script title (`en-us` → `en-US`)."""
    parts = tag.replace("_", "-").split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            out.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        else:
            out.append(part.lower())
    return "-".join(p for p in out if p)


def locale_candidates(requested: str, default: str) -> list[str]:
    """Locales to try, best first: exact, its language, the default, the default's language."""
    found: list[str] = []
    for tag in (requested, default):
        if not tag:
            continue
        tag = normalise_locale(tag)
        for candidate in (tag, tag.split("-")[0]):
            if candidate and candidate not in found:
                found.append(candidate)
    return found


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> object:
    env = _HTML if html else _TEXT
    return env.from_string(source)


def referenced(source: str) -> set[str]:
    """Top-level variable names a template source uses."""
    return set(meta.find_undeclared_variables(_TEXT.parse(source)))


def check_template(template: Template, field_prefix: str = "template") -> None:
    """Refuse a template that cannot be stored: syntax errors, missing parts for its channel."""
    problems: list[Violation] = []
    for attr, proto in PARTS:
        source = getattr(template, attr)
        if not source:
            continue
        try:
            _TEXT.parse(source)
        except TemplateError as exc:
            problems.append(Violation(f"{field_prefix}.{proto}", f"does not compile: {exc}"))
    if template.channel is Channel.EMAIL:
        if not template.subject_template:
            problems.append(
                Violation(f"{field_prefix}.subject_template", "an email template needs a subject")
            )
        if not template.body_text_template and not template.body_html_template:
            problems.append(
                Violation(
                    f"{field_prefix}.body_html_template",
                    "an email template needs an HTML or a text body",
                )
            )
    elif not template.body_text_template:
        problems.append(
            Violation(
                f"{field_prefix}.body_text_template",
                f"a {template.channel.value} template needs a text body",
            )
        )
    if problems:
        raise TemplateBroken(problems)


def missing_variables(required: Iterable[str], variables: Mapping[str, str]) -> list[str]:
    return sorted(n for n in set(required) if n not in variables and n not in BUILTIN_VARIABLES)


def render_part(source: str, variables: Mapping[str, str], *, html: bool, field: str) -> str:
    """Render one part (empty source → empty string)."""
    if not source:
        return ""
    try:
        compiled = _compile(source, html)
        text = str(compiled.render(variables))  # type: ignore[attr-defined]
    except UndefinedError as exc:
        raise TemplateBroken([Violation("variables", f"{field}: {exc.message}")]) from None
    except SecurityError as exc:
        raise TemplateBroken([Violation(field, f"refused by the sandbox: {exc}")]) from None
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateBroken([Violation(field, f"does not render: {exc}")]) from None
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateBroken([Violation(field, "renders to more than 512 KiB")])
    return text


def render(
    subject: str,
    body_text: str,
    body_html: str,
    variables: Mapping[str, str],
    *,
    required: Sequence[str] = (),
    channel: Channel = Channel.EMAIL,
    field_prefix: str = "",
) -> Content:
    """Render a template's parts (or inline content) with `variables`.

    Required variables are checked before anything renders (MissingVariables lists them all);
    then every part renders under StrictUndefined. The text part is derived from the HTML when
    the template has none."""
    missing = missing_variables(required, variables)
    if missing:
        raise MissingVariables(missing)
    rendered_subject = render_part(
        subject, variables, html=False, field=f"{field_prefix}subject"
    ).strip()
    text = render_part(body_text, variables, html=False, field=f"{field_prefix}body_text")
    html = (
        render_part(body_html, variables, html=True, field=f"{field_prefix}body_html")
        if channel is Channel.EMAIL
        else ""
    )
    if not text and html:
        text = html_to_text(html)
    return Content(subject=" ".join(rendered_subject.split()), body_text=text, body_html=html)


def render_template(
    template: Template, variables: Mapping[str, str], *, field_prefix: str = ""
) -> Content:
    return render(
        template.subject_template,
        template.body_text_template,
        template.body_html_template,
        variables,
        required=template.required_variables,
        channel=template.channel,
        field_prefix=field_prefix,
    )


# -- HTML → text -----------------------------------------------------------------------------

_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "table", "tr", "ul", "ol",
        "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr",
    }
)  # fmt: skip
_SKIP = frozenset({"script", "style", "head", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK:
            self.out.append("\n\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "a":
            self._links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self.out.append("\n\n")
        elif tag == "a" and self._links:
            href = self._links.pop()
            if href and not href.startswith(("mailto:", "#")):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(re.sub(r"[ \t\r\n]+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body: paragraphs and line breaks kept, links
    written out after their text, scripts and styles dropped."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    joined = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", joined).strip() + "\n"
