"""JSON logs: one object per line, request id and service on each, secrets never written."""

from __future__ import annotations

import io
import json
import logging

from meshkit.context import request_id_var
from meshkit.logs import configure_logging, mask_email, mask_phone


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
