"""What a provider's answer means for retries and for the breaker, and the retry budget.

`classify` turns an exception (ours, httpx, aiohttp, gRPC, an SDK's — read by duck typing of
`status_code` / `http_status` / `status` and `headers`) or a returned HTTP response into a
`Verdict`: retry connection errors, timeouts, 429 and 5xx (501 excepted); never a 4xx such as a
card decline; only the retryable kinds are health failures for the breaker. An adapter's own
error class that already knows says so with a `retryable` attribute (and `retry_after`). The
server's hint is read from `Retry-After` (seconds or HTTP date), `retry-after-ms`, and on a 429
`X-RateLimit-Reset` (epoch or seconds).

The retry budget follows Linkerd: retries may be at most `ratio` of the calls over a sliding
window, plus a small floor so that a quiet service can still retry. A ratio budget adds up across
replicas (each replica's retries ≤ 20 % of its calls ⇒ the fleet's ≤ 20 % of the fleet's), so it
is kept per process without a round trip; only the floor would multiply with the replica count,
so each replica gets its share of it.
"""

from __future__ import annotations

import email.utils
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import httpx

from meshkit.errors import MeshError
from meshkit.resilience._errors import ProviderError

OK = "ok"
CLIENT_ERROR = "client_error"
THROTTLED = "throttled"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection_error"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class Verdict:
    """How the guard treats one outcome."""

    kind: str
    retryable: bool = False
    health_failure: bool = False
    retry_after: float | None = None
    status: int | None = None


SUCCESS_VERDICT = Verdict(OK)


def _lower(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    try:
        return {str(k).lower(): str(v) for k, v in headers.items()}
    except (AttributeError, TypeError):
        return {}


def parse_retry_after(headers: Any, status: int | None = None) -> float | None:
    """Seconds the server asks us to wait, or None when it says nothing usable."""
    h = _lower(headers)
    now = time.time()
    if "retry-after-ms" in h:
        try:
            return max(0.0, float(h["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = h.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - now)
    reset = h.get("x-ratelimit-reset")
    if status == 429 and reset:
        try:
            number = float(reset)
        except ValueError:
            return None
        # Epoch seconds (SendGrid) or seconds from now (others).
        return max(0.0, number - now) if number > 1e9 else max(0.0, number)
    return None


def classify_status(status: int, headers: Any = None) -> Verdict:
    """The verdict for an HTTP status (with its headers for the server's wait hint)."""
    if status < 400:
        return Verdict(OK, status=status)
    if status == 429:
        return Verdict(THROTTLED, True, True, parse_retry_after(headers, status), status)
    if status == 408:
        return Verdict(TIMEOUT, True, True, parse_retry_after(headers, status), status)
    if status >= 500 and status != 501:
        return Verdict(SERVER_ERROR, True, True, parse_retry_after(headers, status), status)
    return Verdict(CLIENT_ERROR, status=status)


def _status_of(obj: Any) -> int | None:
    for attr in ("status_code", "http_status", "status"):
        value = getattr(obj, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


_GRPC_KINDS = {
    grpc.StatusCode.UNAVAILABLE: Verdict(CONNECTION, True, True),
    grpc.StatusCode.DEADLINE_EXCEEDED: Verdict(TIMEOUT, True, True),
    grpc.StatusCode.RESOURCE_EXHAUSTED: Verdict(THROTTLED, True, True),
    grpc.StatusCode.INTERNAL: Verdict(SERVER_ERROR, False, True),
    grpc.StatusCode.UNKNOWN: Verdict(SERVER_ERROR, False, True),
    grpc.StatusCode.DATA_LOSS: Verdict(SERVER_ERROR, False, True),
}


def classify(exc: BaseException) -> Verdict:
    """The verdict for an exception raised by a provider call."""
    if isinstance(exc, ProviderError):
        return classify_status(exc.status, exc.headers)
    # An adapter's own error that already knows whether it is transient (`retryable`).
    retryable = getattr(exc, "retryable", None)
    if isinstance(retryable, bool):
        hint = getattr(exc, "retry_after", None)
        retry_after = float(hint) if isinstance(hint, int | float) and hint >= 0 else None
        if retryable:
            return Verdict(SERVER_ERROR, True, True, retry_after)
        return Verdict(CLIENT_ERROR)
    if isinstance(exc, MeshError):
        return Verdict(ERROR)  # our own decision (e.g. a nested guard): pass it through
    if isinstance(exc, httpx.HTTPStatusError):
        return classify_status(exc.response.status_code, exc.response.headers)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return Verdict(TIMEOUT, True, True)
    if isinstance(exc, httpx.TransportError | aiohttp.ClientConnectionError):
        return Verdict(CONNECTION, True, True)
    if isinstance(exc, aiohttp.ClientResponseError):
        return classify_status(exc.status, exc.headers)
    if isinstance(exc, ConnectionError | socket.gaierror):
        return Verdict(CONNECTION, True, True)
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return _GRPC_KINDS.get(exc.code(), Verdict(CLIENT_ERROR))
    # SDK errors (stripe, square, sendgrid, twilio, mailchimp …) carry the HTTP status.
    status = _status_of(exc)
    if status is None:
        response = getattr(exc, "response", None)
        status = _status_of(response) if response is not None else None
        headers = getattr(response, "headers", None)
    else:
        headers = getattr(exc, "headers", None) or getattr(
            getattr(exc, "response", None), "headers", None
        )
    if status is not None:
        return classify_status(status, headers)
    return Verdict(ERROR)


def classify_result(result: object) -> Verdict:
    """The verdict for a returned value: an HTTP response with a status is judged by it."""
    status = _status_of(result)
    if status is None:
        return SUCCESS_VERDICT
    return classify_status(status, getattr(result, "headers", None))


class FailedResponse(ProviderError):
    """A returned response with a retryable status (429/5xx), turned into an error so it is
    retried and counted; the response is kept for the caller."""

    def __init__(self, response: object, verdict: Verdict) -> None:
        assert verdict.status is not None
        super().__init__(verdict.status, headers=_lower(getattr(response, "headers", None)))
        self.response = response


class RetryBudget:
    """Retries ≤ `ratio` * calls + floor over a sliding window, per process (module doc)."""

    _BUCKETS = 10

    def __init__(self, ratio: float, min_per_s: float, window_s: float, replicas: int) -> None:
        self._ratio = ratio
        self._floor = min_per_s * window_s / max(1, replicas)
        self._width = window_s / self._BUCKETS
        self._calls = [0] * self._BUCKETS
        self._retries = [0] * self._BUCKETS
        self._epochs = [-1] * self._BUCKETS

    def _bucket(self) -> int:
        epoch = int(time.monotonic() // self._width)
        i = epoch % self._BUCKETS
        if self._epochs[i] != epoch:
            self._epochs[i], self._calls[i], self._retries[i] = epoch, 0, 0
        return i

    def _live(self) -> tuple[int, int]:
        oldest = int(time.monotonic() // self._width) - self._BUCKETS
        calls = retries = 0
        for i in range(self._BUCKETS):
            if self._epochs[i] > oldest:
                calls += self._calls[i]
                retries += self._retries[i]
        return calls, retries

    def record_call(self) -> None:
        self._calls[self._bucket()] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        calls, retries = self._live()
        if retries + 1 > self._ratio * calls + self._floor:
            return False
        self._retries[self._bucket()] += 1
        return True
