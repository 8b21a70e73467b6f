"""The exporter on a PostgreSQL store when the database fails: down at start, restarted
mid-traffic, the connection lost during a COMMIT, a replica dying inside its transaction.
A push is answered 200 only once it is
stored; otherwise 503, counted, and the exporter recovers without a restart."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from exposition import samples, total, value
from postgres_server import USER, PostgresServer
from prometheus_client import CollectorRegistry, generate_latest
from small_disk import fill, small_disk
from structlog.testing import capture_logs
from tcp_proxy import TcpProxy

from exporter.app import Exporter
from exporter.configfile import parse_config
from exporter.errors import StoreUnavailable
from exporter.exposition import LIVE_MAX_AGE_SECONDS
from exporter.pgstore import PostgresStore
from exporter.pushstore import SendRegistration, StatusReport
from exporter.routing import Request

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))


HTTP = httpx.Client(timeout=30)  # one client: making one per request costs ~0.3 s here


@contextmanager
def _exporter(store_url: str, poll_interval: str = "1s") -> Iterator[str]:
    raw = {
        "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
        "receiver": {"store_url": store_url},
        "poll_interval": poll_interval,
    }
    with Exporter(parse_config(raw, {})) as exporter:
        host, port = exporter.start("127.0.0.1", 0)
        yield f"http://{host}:{port}"


def _push(base: str, message_id: str) -> int:
    # a minute ago: the receiver refuses report times far from its clock
    updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    body = f"smsMsgId={message_id}&status=DELIVRD&updateTime={updated}"
    return HTTP.post(f"{base}/push/status-report", content=body, headers=FORM).status_code


def _eventually(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Wait for a condition the exporter reaches by itself (reconnecting, polling)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def _stored(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT message_id, count(*) FROM msgsms_segments GROUP BY 1"
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _messages(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT message_id FROM msgsms_messages")}


def _metric(base: str, name: str, **labels: str) -> float:
    found = samples(HTTP.get(f"{base}/metrics").content)
    return found.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


@pytest.fixture
def proxy(postgres: PostgresServer) -> Iterator[TcpProxy]:
    relay = TcpProxy(("127.0.0.1", postgres.port))
    try:
        yield relay
    finally:
        relay.close()


def test_with_the_database_down_at_start_pushes_get_503_until_it_is_up(
    postgres_url: str, proxy: TcpProxy
):
    with capture_logs() as logs, _exporter(_through(proxy, postgres_url)) as base:
        assert HTTP.get(f"{base}/-/healthy").status_code == 200
        ready = HTTP.get(f"{base}/-/ready")
        assert (ready.status_code, ready.text.strip()) == (
            503,
            "the push store is unavailable: pushes are refused",
        )
        refused = HTTP.post(
            f"{base}/push/status-report", content="smsMsgId=m1&status=DELIVRD", headers=FORM
        )
        assert refused.status_code == 503
        assert refused.json()["reason"] == "store_unavailable"
        assert _metric(base, "msgsms_push_rejected_total", reason="store_unavailable") == 1
        assert _metric(base, "msgsms_push_requests_total", code="503", endpoint="single") == 1
        # A state, not only counts: behind a load balancer no push reaches an unready
        # replica, so nothing would be counted while the store stays down.
        assert "msgsms_push_store_up" in samples(HTTP.get(f"{base}/metrics").content)
        assert _metric(base, "msgsms_push_store_up") == 0

        proxy.start()  # the database comes up; the exporter is not restarted
        _eventually(lambda: _push(base, "m2") == 200, "a push is stored")
        _eventually(lambda: HTTP.get(f"{base}/-/ready").status_code == 200, "ready")
        # A readiness check that began while the pool was still reconnecting may fail
        # after a push succeeded; the next check that begins later decides.
        _eventually(lambda: _metric(base, "msgsms_push_store_up") == 1, "the store is up")
        proxy.stop()  # down again, while nothing is pushed: the next check says so
        assert HTTP.get(f"{base}/-/ready").status_code == 503
        # /metrics serves its live part (this gauge among it) at most LIVE_MAX_AGE_SECONDS
        # old: the scrape that saw 1 just before may still be the one served.
        time.sleep(LIVE_MAX_AGE_SECONDS)
        assert _metric(base, "msgsms_push_store_up") == 0
    assert _stored(postgres_url) == {"m2": 1}
    # One located line each time the store goes down or comes back, none per refusal
    # (a check that began while the pool reconnected may say down once more meanwhile).
    events = [e for e in logs if e["event"].startswith("push store")]
    down = ("error", "push store unavailable: pushes are refused (503) until it is back")
    back = ("info", "push store available again: pushes are stored")
    said = [(e["log_level"], e["event"]) for e in events]
    assert said == [down, back] * (len(said) // 2) + [down]
    assert {e["store"] for e in events} == {f"PostgreSQL 127.0.0.1:{proxy.port}/msgsms_tests"}
    assert not any("exc_info" in e for e in events)


def test_a_readiness_check_waiting_for_a_silent_database_holds_no_other_request() -> None:
    # A database that accepts connections and never answers (a failover's old address, a
    # partition): the store's check waits a second for it. On the event loop each check
    # held every scrape and push that long; in a worker thread it holds only itself.
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts
        url = f"postgresql://msgsms@127.0.0.1:{silent.getsockname()[1]}/msgsms"
        raw = {
            "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
            "receiver": {"store_url": url},
            "poll_interval": "1h",
        }
        with Exporter(parse_config(raw, {})) as exporter:
            ready = Request("GET", "/-/ready", {}, {}, b"")
            resolved = exporter.router().resolve(ready)
            assert (resolved.answer, resolved.route) == (None, exporter.routes._ready)
            host, port = exporter.start("127.0.0.1", 0)
            answer = HTTP.get(f"http://{host}:{port}/-/ready")
            assert (answer.status_code, answer.text.strip()) == (
                503,
                "the push store is unavailable: pushes are refused",
            )
            exporter.drain()  # nothing to check then: answered on the loop at once
            assert exporter.router().resolve(ready).answer is not None


def _read_only(admin: psycopg.Connection, on: bool) -> None:
    """The test database read-only (or not) for new sessions; its sessions are ended, as a
    failover ends them (``admin``'s own, opened before, stays writable)."""
    admin.execute(
        f"ALTER DATABASE msgsms_tests SET default_transaction_read_only = {'on' if on else 'off'}"
    )
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = 'msgsms_tests' AND pid <> pg_backend_pid()"
    )


