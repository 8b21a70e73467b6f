"""Logging as the CLI configures it: one format for the exporter's lines and the libraries'."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from exporter.logs import configure_logging


def test_library_records_are_json_lines_like_the_exporters_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # psycopg's pool warns while the database is down, in two lines: as plain text they
    # broke a JSON log pipeline exactly during the outage.
    configure_logging("info", "json")
    structlog.get_logger("msgsms_exporter").info("listening", address="http://127.0.0.1:9170")
    logging.getLogger("psycopg.pool").warning(
        "error connecting in %r: %s",
        "push-store",
        "connection failed: Connection refused\n\tIs the server running on that host?",
    )
    # One per failed write: the store logs the failure once, and counts each write.
    logging.getLogger("psycopg").warning("error ignored terminating %r: %s", "<Pipeline>", "x")
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["level"], e.get("logger"), e["event"]) for e in events] == [
        ("info", None, "listening"),
        (
            "warning",
            "psycopg.pool",
            "error connecting in 'push-store': connection failed: Connection refused\n"
            "\tIs the server running on that host?",
        ),
    ]
    assert all(e["timestamp"].endswith("Z") for e in events)
