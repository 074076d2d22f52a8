"""One-click unsubscribe (RFC 8058) on `/unsubscribe/<token>`.

* `POST` is the unsubscribe: mail clients send it with the body `List-Unsubscribe=One-Click`
  when the user clicks "unsubscribe" (no page, no login); the confirmation form below posts the
  same. Answers 200 with a short page; a second POST changes nothing more.
* `GET` (a person following the link, or a mail scanner prefetching it) only shows a page with
  the button: a GET never unsubscribes anyone.

An unknown or altered token is 404.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from aiohttp import web

from notify_service.domain.errors import NotFound
from notify_service.usecases.preferences import PreferenceCases

PATH = "/unsubscribe/{token}"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto">
<h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=html.escape(title), body=body),
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def routes(
    cases: PreferenceCases,
) -> tuple[
    Callable[[web.Request], Awaitable[web.Response]],
    Callable[[web.Request], Awaitable[web.Response]],
]:
    async def confirm_page(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if not await cases.token_is_valid(token):
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        action = html.escape(request.path, quote=True)
        return _page(
            "Unsubscribe",
            "<p>Stop receiving messages like this one?</p>"
            f'<form method="post" action="{action}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    async def unsubscribe(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        await request.read()  # `List-Unsubscribe=One-Click` (RFC 8058); nothing else is needed
        try:
            await cases.unsubscribe(token)
        except NotFound:
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
        return _page("Unsubscribed", "<p>You will not receive messages like this one again.</p>")

    return confirm_page, unsubscribe
