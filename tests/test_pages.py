"""The landing page: per-template table, window bounds, poll health, links."""

from __future__ import annotations

from exporter.pages import age, details_link, landing_page
from exporter.snapshot import AccountSnapshot, CodeCount, TemplateWindow, WindowSnapshot
from exporter.status_codes import StatusCategory
from exporter.templates import SmsTemplate
from exporter.timestamps import parse_rfc3339

END = parse_rfc3339("2026-11-26T10:00:00Z")


def _window(template_id: str, success: int, failed: int, sending: int) -> TemplateWindow:
    codes = (
        CodeCount("DELIVRD", StatusCategory.DELIVERED, success),
        CodeCount("E200018", StatusCategory.PLATFORM_CONFIG, failed - 1),
        CodeCount("UNDELIV", StatusCategory.INVALID_NUMBER, 1),
    )
    return TemplateWindow(template_id, success, failed, sending, codes, (), 0.0)


def _snapshot(**overrides: object) -> AccountSnapshot:
    fields: dict[str, object] = {
        "account": "main",
        "up": True,
        "poll_interval": 60.0,
        "templates": (
            SmsTemplate("T1", "Login <code>", "VERIFY_CODE_TYPE"),
            SmsTemplate("T2", "Promo", "PROMOTION_TYPE"),
        ),
        "windows": (
            WindowSnapshot(
                "1h",
                END - 3600,
                END,
                True,
                (_window("T1", 90, 10, 5), _window("T2", 0, 0, 0)),
            ),
        ),
        "last_success": END + 5,
        "poll_duration": 0.25,
        "data_lag": 5.0,
    }
    fields.update(overrides)
    return AccountSnapshot(**fields)  # type: ignore[arg-type]


def test_table_shows_names_ids_counts_and_failure_ratio():
    html = landing_page([_snapshot()], now=END + 47)
    assert 'Login &lt;code&gt;<br><span class="muted">T1</span>' in html
    assert "<td>105</td><td>90</td><td>10</td><td>5</td>" in html
    assert '<span class="bad">10.00%</span>' in html
    assert '<span class="muted">n/a</span>' in html  # nothing final for T2
    assert "<code>" not in html


def test_top_failing_codes_link_to_the_templates_failed_records_with_that_code():
    html = landing_page([_snapshot()], now=END)
    link = "/details?template=T1&amp;result=failed&amp;last=1h&amp;status_code="
    assert (
        f'<a href="{link}E200018" title="platform_config">E200018</a> (9, platform_config)' in html
    )
    assert f'<a href="{link}UNDELIV" title="invalid_number">UNDELIV</a> (1, invalid_number)' in html
    assert "DELIVRD</a>" not in html
    assert '<a href="/details?template=T1&amp;result=sending&amp;last=1h">pending</a>' in html


def test_window_bounds_and_poll_health_are_shown():
    html = landing_page([_snapshot()], now=END + 47)
    assert "sent from 2026-11-26T09:00:00.000Z to 2026-11-26T10:00:00.000Z (end excluded)" in html
    assert "2026-11-26T10:00:05.000Z (42 s ago)" in html
    assert "0.25 s" in html and "60 s" in html


def test_the_window_note_explains_why_the_details_view_counts_differ():
    html = landing_page([_snapshot()], now=END + 47)
    assert "it ends 5 s before the last poll (settle_delay" in html
    assert "“last 1 hour” ends now, so its counts include the newest minutes" in html


def test_a_failing_account_shows_down_and_the_escaped_error():
    snap = _snapshot(up=False, last_error="unavailable: <timeout>", last_success=None, windows=())
    html = landing_page([snap], now=END)
    assert '<span class="bad">down</span>' in html
    assert "unavailable: &lt;timeout&gt;" in html
    assert "never" in html
    assert "No window published yet" in html


def test_links_to_metrics_details_and_docs():
    html = landing_page([], now=END)
    for href in ("/metrics", "/details", "/-/healthy", "/-/ready", "github.com"):
        assert f"href='{href}" in html or href in html
    assert "Waiting for the first poll." in html


def test_details_link_and_age():
    assert details_link("T 1", "sending", "24h") == "/details?template=T+1&result=sending&last=24h"
    assert [age(s) for s in (3, 119, 600, 7200)] == ["3 s", "119 s", "10 min", "2 h"]


def test_a_window_without_templates_says_so_instead_of_an_empty_table():
    empty = WindowSnapshot("1h", END - 3600, END, True, ())
    html = landing_page([_snapshot(templates=(), windows=(empty,))], now=END)
    assert '<td class="l muted" colspan="8">No templates with messages in this window yet.' in html
    assert "No templates with messages" not in landing_page([_snapshot()], now=END)
