"""Which provider URLs are local stand-ins (meshkit.settings.is_local_url)."""

from __future__ import annotations

import pytest

from meshkit.settings import is_local_url


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8420", True),
        ("http://localhost/x", True),
        ("http://[::1]:9/", True),
        ("http://0.0.0.0", True),
        ("http://stripe.internal", True),
        ("http://mock.local:80", True),
        ("https://api.stripe.com", False),
        ("https://10.0.0.5", False),
    ],
)
def test_local_urls_are_recognised(url: str, local: bool) -> None:
    assert is_local_url(url) is local
