"""JSON logs: one object per line, request id and service on each, secrets never written."""

from __future__ import annotations

import io
import json
import logging

from meshkit.context import request_id_var
from meshkit.logs import AccessLog, configure_logging, mask_email, mask_phone


def capture() -> io.StringIO:
    configure_logging("svc-under-test")
    buf = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buf)
    return buf


def test_lines_are_json_with_request_id_and_service() -> None:
    buf = capture()
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("t").info("hello", extra={"grpc_code": "OK"})
    finally:
        request_id_var.reset(token)
    line = json.loads(buf.getvalue().strip())
    assert line["message"] == "hello" and line["level"] == "INFO"
    assert line["request_id"] == "req-42" and line["service"] == "svc-under-test"
    assert line["grpc_code"] == "OK" and "T" in line["time"]


def test_secret_looking_fields_are_redacted() -> None:
    buf = capture()
    logging.getLogger("t").warning(
        "x", extra={"authorization": "Bearer abc", "api_key": "sk_live_1", "card_number": "4242"}
    )
    text = buf.getvalue()
    assert "abc" not in text and "sk_live_1" not in text and "4242" not in text
    assert json.loads(text)["api_key"] == "[redacted]"


def test_masking_helpers() -> None:
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_phone("+16155550100") == "***00"


def test_access_lines_are_json_and_escape_what_they_must() -> None:
    buf = capture()
    access = AccessLog("svc-under-test")
    prefix = access.prefix(grpc_service="tickettoken.notify.v1.NotifyService", grpc_method="Get")
    for _ in range(2):  # the second line comes from the memoised principal/peer encodings
        access.record(
            prefix,
            code="OK",
            duration_ms=1.23456,
            principal='user "quoted"\n',
            peer="ipv4:127.0.0.1:5000",
            request_id="req-1",
        )
    access.record(
        prefix, code="NOT_FOUND", duration_ms=0.5, principal=None, peer=None, request_id=None
    )
    access.flush()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert first["logger"] == "meshkit.access" and first["level"] == "INFO"
    assert first["grpc_service"] == "tickettoken.notify.v1.NotifyService"
    assert first["grpc_method"] == "Get" and first["grpc_code"] == "OK"
    assert first["duration_ms"] == 1.235 and first["principal"] == 'user "quoted"\n'
    assert first["peer"] == "ipv4:127.0.0.1:5000" and first["request_id"] == "req-1"
    assert first["service"] == "svc-under-test" and first["time"].endswith("+00:00")
    assert lines[1] == first | {"time": lines[1]["time"]}
    assert lines[2]["principal"] is None and lines[2]["request_id"] is None


def test_access_lines_follow_the_log_level() -> None:
    buf = capture()
    logging.getLogger("meshkit.access").setLevel(logging.WARNING)
    try:
        access = AccessLog("svc-under-test")
        access.record("", code="OK", duration_ms=1.0, principal=None, peer=None, request_id=None)
        access.flush()
    finally:
        logging.getLogger("meshkit.access").setLevel(logging.NOTSET)
    assert buf.getvalue() == ""