def test_a_read_only_database_refuses_pushes_503_not_as_unstorable_items_and_recovers(
    postgres: PostgresServer, postgres_url: str
) -> None:
    # A failover's demoted primary, or a managed database whose disk filled (Huawei RDS
    # turns read-only near full), answers every write "read-only". That was taken for bad
    # data: each item was tried alone and every report answered 400 "unstorable" (a final
    # answer for any sender), with msgsms_push_store_up 1 and /-/ready 200.
    raw = {
        "accounts": [{"name": "push", "source": "push", "templates": {"discover": True}}],
        "receiver": {"store_url": postgres_url},
        "poll_interval": "1h",
    }
    with (
        psycopg.connect(postgres.url(), autocommit=True) as admin,
        capture_logs() as logs,
        Exporter(parse_config(raw, {})) as exporter,
    ):
        host, port = exporter.start("127.0.0.1", 0)
        base = f"http://{host}:{port}"
        assert exporter.receiver is not None
        registry = CollectorRegistry()  # the receiver's families now, not 100 ms old
        registry.register(exporter.receiver.collector())
        _eventually(lambda: _push(base, "before") == 200, "the first push is stored")
        # No read may race the refused write below: a read succeeds on a read-only
        # database and marks the store up (the first poll, the first pruning).
        _eventually(exporter.board.polled, "the first poll")
        assert exporter.push_store is not None
        exporter.push_store.settle()
        try:
            _read_only(admin, True)
            body = {"statusReportList": [{"smsMsgId": "ro1", "status": "DELIVRD"}]}
            refused = HTTP.post(f"{base}/push/status-reports", json=body)
            assert refused.status_code == 503
            assert refused.json() == {
                "reason": "store_unavailable",
                "message": "not stored, try again: PostgreSQL: cannot execute"
                " SELECT FOR UPDATE in a read-only transaction",
            }
            found = samples(generate_latest(registry))
            assert value(found, "msgsms_push_rejected_total", reason="unstorable") == 0
            assert value(found, "msgsms_push_rejected_total", reason="store_unavailable") == 1
            assert value(found, "msgsms_push_store_up") == 0
            assert HTTP.get(f"{base}/-/ready").status_code == 503  # read-only: unready
            assert value(samples(generate_latest(registry)), "msgsms_push_store_up") == 0
        finally:
            _read_only(admin, False)
        _eventually(lambda: HTTP.get(f"{base}/-/ready").status_code == 200, "ready")
        assert _push(base, "after") == 200
    assert _messages(postgres_url) == {"before", "after"}
    events = [(e["log_level"], e.get("error")) for e in logs if e["event"].startswith("push store")]
    # (the sessions the test ended may say so first)
    assert ("error", "PostgreSQL: cannot execute SELECT FOR UPDATE in a read-only transaction") in (
        events
    )
    assert events[-1] == ("info", None)


