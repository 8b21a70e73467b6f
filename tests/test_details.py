"""The sending-details view: form validation, the one-query rule, rendering, the CLI."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DEMO_AK, DEMO_SK, PROJECT, START, Simulator
from health import free_port
from simulator_process import simulator_process

from exporter.details import (
    LOOKBACK_SECONDS,
    DetailsFilter,
    DetailsQueries,
    FormError,
    OneQueryAtATime,
    fetch_page,
    parse_filter,
)
from exporter.details_cli import run_details_command
from exporter.details_fetch import SCAN_RECORDS, Scan
from exporter.details_page import details_html, details_text, record_cells
from exporter.errors import UpstreamRejected, UpstreamUnavailable
from exporter.records import DetailsPage, DetailsQuery, SendRecord, SendResult
from exporter.stats import RequestStats
from exporter.templates import SmsTemplate
from exporter.timestamps import parse_rfc3339

NOW = parse_rfc3339("2026-11-26T10:00:00Z")
LOGIN = SmsTemplate("T-LOGIN", "Login code", "VERIFY_CODE_TYPE")
PROMO = SmsTemplate("T-PROMO", "Promo <b>", "PROMOTION_TYPE")
HOUR = 3600.0


def _templates(_account: str) -> list[SmsTemplate]:
    return [LOGIN, PROMO]


def parse(**form: str) -> DetailsFilter:
    return parse_filter(form, now=NOW, accounts=["main"], templates=_templates, max_span=24 * HOUR)


def error_of(**form: str) -> str:
    with pytest.raises(FormError) as caught:
        parse(**form)
    return str(caught.value)


# ------------------------------------------------------------------------------ validation


def test_quick_range_ends_now_and_keeps_the_filters():
    details = parse(template="T-LOGIN", result="failed", last="1h")
    assert details == DetailsFilter(
        account="main",
        start=NOW - HOUR,
        end=NOW,
        template_id="T-LOGIN",
        result=SendResult.FAILED,
        last="1h",
    )
    assert details.query() == DetailsQuery(
        start_time=NOW - HOUR,
        end_time=NOW,
        template_id="T-LOGIN",
        send_result=SendResult.FAILED,
        offset=0,
        limit=10,
    )


def test_last_24_hours_and_any_dashboard_window_are_quick_ranges():
    assert parse(last="24h").start == NOW - 24 * HOUR
    assert parse(last="30m").start == NOW - 1800


def test_no_time_given_means_the_last_hour():
    details = parse(result="all")
    assert (details.start, details.end, details.result, details.last) == (
        NOW - HOUR,
        NOW,
        None,
        "1h",
    )


def test_rfc3339_and_the_views_own_iso_24_hour_times_are_utc():
    a = parse(start="2026-11-26T08:00:00Z", end="2026-11-26T09:30:00+00:00")
    b = parse(start="2026-11-26T08:00", end="2026-11-26T09:30:00")
    c = parse(start="2026-11-26 08:00:00", end="2026-11-26 09:30")
    assert (a.start, a.end) == (b.start, b.end) == (c.start, c.end) == (NOW - 2 * HOUR, NOW - 1800)


def test_a_status_code_is_kept_in_the_filter_and_its_page_links():
    details = parse(template="T-LOGIN", result="failed", last="1h", status_code="MK:0001")
    assert details.status_code == "MK:0001"
    assert details.link_params(2)["status_code"] == "MK:0001"
    assert error_of(status_code="<b>") == (
        "Status code: up to 32 letters, digits and : _ . - (e.g. MK:0001)."
    )


def test_template_is_chosen_by_id_or_by_name():
    assert parse(template="Login code").template_id == "T-LOGIN"
    assert parse(template="T-PROMO").template_id == "T-PROMO"


def test_page_selects_the_offset():
    assert parse(page="3").query().offset == 20


def test_mobile_with_country_code_is_accepted():
    assert parse(mobile="4402000000").mobile == "4402000000"
    assert parse(mobile=" 44 0200 0000 ").mobile == "4402000000"


def test_rejects_a_25_hour_range():
    assert error_of(start="2026-11-25T09:00:00Z", end="2026-11-26T10:00:00Z") == (
        "Sending time: the range spans 25 h; a query may span at most 24 h."
    )
    assert (
        error_of(last="25h") == "Sending time: the range spans 25 h; a query may span at most 24 h."
    )


def test_rejects_a_start_older_than_the_lookback():
    start = NOW - LOOKBACK_SECONDS - HOUR
    assert (
        error_of(start=f"{_iso(start)}", end=f"{_iso(start + HOUR)}")
        == "Sending time: the start is older than 60 days; sending details are kept 60 days."
    )


def test_rejects_an_end_before_the_start():
    assert error_of(start="2026-11-26T09:00:00Z", end="2026-11-26T08:00:00Z") == (
        "Sending time: the end must be after the start."
    )


def test_rejects_half_a_custom_range():
    assert error_of(start="2026-11-26T09:00:00Z") == (
        "Sending time: give both a start and an end, or choose a quick range."
    )


def test_rejects_a_malformed_time():
    assert error_of(start="yesterday", end="2026-11-26T08:00:00Z") == (
        "Start: not a time; use 2026-11-26 10:00:00 (UTC) or RFC 3339 (2026-11-26T10:00:00Z)."
    )


def test_rejects_a_bad_quick_range():
    assert error_of(last="an hour") == "Quick range: use a duration such as 1h or 24h."
    assert error_of(last="0h") == "Quick range: use a duration such as 1h or 24h."


@pytest.mark.parametrize("mobile", ["+4402000000", "0402000000", "44020", "4402abc000", "4" * 16])
def test_rejects_a_malformed_mobile_number(mobile):
    assert error_of(mobile=mobile) == (
        "Mobile number: use 7 to 15 digits with the country code and no '+', e.g. 4402000000."
    )


def test_rejects_an_unknown_template():
    assert error_of(template="T-NOPE") == "Template: account main has no template 'T-NOPE'."


def test_an_unknown_template_or_account_is_echoed_at_most_60_characters():
    long = "x" * 5000
    assert error_of(template=long) == f"Template: account main has no template {'x' * 60!r}...."
    assert error_of(account=long).startswith(f"Account: no account {'x' * 60!r}...; choose")


def test_rejects_an_unknown_result_and_page():
    assert error_of(result="delivered") == "Send result: choose all, success, failed or sending."
    assert error_of(page="0") == "Page: expected a whole number from 1 to 100000."
    assert error_of(page="x") == "Page: expected a whole number from 1 to 100000."


@pytest.mark.parametrize("page", ["9" * 5000, "\u00b2", "100001"])
def test_rejects_a_page_of_thousands_of_digits_or_foreign_digits(page):
    assert error_of(page=page) == "Page: expected a whole number from 1 to 100000."


def test_rejects_a_time_that_is_past_year_9999_in_utc():
    # Both bounds are in year 10000 once read as UTC: no date could show them in the page.
    message = error_of(start="9999-12-31T22:00:00-23:59", end="9999-12-31T23:59:59-23:59")
    assert message.startswith("Start: not a time;")


def test_rejects_a_mobile_number_with_a_full_width_digit():
    assert error_of(mobile="4\uff14020000000").startswith("Mobile number: use 7 to 15 digits")


def test_account_is_validated_and_found_by_template():
    def templates(account: str) -> list[SmsTemplate]:
        return [LOGIN] if account == "a" else [PROMO]

    def run(**form: str) -> DetailsFilter:
        return parse_filter(form, now=NOW, accounts=["a", "b"], templates=templates, max_span=86400)

    assert run(template="T-PROMO").account == "b"
    assert run().account == "a"
    with pytest.raises(FormError, match=r"^Account: no account 'c'; choose one of a, b\.$"):
        run(account="c")


def _iso(seconds: float) -> str:
    from exporter.timestamps import format_rfc3339

    return format_rfc3339(seconds)


# --------------------------------------------------------------------- queries (fake source)


def _record(n: int, result: SendResult = SendResult.FAILED, code: str = "E200018") -> SendRecord:
    return SendRecord(
        message_id=f"m-{n}",
        template_id="T-PROMO",
        mobile="4402000000",
        send_time=NOW - 600 + n,
        send_result=result,
        status_code=code if result is not SendResult.SENDING else "",
        status_desc="",
        receive_time=None if result is SendResult.SENDING else NOW - 590 + n,
        segments=1,
    )


class FakeSource:
    """A details source in memory; ``gate`` (when set) holds each query until released."""

    def __init__(self, records: list[SendRecord], errors: list[Exception] | None = None) -> None:
        self.records = records
        self.errors = list(errors or [])
        self.stats = RequestStats()
        self.queries: list[DetailsQuery] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def query(self, query: DetailsQuery) -> DetailsPage:
        self.queries.append(query)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.errors:
            raise self.errors.pop(0)
        page = self.records[query.offset : query.offset + query.limit]
        return DetailsPage(total=len(self.records), records=page)

    def list_templates(self) -> list[SmsTemplate]:
        return [LOGIN, PROMO]


def _queries(source: FakeSource) -> DetailsQueries:
    return DetailsQueries(
        {"main": source}, max_span=86400, clock=lambda: NOW, sleep=lambda _s: None
    )


def test_a_status_code_filter_reads_the_records_and_pages_through_the_matches():
    records = [_record(n, code="MK:0001" if n % 7 == 0 else "E200018") for n in range(250)]
    source = FakeSource(records)
    outcome = _queries(source).run({"last": "1h", "status_code": "MK:0001", "page": "2"})
    matches = [r for r in records if r.status_code == "MK:0001"]
    assert outcome.page == DetailsPage(total=len(matches), records=matches[10:20])
    assert [(q.offset, q.limit) for q in source.queries] == [(0, 100), (100, 100), (200, 100)]
    assert outcome.scan == Scan(read=250, total=250)
    html = details_html(outcome)
    assert f"{len(matches)} records with status code MK:0001 sent" in html
    assert 'id="scan"' not in html
    assert "status_code=MK%3A0001" in html  # the pager keeps the filter


def test_a_status_code_filter_says_when_it_could_not_read_every_record():
    source = FakeSource([_record(n, code="MK:0001") for n in range(SCAN_RECORDS + 5)])
    outcome = _queries(source).run({"last": "1h", "status_code": "MK:0001"})
    assert outcome.scan == Scan(read=SCAN_RECORDS, total=SCAN_RECORDS + 5)
    assert len(source.queries) == SCAN_RECORDS // 100
    assert (
        "The platform cannot filter by status code: the first 2,000 of 2,005 records were "
        "searched. Narrow the sending time to search them all."
    ) in details_text(outcome).splitlines()


def test_the_form_shows_iso_24_hour_times_and_explains_its_window():
    outcome = _queries(FakeSource([_record(1)])).run({"last": "1h"})
    html = details_html(outcome)
    assert 'value="2026-11-26 09:00:00"' in html and 'value="2026-11-26 10:00:00"' in html
    assert "datetime-local" not in html
    assert "“Last 1 hour” ends now. The overview and /metrics count a window that ends" in html


def test_a_second_query_of_the_same_account_is_refused_while_one_runs():
    source = FakeSource([_record(n) for n in range(3)])
    source.gate = threading.Event()
    queries = _queries(source)
    outcomes = []
    first = threading.Thread(target=lambda: outcomes.append(queries.run({"last": "1h"})))
    first.start()
    assert source.entered.wait(10)
    second = queries.run({"last": "1h"})
    source.gate.set()
    first.join(10)
    assert second.status == 429
    assert second.message == (
        "Another sending-details query for account main is still running; the platform "
        "answers one query at a time. Try again when it has finished."
    )
    assert [o.status for o in outcomes] == [200]
    assert len(source.queries) == 1
    assert "Another sending-details query" in details_html(second)


def test_upstream_busy_is_retried_then_answered():
    busy = UpstreamRejected("send_details: HTTP 429", status=429, retry_after=1.0)
    source = FakeSource([_record(1)], errors=[busy])
    outcome = _queries(source).run({"last": "1h"})
    assert outcome.status == 200
    assert len(source.queries) == 2


def test_upstream_failure_is_a_502_page_with_a_message():
    source = FakeSource([], errors=[UpstreamUnavailable("send_details: HTTP 503", status=503)])
    outcome = _queries(source).run({"last": "1h"})
    assert outcome.status == 502
    assert outcome.message == (
        "The Message & SMS platform did not answer the query (unavailable: send_details: "
        "HTTP 503). The exporter keeps serving; try again in a moment."
    )
    assert "Traceback" not in details_html(outcome)


def test_bad_input_is_a_400_page_that_keeps_the_form():
    outcome = _queries(FakeSource([])).run({"last": "25h", "mobile": "<script>"})
    assert outcome.status == 400
    html = details_html(outcome)
    assert 'id="error" role="alert">Mobile number: use 7 to 15 digits' in html
    assert 'value="&lt;script&gt;"' in html and "<script>" not in html
    assert '<option value="25h" selected>last 25h</option>' in html


def test_no_filters_shows_only_the_form():
    source = FakeSource([_record(1)])
    outcome = _queries(source).run({})
    assert (outcome.status, outcome.page, source.queries) == (200, None, [])
    assert "Choose filters" in details_html(outcome)


def test_fetch_page_gives_up_after_the_retries():
    busy = UpstreamRejected("busy", status=429)
    source = FakeSource([], errors=[busy, busy, busy])
    with pytest.raises(UpstreamRejected):
        fetch_page(source, parse(last="1h"), sleep=lambda _s: None)


def test_one_query_at_a_time_wrapper_serializes_queries():
    source = FakeSource([_record(1)])
    wrapped = OneQueryAtATime(source)
    with wrapped.lock:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (wrapped.query(parse().query()), done.set()))
        thread.start()
        assert not done.wait(0.2)
    thread.join(10)
    assert done.is_set()
    assert wrapped.stats is source.stats
    assert wrapped.list_templates() == [LOGIN, PROMO]


# ------------------------------------------------------------------------------- rendering


def test_record_cells_show_masked_number_category_and_meaning():
    names = {"T-PROMO": "Promo <b>"}
    assert record_cells(_record(1), names) == (
        "2026-11-26 09:50:01",
        "Promo <b>",
        "4402****00",
        "Failed",
        "E200018",
        "platform_config",
        "2026-11-26 09:50:11",
        "1",
        "m-1",
        "Sender channel check failed (signature not approved or wrong sender).",
    )
    assert record_cells(_record(2, SendResult.SENDING), names)[3:8] == (
        "Sending",
        "—",
        "pending",
        "—",
        "1",
    )


def test_page_escapes_html_and_pages_with_fixed_times():
    source = FakeSource([_record(n) for n in range(25)])
    outcome = _queries(source).run(
        {"template": "T-PROMO", "result": "failed", "last": "1h", "page": "2"}
    )
    html = details_html(outcome)
    assert "Promo &lt;b&gt;" in html and "Promo <b>" not in html
    assert html.count("<tr><td") == 10
    assert "25 records sent 2026-11-26 09:00:00 to 2026-11-26 10:00:00 UTC" in html
    assert 'id="prev"' in html and 'id="next"' in html
    assert (
        "/details?account=main&amp;template=T-PROMO&amp;result=failed"
        "&amp;start=2026-11-26T09%3A00%3A00.000Z&amp;end=2026-11-26T10%3A00%3A00.000Z&amp;page=3"
    ) in html
    last = _queries(source).run({"template": "T-PROMO", "last": "1h", "page": "3"})
    assert 'id="next"' not in details_html(last)


def test_text_table_says_when_nothing_matches_as_the_page_does():
    text = details_text(_queries(FakeSource([])).run({"last": "1h"}))
    assert text.splitlines()[-1] == "No records match these filters."
    assert "No records match" not in details_text(_queries(FakeSource([_record(1)])).run({}))


def test_text_table_has_a_header_and_one_line_per_record():
    source = FakeSource([_record(n) for n in range(3)])
    text = details_text(_queries(source).run({"last": "1h"}))
    lines = text.splitlines()
    assert (
        lines[0]
        == "3 records sent 2026-11-26 09:00:00 to 2026-11-26 10:00:00 UTC · account main · page 1 of 1"
    )
    assert lines[1].split()[:3] == ["SEND", "TIME", "TEMPLATE"]
    assert len(lines) == 5
    assert "4402****00" in lines[2] and "4402000000" not in text


# ------------------------------------------------------------------- the CLI, real simulator


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    args = ("--clock", "manual", "--start-time", START, "--history", "2h", "--scale", "0.05")
    with simulator_process(*args) as url, httpx.Client(timeout=30) as http:
        yield Simulator(url, http)


@pytest.fixture(scope="module")
def config_file(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("details") / "config.yaml"
    path.write_text(
        "accounts:\n"
        "  - name: sim\n"
        f"    endpoint: {simulator.url}\n"
        f"    project_id: {PROJECT}\n"
        f"    credentials: {{access_key: {{env: DETAILS_TEST_AK}}, secret_key: {{env: DETAILS_TEST_SK}}}}\n"
        "    templates: {discover: true}\n"
    )
    return path


def test_cli_prints_the_failed_records_of_a_template(
    simulator: Simulator, config_file: Path, capsys, monkeypatch
):
    monkeypatch.setenv("DETAILS_TEST_AK", DEMO_AK)
    monkeypatch.setenv("DETAILS_TEST_SK", DEMO_SK)
    argv = [
        "--config.file",
        str(config_file),
        "--template",
        "International sender check",
        "--result",
        "failed",
        "--last",
        "1h",
    ]
    assert run_details_command(argv, clock=simulator.now) == 0
    out = capsys.readouterr().out.splitlines()
    start, end = parse_rfc3339(START) - HOUR, parse_rfc3339(START)
    failed = simulator.truth(start, end)["9a4c6e8f0b1d3f5a7c9e1b3d5f7a9c37"]["failed"]
    assert 1 <= failed <= 10
    assert out[0].startswith(
        f"{failed} records sent 2026-11-26 09:00:00 to 2026-11-26 10:00:00 UTC"
    )
    assert len(out) == 2 + failed
    assert all("International sender check" in line and " Failed " in line for line in out[2:])


def test_cli_reports_bad_input_on_stderr_with_exit_2(simulator, config_file, capsys, monkeypatch):
    monkeypatch.setenv("DETAILS_TEST_AK", DEMO_AK)
    monkeypatch.setenv("DETAILS_TEST_SK", DEMO_SK)
    argv = ["--config.file", str(config_file), "--last", "25h"]
    assert run_details_command(argv, clock=simulator.now) == 2
    assert capsys.readouterr().err == (
        "msgsms-exporter details: Sending time: the range spans 25 h; a query may span at most 24 h.\n"
    )


def test_cli_says_the_platform_failed_without_claiming_an_exporter_keeps_serving(
    tmp_path: Path, capsys, monkeypatch
):
    # The page's "The exporter keeps serving" is not true of a command in a terminal.
    monkeypatch.setenv("DETAILS_TEST_AK", DEMO_AK)
    monkeypatch.setenv("DETAILS_TEST_SK", DEMO_SK)
    path = tmp_path / "refused.yaml"
    path.write_text(
        "accounts:\n"
        "  - name: sim\n"
        f"    endpoint: http://127.0.0.1:{free_port()}\n"
        f"    project_id: {PROJECT}\n"
        "    credentials: {access_key: {env: DETAILS_TEST_AK}, secret_key: {env: DETAILS_TEST_SK}}\n"
        "    templates: {discover: true}\n"
        "request_timeout: 2s\n"
    )
    assert run_details_command(["--config.file", str(path), "--last", "1h"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("msgsms-exporter details: The Message & SMS platform did not answer")
    assert err.endswith("). Try again in a moment.\n")
    assert "exporter keeps serving" not in err


def test_main_dispatches_the_details_subcommand(simulator, config_file, capsys, monkeypatch):
    from exporter.cli import main

    monkeypatch.setenv("DETAILS_TEST_AK", DEMO_AK)
    monkeypatch.setenv("DETAILS_TEST_SK", DEMO_SK)
    assert main(["details", "--config.file", str(config_file), "--mobile", "+44"]) == 2
    assert "Mobile number: use 7 to 15 digits" in capsys.readouterr().err


def test_cli_names_where_a_push_accounts_records_are_instead_of_a_url_error(tmp_path: Path, capsys):
    # It used to query the push account as an HTTP upstream without an endpoint:
    # "Request URL is missing an 'http://' or 'https://' protocol. The exporter keeps serving".
    path = tmp_path / "push.yaml"
    path.write_text(
        "accounts: [{name: prod, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}}}\n"
    )
    argv = ["--config.file", str(path), "--result", "failed"]
    assert run_details_command(argv) == 1
    assert capsys.readouterr().err == (
        "msgsms-exporter details: account 'prod' reads the receiver's push store, which only"
        " the running exporter serves: open /details?account=prod on it, or its"
        " GET /api/v1/send-details (receiver.details_api: true)\n"
    )
    assert not (tmp_path / "push.db").exists()


def test_cli_queries_the_polled_accounts_of_a_config_that_also_has_a_push_account(
    simulator: Simulator, config_file: Path, capsys, monkeypatch
):
    monkeypatch.setenv("DETAILS_TEST_AK", DEMO_AK)
    monkeypatch.setenv("DETAILS_TEST_SK", DEMO_SK)
    mixed = config_file.with_name("mixed.yaml")
    text = config_file.read_text().replace(
        "accounts:\n", "accounts:\n  - {name: pushed, source: push, templates: {discover: true}}\n"
    )
    mixed.write_text(text + f"receiver: {{store_path: {config_file.parent / 'push.db'}}}\n")
    argv = ["--config.file", str(mixed), "--result", "failed", "--last", "1h"]
    assert run_details_command(argv, clock=simulator.now) == 0
    assert " records sent " in capsys.readouterr().out
    assert run_details_command([*argv, "--account", "pushed"], clock=simulator.now) == 1
    assert "account 'pushed' reads the receiver's push store" in capsys.readouterr().err
