"""Page sizes and page tokens bound to their query (meshkit.paging)."""

from __future__ import annotations

import base64
import json

import pytest

from meshkit.context import CallInfo, Principal, call_var
from meshkit.errors import InvalidArgument
from meshkit.paging import MAX_PAGE_SIZE, Page
from tickettoken.payment.v1 import payment_pb2


def as_caller(subject: str) -> None:
    call_var.set(CallInfo("/svc/List", "rid", Principal(subject), None))


def test_sizes_default_and_cap() -> None:
    as_caller("u1")
    assert Page.of(payment_pb2.ListPaymentsRequest()).size == 50
    assert Page.of(payment_pb2.ListPaymentsRequest(page_size=7)).size == 7
    assert Page.of(payment_pb2.ListPaymentsRequest(page_size=10_000)).size == MAX_PAGE_SIZE
    assert Page.of(payment_pb2.ListPaymentsRequest(), default_size=5, max_size=10).size == 5
    with pytest.raises(InvalidArgument):
        Page.of(payment_pb2.ListPaymentsRequest(page_size=-1))


def test_a_token_continues_the_same_query_after_its_cursor() -> None:
    as_caller("u1")
    first = payment_pb2.ListPaymentsRequest(venue_id="v1", page_size=2)
    page = Page.of(first)
    assert page.after is None
    rows = [(30, "c"), (20, "b"), (10, "a")]
    items, token = page.cut(rows, key=lambda r: r)
    assert list(items) == [(30, "c"), (20, "b")] and token
    # The next page may change its size but not its filters.
    second = payment_pb2.ListPaymentsRequest(venue_id="v1", page_size=5, page_token=token)
    assert Page.of(second).after == (20, "b")
    last, no_more = Page.of(second).cut([(10, "a")], key=lambda r: r)
    assert list(last) == [(10, "a")] and no_more == ""


def test_a_token_is_refused_for_another_filter_or_caller() -> None:
    as_caller("u1")
    token = Page.of(payment_pb2.ListPaymentsRequest(venue_id="v1")).token_after((1, "x"))
    with pytest.raises(InvalidArgument) as other_filter:
        Page.of(payment_pb2.ListPaymentsRequest(venue_id="v2", page_token=token))
    assert other_filter.value.field_violations[0].field == "page_token"
    assert "another query" in other_filter.value.field_violations[0].description
    as_caller("u2")
    with pytest.raises(InvalidArgument):
        Page.of(payment_pb2.ListPaymentsRequest(venue_id="v1", page_token=token))


@pytest.mark.parametrize(
    "token",
    [
        "not-base64!!",
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 9, "q": "x", "c": []}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 1, "q": "x", "c": [{"a": 1}]}).encode()).decode(),
    ],
)
def test_garbage_tokens_are_invalid_argument(token: str) -> None:
    as_caller("u1")
    with pytest.raises(InvalidArgument) as info:
        Page.of(payment_pb2.ListPaymentsRequest(page_token=token))
    assert info.value.reason == "INVALID_PAGE_TOKEN"
