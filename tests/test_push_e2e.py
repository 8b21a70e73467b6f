"""The whole push chain in process: simulator pushes → receiver → store → poller = truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import Opener
from exposition import exported_window
from exposition import samples as parse_samples
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import DeliveryCollector
from exporter.config import Config, ReceiverConfig, TemplateSelection, push_account
from exporter.poller import Poller
from exporter.pushitems import SendRegistration
from exporter.pushstore import ReportStore
from exporter.receiver import Receiver
from exporter.records import DetailsQuery, SendResult
from exporter.signing import Credentials
from exporter.simulator.push import PushConfig, Pusher
from exporter.simulator.queries import Filters
from exporter.simulator.runner import RunningSimulator, SimulatorConfig, start_simulator
from exporter.simulator.scenario import load_scenario
from exporter.snapshot import SnapshotBoard
from exporter.timestamps import parse_rfc3339
from exporter.web import Router, WebServer

START = parse_rfc3339("2026-11-26T10:00:00Z")
KEYS = (Credentials("PUSH-OLD", "old-secret"), Credentials("PUSH-NEW", "new-secret"))


@dataclass
class Chain:
    sim: RunningSimulator
    store: ReportStore
    receiver: Receiver
    url: str
    http: httpx.Client

    def pusher(self, **overrides: object) -> Pusher:
        config = PushConfig(url=self.url, **overrides)  # type: ignore[arg-type]
        # The receiver here reads the simulated clock, so the signatures are dated by it.
        wall = self.sim.clock.now
        return Pusher(self.sim.store, self.sim.clock, config, self.http, wall=wall)

    def truth(self, start: float, end: float, held: bool = True) -> dict:
        """The sender's truth (held messages as sending), or with ``held=False`` the console's."""
        now_ms = round(self.sim.clock.now() * 1000)
        return self.sim.store.truth(round(start * 1000), round(end * 1000), now_ms, held)


def _chain(open_store: Opener, history: float = 3600, **receiver: object) -> Iterator[Chain]:
    scenario = load_scenario().scaled(0.05)
    config = SimulatorConfig(
        scenario=scenario, manual_clock=True, start_time=START, history_seconds=history
    )
    with start_simulator(config) as sim:
        store = open_store(clock=sim.clock.now)
        rc = ReceiverConfig(store_path="", signing_keys=KEYS, **receiver)  # type: ignore[arg-type]
        rec = Receiver(rc, store, clock=sim.clock.now)
        router = Router()
        rec.add_routes(router)
        web = WebServer(router, "127.0.0.1", 0)
        web.start()
        host, port = web.address
        try:
            with httpx.Client(timeout=30) as http:
                yield Chain(sim, store, rec, f"http://{host}:{port}", http)
        finally:
            web.stop()
            store.close()


@pytest.fixture
def chain(open_store: Opener, request: pytest.FixtureRequest) -> Iterator[Chain]:
    """The chain on each store: the same pushes give the same metrics from either.

    A test may set the seconds of history (indirect parametrization); an hour unless.
    """
    yield from _chain(open_store, history=getattr(request, "param", 3600))


@pytest.fixture
def extend_chain(open_store: Opener) -> Iterator[Chain]:
    yield from _chain(open_store, attribution="extend_pair", attribution_key="tpl")


# Single pushes are a request a report: a quarter hour of history is enough for them.
@pytest.mark.parametrize(
    ("mode", "chain"),
    [("batch", 3600), ("single", 900)],
    indirect=["chain"],
    ids=["batch", "single"],
)
def test_window_fed_only_by_pushes_equals_truth(chain: Chain, mode: str):
    templates = tuple(t.template_id for t in chain.sim.store.scenario.templates)
    account = push_account("push", TemplateSelection(ids=templates))
    config = Config(accounts=(account,), top_status_codes=100)
    poller = Poller(account, config, chain.store, clock=chain.sim.clock.now)
    board = SnapshotBoard(["push"])
    registry = CollectorRegistry()
    registry.register(DeliveryCollector(board.snapshots))
    # Signed with the second of two active keys; batches sent twice (duplicates).
    pusher = chain.pusher(mode=mode, credentials=KEYS[1], duplicate=mode == "batch")
    steps = 40 if mode == "batch" else 15
    seen_sending = held = 0
    for _ in range(steps):
        chain.sim.clock.advance(60)
        pusher.catch_up()
        board.publish(poller.poll())
        samples = parse_samples(generate_latest(registry))
        start = next(iter(samples["msgsms_window_start_timestamp_seconds"].values()))
        end = next(iter(samples["msgsms_window_end_timestamp_seconds"].values()))
        truth = chain.truth(start, end)
        expected = {
            tid: {k: t[k] for k in ("success", "failed", "sending", "status_codes")}
            for tid, t in truth.items()
        }
        assert exported_window(samples) == expected
        seen_sending += sum(t["sending"] for t in truth.values())
        # Messages held for review: registered when sent (the send API answers at once),
        # so sending here while the console shows nothing of them yet.
        held += truth != chain.truth(start, end, held=False)
        gsum = samples["msgsms_window_delivery_delay_seconds_gsum"]
        for tid, t in truth.items():
            key = (("account", "push"), ("template", tid), ("window", "1h"))
            assert abs(gsum[key] - t["delivery_delay_seconds_sum"]) < 1e-6
    totals = {k: sum(v[k] for v in expected.values()) for k in ("success", "failed", "sending")}
    assert totals["success"] > 100 and totals["failed"] > 0 and seen_sending > 0
    assert held > 0 or mode == "single"  # a quarter hour of single pushes may hold none
    assert not [k for k in pusher.stats if not k.endswith(":200")]
    stored = chain.store.query(DetailsQuery(0, 4e9, limit=100)).records
    assert chain.store.query(DetailsQuery(0, 4e9, limit=1)).total > 100
    assert max(r.segments for r in stored) > 1  # long SMS were reported segment by segment
    assert chain.receiver.stats.unattributed == 0
    if mode == "batch":
        assert chain.receiver.stats.duplicates["report"] == sum(
            chain.receiver.stats.reports.values()
        )


def test_a_template_first_pushed_is_exported_at_the_next_poll(chain: Chain):
    account = push_account("push")  # discovers every template the pushes name
    config = Config(accounts=(account,))
    poller = Poller(account, config, chain.store, clock=chain.sim.clock.now)
    chain.sim.clock.advance(60)
    chain.pusher(mode="batch", credentials=KEYS[1]).catch_up()
    first = {t.template_id for t in poller.poll().templates}
    assert first and "SMS_FIRST_PUSHED" not in first
    chain.sim.clock.advance(30)  # well inside the ten minutes a Huawei template list is kept
    sent = SendRegistration("first-pushed-1", "SMS_FIRST_PUSHED", chain.sim.clock.now() - 5)
    assert chain.store.register([sent]).stored == 1
    assert {t.template_id for t in poller.poll().templates} == first | {"SMS_FIRST_PUSHED"}


def test_attribution_by_extend_alone_finds_each_message_template(extend_chain: Chain):
    chain = extend_chain
    pusher = chain.pusher(mode="batch", credentials=KEYS[0], register=False, extend_key="tpl")
    for _ in range(10):
        chain.sim.clock.advance(60)
        pusher.catch_up()
    now_ms = round(chain.sim.clock.now() * 1000)
    since = round((START - 7200) * 1000)
    _, truth_records = chain.sim.store.query(Filters(since, now_ms), 0, 10**6, now_ms)
    template_of = {r.message_id: r.template_id for r in truth_records}
    stored = chain.store.query(DetailsQuery(0, 4e9, limit=100))
    # Final messages, and those a carrier announced with a non-final ACCEPTD (still sending).
    final = [r for r in truth_records if r.send_result.value != "sending"]
    pending = chain.store.query(DetailsQuery(0, 4e9, send_result=SendResult.SENDING)).total
    assert stored.total - pending == len(final)
    assert stored.records
    for record in stored.records:
        assert record.template_id == template_of[record.message_id]
    assert chain.receiver.stats.unattributed == 0
    assert sum(chain.receiver.stats.registrations.values()) == 0


def test_unsigned_pushes_are_refused_when_keys_are_configured(chain: Chain):
    pusher = chain.pusher(mode="batch")
    chain.sim.clock.advance(60)
    pusher.catch_up()
    assert set(pusher.stats) == {"sends:401", "batch:401"}
    assert chain.store.message_count() == 0
    # Reports need Huawei's signature; registrations a token, basic auth or the signature.
    assert chain.receiver.stats.rejected == {
        "signature": pusher.stats["batch:401"],
        "unauthorized": pusher.stats["sends:401"],
    }


def test_exporter_serves_signed_pushes_past_basic_auth_and_exports_them(tmp_path: Path):
    import bcrypt

    from exporter.app import Exporter
    from exporter.signing import sign_request
    from exporter.webconfig import WebConfig

    account = push_account("push")
    receiver = ReceiverConfig(store_path=str(tmp_path / "push.db"), signing_keys=KEYS)
    config = Config(accounts=(account,), receiver=receiver, top_status_codes=100)
    clock = lambda: START + 600  # noqa: E731
    web = WebConfig(users={"prom": bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4))})
    with Exporter(config, clock=clock) as exporter, httpx.Client() as http:
        host, port = exporter.start("127.0.0.1", 0, web=web)
        base = f"http://{host}:{port}"
        sends = (
            b'[{"message_id": "m1", "template_id": "tplA", "send_time": "2026-11-26T10:00:30Z"}]'
        )
        report = b"smsMsgId=m1&status=DELIVRD&updateTime=2026-11-26T10%3A00%3A35Z"
        for path, body, content_type in (
            ("/push/sends", sends, "application/json"),
            ("/push/status-report", report, "application/x-www-form-urlencoded"),
        ):
            from datetime import UTC, datetime

            headers = sign_request(
                "POST",
                f"{base}{path}",
                {"Content-Type": content_type},
                body,
                KEYS[0],
                datetime.fromtimestamp(clock(), UTC),
            )
            assert http.post(f"{base}{path}", content=body, headers=headers).status_code == 200
        assert http.get(f"{base}/metrics").status_code == 401
        assert exporter.poll_once()
        scraped = http.get(f"{base}/metrics", auth=("prom", "secret"))
        assert scraped.headers["Content-Encoding"] == "gzip"  # httpx asks for it
        text = scraped.text
    assert (
        'msgsms_window_messages{account="push",result="success",template="tplA",window="1h"} 1.0'
        in text
    )
    assert 'msgsms_push_reports_total{account="push",kind="single"} 1.0' in text
    assert 'msgsms_push_registrations_total{account="push"} 1.0' in text


def test_simulator_cli_needs_keys_to_sign_pushes(monkeypatch: pytest.MonkeyPatch, capsys):
    from exporter.simulator.cli import build_parser, main

    monkeypatch.delenv("MSGSMS_PUSH_ACCESS_KEY", raising=False)
    monkeypatch.delenv("MSGSMS_PUSH_SECRET_KEY", raising=False)
    assert main(["--push.url", "http://127.0.0.1:9", "--push.sign", "--log.level", "error"]) == 1
    assert "--push.sign needs MSGSMS_PUSH_ACCESS_KEY" in capsys.readouterr().err
    args = build_parser().parse_args(["--push.url", "http://x", "--push.mode", "single"])
    assert (args.push_url, args.push_mode, args.push_register) == ("http://x", "single", None)


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (["--push.mode", "single"], "argument --push.mode: needs --push.url (where to push)"),
        (["--push.no-register"], "argument --push.no-register: needs --push.url (where to push)"),
        (["--push.connections", "4"], "argument --push.connections: needs --push.url"),
        (
            ["--start-time", "2026-11-26T10:00:00Z"],
            "argument --start-time: needs --clock manual (the real clock starts at now)",
        ),
    ],
)
def test_simulator_flags_that_would_change_nothing_are_refused_not_ignored(
    args: list[str], refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.simulator.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert f"msgsms-simulator: error: {refusal}" in capsys.readouterr().err


def test_push_mode_is_checked():
    with pytest.raises(ValueError, match="single"):
        PushConfig(url="http://x", mode="both")


def test_a_carrier_code_longer_than_huaweis_seven_characters_is_stored_and_exported(
    tmp_path: Path,
):
    # Huawei documents status as String(1-7), yet its own status-code list has SMGPERR:
    # codes of nine characters and more. Refused, such a report would be lost for good.
    from exporter.app import Exporter

    receiver = ReceiverConfig(store_path=str(tmp_path / "push.db"))
    config = Config(accounts=(push_account("push"),), receiver=receiver, top_status_codes=100)
    clock = lambda: START + 600  # noqa: E731
    with Exporter(config, clock=clock) as exporter, httpx.Client() as http:
        host, port = exporter.start("127.0.0.1", 0)
        base = f"http://{host}:{port}"
        sends = (
            b'[{"message_id": "m1", "template_id": "tplA", "send_time": "2026-11-26T10:00:30Z"}]'
        )
        registered = http.post(
            f"{base}/push/sends", content=sends, headers={"Content-Type": "application/json"}
        )
        assert registered.status_code == 200, registered.text
        report = b"smsMsgId=m1&status=SMGPERR%3A0012&updateTime=2026-11-26T10%3A00%3A35Z"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        stored = http.post(f"{base}/push/status-report", content=report, headers=form)
        assert stored.status_code == 200, stored.text
        assert exporter.poll_once()
        text = http.get(f"{base}/metrics").text
    assert (
        'msgsms_window_messages{account="push",result="failed",template="tplA",window="1h"} 1.0'
        in text
    )
    assert (
        'msgsms_window_status_code_messages{account="push",category="carrier_rejected",'
        'status_code="SMGPERR:0012",template="tplA",window="1h"} 1.0' in text
    )