def _polls(base: str) -> float:
    """Reads the push account's polls made of the store so far."""
    found = samples(HTTP.get(f"{base}/metrics").content)
    return total(found, "msgsms_upstream_requests_total", account="push", code="200")


def test_a_full_disk_keeps_the_store_down_while_polls_and_readiness_read_it_until_writes_work(
    postgres: PostgresServer,
) -> None:
    # The database's disk is full: writes that need a new page fail, reads still work.
    # Every poll's read (and every readiness check, a read) set msgsms_push_store_up
    # back to 1 and /-/ready to 200 until the next push failed: the replica flapped in
    # and out of the load balancer, with a log line for each flip, and the 2-minute
    # alert on msgsms_push_store_up never fired.
    schema = postgres.new_schema()
    space = f"small_{schema}"
    # Beside the server's data directory: the server's user reaches no test's tmp_path.
    with small_disk(postgres.data.parent / space, size="4m") as disk:
        (disk / "pg").mkdir()
        shutil.chown(disk / "pg", USER, USER)
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute(f"CREATE TABLESPACE {space} LOCATION '{disk / 'pg'}'")
            try:
                # The store's tables on the small disk, created there by the exporter.
                url = (
                    f"{postgres.url()}?options=-csearch_path%3D{schema}"
                    f"%20-cdefault_tablespace%3D{space}"
                )
                _on_a_full_disk(url, disk)
            finally:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")
                admin.execute(f"DROP TABLESPACE {space}")


def _on_a_full_disk(url: str, disk: Path) -> None:
    with capture_logs() as logs, _exporter(url) as base:
        _eventually(lambda: _metric(base, "msgsms_push_store_up") == 1, "the first write test")
        filler = fill(disk)
        body = {"statusReportList": [{"smsMsgId": "full", "status": "DELIVRD"}]}
        refused = HTTP.post(f"{base}/push/status-reports", json=body)
        assert refused.status_code == 503
        assert "No space left on device" in refused.json()["message"]
        for _ in range(3):  # polls read the store, readiness checks ask it; it stays down
            polled = _polls(base)
            _eventually(lambda: _polls(base) > polled, "a poll")  # noqa: B023
            assert _metric(base, "msgsms_push_store_up") == 0
            assert HTTP.get(f"{base}/-/ready").status_code == 503
            assert _metric(base, "msgsms_push_store_up") == 0
        filler.unlink()
        _eventually(lambda: HTTP.get(f"{base}/-/ready").status_code == 200, "ready")
        _eventually(lambda: _metric(base, "msgsms_push_store_up") == 1, "up (/metrics is cached)")
        assert _push(base, "after") == 200
    events = [e for e in logs if e["event"].startswith("push store")]
    assert [(e["log_level"], e["event"]) for e in events] == [
        ("error", "push store unavailable: pushes are refused (503) until it is back"),
        ("info", "push store available again: pushes are stored"),
    ]
    assert "No space left on device" in events[0]["error"]
    assert _messages(url) == {"after"}


def test_a_store_whose_writes_wait_on_a_table_lock_is_down_while_reads_go_on(
    postgres_url: str,
) -> None:
    # CREATE INDEX without CONCURRENTLY (or another SHARE lock an operator takes) holds
    # every write back while reads go on. The readiness check only read: ready, while
    # each push waited 20 s for the lock and was refused.
    with PostgresStore(postgres_url) as store:
        store.register([SendRegistration("m1", "tpl", time.time() - 60)])
    with psycopg.connect(postgres_url) as operator:
        operator.execute("LOCK TABLE msgsms_messages IN SHARE MODE")
        with PostgresStore(postgres_url) as store:
            for _ in range(3):
                assert not store.available()  # its write test waits 1 s for the lock
                assert store.message_count() == 1  # reads go on
                assert not store.up
            operator.rollback()
            _eventually(store.available, "the write test commits")
            assert store.register([SendRegistration("m2", "tpl", time.time() - 60)]).stored == 1


