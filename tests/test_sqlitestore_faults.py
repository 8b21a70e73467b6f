"""The exporter on a SQLite store when its disk fails: full, or the store file deleted or
replaced under the running exporter. A push is answered 200 only once it is stored;
otherwise 503, counted by reason, ``msgsms_push_store_up`` 0, ``/-/ready`` 503 and one
log line without a traceback; once the cause is gone the exporter stores pushes again
without a restart."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest
from exposition import samples, value
from prometheus_client import CollectorRegistry, generate_latest
from small_disk import fill, small_disk
from structlog.testing import capture_logs

from exporter.app import Exporter
from exporter.configfile import parse_config
from exporter.errors import StoreUnavailable
from exporter.pushstore import StatusReport
from exporter.sqlitestore import PushStore

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DOWN = "push store unavailable: pushes are refused (503) until it is back"
BACK = "push store available again: pushes are stored"


@contextmanager
def _exporter(store: Path) -> Iterator[tuple[Exporter, httpx.Client]]:
    raw = {
        "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
        "receiver": {"store_path": str(store)},
        "poll_interval": "1h",
    }
    with Exporter(parse_config(raw, {})) as exporter, httpx.Client(timeout=30) as http:
        host, port = exporter.start("127.0.0.1", 0)
        http.base_url = httpx.URL(f"http://{host}:{port}")
        yield exporter, http


def _push(http: httpx.Client, message_id: str) -> httpx.Response:
    # A minute ago (the receiver refuses report times far from its clock); a long
    # status text, so that a small disk fills in a few hundred reports.
    updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    body = f"smsMsgId={message_id}&status=DELIVRD&updateTime={updated}&statusDesc={'x' * 500}"
    return http.post("/push/status-report", content=body, headers=FORM)


def _receiver_metrics(exporter: Exporter) -> dict:
    """The receiver's families now (``/metrics`` renders them again when 100 ms old)."""
    assert exporter.receiver is not None
    registry = CollectorRegistry()
    registry.register(exporter.receiver.collector())
    return samples(generate_latest(registry))


def _stored(db: Path) -> set[str]:
    with closing(sqlite3.connect(db)) as conn:
        return {str(r[0]) for r in conn.execute("SELECT message_id FROM messages")}


def _store_events(logs: list[dict]) -> list[tuple[str, str]]:
    return [(e["log_level"], e["event"]) for e in logs if e["event"] in (DOWN, BACK)]


def test_a_full_disk_refuses_pushes_marks_the_store_down_and_recovers_when_space_is_freed(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", size="1m") as disk, capture_logs() as logs:
        reserve = disk / "reserve"
        reserve.write_bytes(b"\0" * 256 * 1024)  # what the operator frees later
        with _exporter(disk / "push.db") as (exporter, http):
            acked: list[str] = []
            refused = None
            for n in range(5000):
                answer = _push(http, f"m{n}")
                if answer.status_code != 200:
                    refused = answer
                    break
                acked.append(f"m{n}")
            assert refused is not None, "the disk never filled"
            assert refused.status_code == 503
            assert refused.json() == {
                "reason": "store_unavailable",
                "message": "not stored, try again: SQLite: database or disk is full",
            }
            found = _receiver_metrics(exporter)
            assert value(found, "msgsms_push_store_up") == 0
            assert value(found, "msgsms_push_rejected_total", reason="store_unavailable") == 1
            assert value(found, "msgsms_push_store_errors_total", operation="reports") == 1
            ready = http.get("/-/ready")
            assert (ready.status_code, ready.text) == (
                503,
                "the push store is unavailable: pushes are refused\n",
            )

            filler = fill(disk)  # every byte: what the refused push needed is not there
            assert _push(http, "while-full").status_code == 503
            filler.unlink()
            reserve.unlink()
            http.get("/-/ready")  # starts a write test on the writer thread
            assert exporter.push_store is not None
            exporter.push_store.settle()
            assert http.get("/-/ready").status_code == 200
            assert value(_receiver_metrics(exporter), "msgsms_push_store_up") == 1
            assert _push(http, "after").status_code == 200
        assert _stored(disk / "push.db") == {*acked, "after"}
    down = [e for e in logs if e["event"] == DOWN]
    assert down[0]["error"] == "SQLite: database or disk is full"
    assert down[0]["store"] == str(disk / "push.db")
    assert not any("exc_info" in e for e in down)
    assert _store_events(logs)[-1] == ("info", BACK)


def test_a_store_file_moved_away_under_the_exporter_is_refused_not_acknowledged_into_it(
    tmp_path: Path,
) -> None:
    # SQLite keeps writing a file deleted or moved while open: before, such pushes were
    # answered 200 into a file no poll or restart would read again.
    db, aside = tmp_path / "push.db", tmp_path / "aside.db"
    with capture_logs() as logs, _exporter(db) as (exporter, http):
        assert _push(http, "before").status_code == 200
        db.rename(aside)
        answer = _push(http, "while-gone")
        assert answer.status_code == 503
        assert answer.json()["reason"] == "store_unavailable"
        assert str(tmp_path) not in answer.text  # the path goes to the log, not the sender
        assert _push(http, "while-gone-2").status_code == 503  # counted, not logged again
        assert value(_receiver_metrics(exporter), "msgsms_push_store_up") == 0
        assert http.get("/-/ready").status_code == 503
        assert not db.exists()  # a poll's read did not create an empty store in its place

        aside.rename(db)
        http.get("/-/ready")
        assert exporter.push_store is not None
        exporter.push_store.settle()
        assert http.get("/-/ready").status_code == 200
        assert _push(http, "after").status_code == 200
    assert _stored(db) == {"before", "after"}
    assert _store_events(logs) == [("error", DOWN), ("info", BACK)]
    assert [e["error"] for e in logs if e["event"] == DOWN] == [
        "the store file is gone (No such file or directory): deleted or moved while open;"
        " put it back, or restart the exporter to start a new store"
    ]


def test_a_store_file_replaced_under_the_store_takes_no_write(tmp_path: Path) -> None:
    db = tmp_path / "push.db"
    with PushStore(db) as store:
        store.add_reports([StatusReport("m1", "DELIVRD")])
        other = tmp_path / "other.db"
        with closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE unrelated (a)")
        other.replace(db)
        with pytest.raises(StoreUnavailable, match="another file took the store file's path"):
            store.add_reports([StatusReport("m2", "DELIVRD")])
        assert not store.available()
