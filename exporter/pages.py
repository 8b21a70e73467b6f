"""HTML pages for people: the landing page with the current window per template."""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from exporter import __version__
from exporter.snapshot import AccountSnapshot, TemplateWindow, WindowSnapshot
from exporter.timestamps import format_rfc3339

DOCS_URL = "https://github.com/msgsms-exporter/msgsms-exporter#readme"

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2733}
table{border-collapse:collapse;margin:1rem 0}
th,td{border:1px solid #ccd3db;padding:.35rem .6rem;text-align:right}
th{background:#eef2f6}td.l,th.l{text-align:left}
.bad{color:#b3261e;font-weight:600}.ok{color:#1b7f3b}.muted{color:#5f6b7a}
nav a{margin-right:1rem}
"""


def _ratio(window: TemplateWindow) -> str:
    ratio = window.failure_ratio
    if ratio is None:
        return '<span class="muted">n/a</span>'
    css = "bad" if ratio >= 0.05 else "ok"
    return f'<span class="{css}">{ratio:.2%}</span>'


def details_link(template_id: str, result: str = "failed", last: str = "1h") -> str:
    """A link into the sending-details view with the filters filled in."""
    return "/details?" + urlencode({"template": template_id, "result": result, "last": last})


def _template_rows(snap: AccountSnapshot, window: WindowSnapshot) -> str:
    names = {t.template_id: t.template_name for t in snap.templates}
    rows = []
    for tw in window.templates:
        failing = ", ".join(f"{escape(c.status_code)} ({c.count})" for c in tw.top_failures[:3])
        link = escape(details_link(tw.template_id, last=window.name))
        rows.append(
            "<tr>"
            f'<td class="l">{escape(names.get(tw.template_id, tw.template_id))}'
            f'<br><span class="muted">{escape(tw.template_id)}</span></td>'
            f"<td>{tw.total}</td><td>{tw.success}</td><td>{tw.failed}</td><td>{tw.sending}</td>"
            f"<td>{_ratio(tw)}</td>"
            f'<td class="l">{failing or "—"}</td>'
            f'<td class="l"><a href="{link}">failed records</a></td>'
            "</tr>"
        )
    return "\n".join(rows)


def _account_section(snap: AccountSnapshot) -> str:
    health = (
        '<span class="ok">up</span>'
        if snap.up
        else f'<span class="bad">down</span> {escape(snap.last_error)}'
    )
    last = format_rfc3339(snap.last_success) if snap.last_success else "never"
    parts = [
        f"<h2>Account {escape(snap.account)}</h2>",
        f"<p>Last poll: {health}; last success {last}; "
        f"poll took {snap.poll_duration or 0:.2f} s; every {snap.poll_interval:.0f} s.</p>",
    ]
    if not snap.windows:
        parts.append('<p class="muted">No window published yet (or data too stale).</p>')
    for window in snap.windows:
        state = "" if window.complete else ' <span class="bad">(incomplete)</span>'
        parts.append(
            f"<h3>Window {escape(window.name)}: {format_rfc3339(window.start)} to "
            f"{format_rfc3339(window.end)}{state}</h3>"
            "<table><tr><th class='l'>Template</th><th>Sent</th><th>Delivered</th>"
            "<th>Failed</th><th>Pending</th><th>Failure ratio</th>"
            "<th class='l'>Top failing codes</th><th class='l'>Details</th></tr>"
            f"{_template_rows(snap, window)}</table>"
        )
    return "\n".join(parts)


def landing_page(snapshots: list[AccountSnapshot]) -> str:
    """The ``/`` page."""
    sections = "\n".join(_account_section(s) for s in snapshots) or (
        '<p class="muted">Waiting for the first poll.</p>'
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>msgsms-exporter</title><style>{STYLE}</style></head><body>"
        f"<h1>msgsms-exporter <span class='muted'>{escape(__version__)}</span></h1>"
        "<p>Huawei Cloud Message &amp; SMS delivery per template, for Prometheus.</p>"
        "<nav><a href='/metrics'>Metrics</a><a href='/details'>Sending details</a>"
        f"<a href='/-/healthy'>Health</a><a href='/-/ready'>Readiness</a>"
        f"<a href='{DOCS_URL}'>Documentation</a></nav>"
        f"{sections}</body></html>"
    )