def test_ready_once_the_store_is_back_without_waiting_for_the_next_poll(
    postgres_url: str, proxy: TcpProxy
):
    # The first poll failed with the database down; the next is an hour away. Pushes need
    # no poll, so the replica is ready (back in the load balancer) as soon as its store is.
    with _exporter(_through(proxy, postgres_url), poll_interval="1h") as base:
        assert HTTP.get(f"{base}/-/ready").status_code == 503
        proxy.start()
        _eventually(lambda: _push(base, "m1") == 200, "a push is stored")
        _eventually(lambda: HTTP.get(f"{base}/-/ready").status_code == 200, "ready", 10)


def test_after_a_long_outage_the_replica_is_ready_as_soon_as_the_database_is_back(
    postgres_url: str, proxy: TcpProxy
):
    # The pool retries a failed connection with a doubling delay. Unbounded, an outage of
    # minutes kept /-/ready 503 (every replica out of the balancer, every push refused
    # there) for minutes after the database was back: after this 35 s outage its next
    # retries were 15-25 s away. Probed as a kubelet does meanwhile.
    with _exporter(_through(proxy, postgres_url), poll_interval="1h") as base:
        outage_ends = time.monotonic() + 35
        while time.monotonic() < outage_ends:
            assert HTTP.get(f"{base}/-/ready").status_code == 503
            time.sleep(0.25)
        proxy.start()
        _eventually(lambda: HTTP.get(f"{base}/-/ready").status_code == 200, "ready", 8)
        assert _push(base, "m1") == 200
    assert _stored(postgres_url) == {"m1": 1}


def test_a_database_restart_mid_traffic_loses_no_acknowledged_push(
    postgres: PostgresServer, postgres_url: str
):
    acked: list[str] = []
    refused: list[str] = []
    after_restart: list[str] = []
    restarted = threading.Event()
    stop = threading.Event()

    def traffic(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            message_id = f"w{worker}-{n}"
            try:
                status = _push(base, message_id)
            except httpx.TransportError:
                status = 0
            (acked if status == 200 else refused).append(message_id)
            if status == 200 and restarted.is_set():
                after_restart.append(message_id)

    with _exporter(postgres_url) as base:
        _eventually(lambda: HTTP.get(f"{base}/-/ready").status_code == 200, "ready")
        workers = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        _eventually(lambda: len(acked) >= 50, "traffic flows")
        postgres.restart()
        restarted.set()
        _eventually(lambda: len(after_restart) >= 50, "pushes are stored after the restart")
        stop.set()
        for w in workers:
            w.join()
        # Ready again without a restart of the exporter (the pool's connections from
        # before the restart are checked, dropped and replaced, which may take a moment).
        _eventually(lambda: HTTP.get(f"{base}/-/ready").status_code == 200, "ready again")
    stored = _stored(postgres_url)
    assert [m for m in acked if stored.get(m) != 1] == []
    assert set(stored) <= set(acked) | set(refused)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_connection_lost_during_commit_is_refused_and_stored_once_when_pushed_again(
    postgres_url: str, proxy: TcpProxy, when: str
):
    proxy.start()
    # Polls read in transactions too: none runs after the first, so the COMMIT is the push's.
    # The first poll's read starts a write test (the store is not up before a write), and
    # pruning runs after it (its size measured last): both are done before the push.
    with _exporter(_through(proxy, postgres_url), poll_interval="1h") as base:
        _eventually(lambda: _metric(base, "msgsms_up", account="push") == 1, "the first poll")
        _eventually(lambda: _metric(base, "msgsms_push_store_up") == 1, "the write test")
        _eventually(lambda: _metric(base, "msgsms_push_store_size_bytes") > 0, "pruning")
        proxy.fail_commit(when)
        assert _push(base, "m1") == 503
        assert proxy.commits_broken == 1
        # "before": the COMMIT never arrived, nothing is stored; "after": it committed
        # but the answer was lost, so the push was refused although it is stored. The
        # exporter hears of the break as the COMMIT leaves the proxy, so the server may
        # still be committing when the 503 arrives: wait for it.
        if when == "before":
            assert _stored(postgres_url) == {}
        else:
            _eventually(lambda: _stored(postgres_url) == {"m1": 1}, "the COMMIT's effect")
        assert _push(base, "m1") == 200  # a retry (or Huawei's next push) is idempotent
        assert _push(base, "m2") == 200
    assert _stored(postgres_url) == {"m1": 1, "m2": 1}  # m1's first segment died with b


def test_a_replica_that_dies_inside_its_transaction_holds_the_others_up_only_briefly(
    postgres_url: str, proxy: TcpProxy
):
    # Replica b's host dies after its write locked message m1, before it wrote. The
    # database keeps b's session, and its locks, until it notices b is gone (TCP keepalive:
    # two hours by default). Meanwhile replica a's writes to m1 (the balancer retries b's
    # push there) waited, and a's one writer with them: every push to a went unanswered.
    proxy.start()
    now = time.time()
    with PostgresStore(postgres_url) as a:
        a.register([SendRegistration("m1", "tpl", now - 60, segments=2)])
        b = PostgresStore(_through(proxy, postgres_url))
        b.register([SendRegistration("m0", "tpl", now - 60)])  # connected, schema checked
        b.settle()  # and its pruning done: the next transaction is its write's

        def b_writes() -> None:
            with contextlib.suppress(StoreUnavailable):  # once the proxy closes, at the end
                b.add_reports([StatusReport("m1", "DELIVRD", 1, 2, update_time=now - 30)])

        # The writer's transaction: BEGIN answered, then the rows it locked; then it dies.
        proxy.freeze_in_transaction(answers=2)
        threading.Thread(target=b_writes, daemon=True).start()
        _eventually(lambda: proxy.frozen == 1, "b's host dies between its two round trips")
        done = threading.Event()

        def a_writes() -> None:
            a.add_reports([StatusReport("m1", "DELIVRD", 2, 2, update_time=now - 20)])
            a.add_reports([StatusReport("m2", "DELIVRD", update_time=now - 20)])
            done.set()

        threading.Thread(target=a_writes, daemon=True).start()
        try:
            # The dead session is ended after 10 s idle in its transaction.
            assert done.wait(60), "replica a is still waiting for the dead replica's locks"
        finally:
            proxy.close()  # b's connections break, so b's write and close return
            b.close()
    assert _stored(postgres_url) == {"m1": 1, "m2": 1}  # m1's first segment died with b


def test_a_replica_that_dies_holding_the_pruning_lease_stops_pruning_only_briefly(
    postgres_url: str, proxy: TcpProxy
):
    # Replica b's host dies just after b took the pruning lease. The database kept b's
    # lease transaction, and so the lock, until TCP keepalive noticed (two hours by
    # default): no replica pruned meanwhile, and the store grew.
    proxy.start()
    now = time.time()
    with PostgresStore(postgres_url, retention=600) as a:
        a.register(
            [SendRegistration("old", "tpl", now - 3600), SendRegistration("new", "tpl", now)]
        )
        b = PostgresStore(_through(proxy, postgres_url), retention=600)
        b.register([SendRegistration("b0", "tpl", now)])  # connected, schema checked
        b.settle()  # and its first pruning done: "old" is gone
        a.register([SendRegistration("old2", "tpl", now - 3600)])
        # The lease: BEGIN answered, then the lock taken; then b's host dies.
        proxy.freeze_in_transaction(answers=2)
        threading.Thread(target=b.prune, daemon=True).start()
        _eventually(lambda: proxy.frozen == 1, "b's host dies holding the lease")
        try:

            def a_pruned() -> bool:
                a.prune()  # at once, without the lock while b's lease lives
                return "old2" not in _messages(postgres_url)

            # The dead lease is ended after 10 s idle in its transaction.
            _eventually(a_pruned, "replica a prunes once the dead replica's lease ended", 60)
        finally:
            proxy.close()  # b's connections break, so b's prune and close return
            b.close()
    assert _messages(postgres_url) == {"new", "b0"}


def test_a_write_waiting_on_a_lock_held_elsewhere_is_refused_not_left_hanging(
    postgres_url: str,
):
    # A session that is not a replica's (an operator's, say) holds m1's row and stays.
    now = time.time()
    with PostgresStore(postgres_url) as store, psycopg.connect(postgres_url) as holder:
        store.register([SendRegistration("m1", "tpl", now - 60)])
        holder.execute("SELECT 1 FROM msgsms_messages WHERE message_id = 'm1' FOR UPDATE")
        failures: list[BaseException] = []

        def write() -> None:
            try:
                store.add_reports([StatusReport("m1", "DELIVRD", update_time=now - 30)])
            except StoreUnavailable as exc:
                failures.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(60)  # a hang guard: the write gives up after LOCK_WAIT_MS (20 s)
        holder.rollback()
        assert not writer.is_alive(), "the write still waits for the lock"
        assert [str(f) for f in failures] == ["PostgreSQL: canceling statement due to lock timeout"]
        store.add_reports([StatusReport("m1", "DELIVRD", update_time=now - 30)])
    assert _stored(postgres_url) == {"m1": 1}
