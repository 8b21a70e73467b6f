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
form{display:flex;flex-wrap:wrap;gap:.6rem 1rem;align-items:end;margin:1rem 0}
label{display:flex;flex-direction:column;gap:.2rem;font-size:.85rem;color:#3b4654}
input,select,button{font:inherit;font-size:.95rem;color:#1d2733;background:#fff;
border:1px solid #aab4c0;border-radius:4px;padding:.35rem .5rem;min-height:2.1rem}
input:focus,select:focus,button:focus{outline:2px solid #2f6fd6;outline-offset:1px}
input.time{font-variant-numeric:tabular-nums;width:11.5rem}
button{background:#1f5fbf;border-color:#1f5fbf;color:#fff;cursor:pointer;padding:.35rem 1.2rem}
button:hover{background:#174a96}
.scroll{overflow-x:auto;max-width:100%}
#records td{white-space:nowrap}#records td:last-child{white-space:normal;min-width:16rem}
.note{color:#3b4654;background:#f4f7fa;border-left:3px solid #aab4c0;padding:.4rem .8rem;
max-width:60rem}
.error{background:#fde7e5;border:1px solid #b3261e;padding:.5rem .8rem;color:#7a1610}
.pager a,.pager span{margin-right:1rem}
"""


def _ratio(window: TemplateWindow) -> str:
    ratio = window.failure_ratio
    if ratio is None:
        return '<span class="muted">n/a</span>'
    css = "bad" if ratio >= 0.05 else "ok"
    return f'<span class="{css}">{ratio:.2%}</span>'


def nav() -> str:
    """Links to the exporter's pages and the docs."""
    return (
        "<nav><a href='/'>Overview</a><a href='/metrics'>Metrics</a>"
        "<a href='/details'>Sending details</a><a href='/-/healthy'>Health</a>"
        f"<a href='/-/ready'>Readiness</a><a href='{DOCS_URL}'>Documentation</a></nav>"
    )


def age(seconds: float) -> str:
    """A short age for people: ``42 s``, ``3 min``, ``2 h``."""
    if seconds < 120:
        return f"{max(0, round(seconds))} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def details_link(
    template_id: str, result: str = "failed", last: str = "1h", status_code: str = ""
) -> str:
    """A link into the sending-details view with the filters filled in."""
    params = {"template": template_id, "result": result, "last": last}
    if status_code:
        params["status_code"] = status_code
    return "/details?" + urlencode(params)


def _codes(template_id: str, window: TemplateWindow, last: str) -> str:
    links = []
    for code in window.top_failures[:3]:
        link = escape(details_link(template_id, last=last, status_code=code.status_code))
        category = escape(code.category.value)
        links.append(
            f'<a href="{link}" title="{category}">{escape(code.status_code)}</a>'
            f" ({code.count}, {category})"
        )
    return ", ".join(links) or "—"


def _template_rows(snap: AccountSnapshot, window: WindowSnapshot) -> str:
    names = {t.template_id: t.template_name for t in snap.templates}
    rows = []
    for tw in window.templates:
        failed = escape(details_link(tw.template_id, "failed", window.name))
        pending = escape(details_link(tw.template_id, "sending", window.name))
        rows.append(
            f'<tr data-template="{escape(tw.template_id)}">'
            f'<td class="l">{escape(names.get(tw.template_id, tw.template_id))}'
            f'<br><span class="muted">{escape(tw.template_id)}</span></td>'
            f"<td>{tw.total}</td><td>{tw.success}</td><td>{tw.failed}</td><td>{tw.sending}</td>"
            f"<td>{_ratio(tw)}</td>"
            f'<td class="l">{_codes(tw.template_id, tw, window.name)}</td>'
            f'<td class="l"><a href="{failed}">failed</a> · <a href="{pending}">pending</a></td>'
            "</tr>"
        )
    if not rows:  # a new push account, or templates that sent nothing yet
        rows.append(
            '<tr><td class="l muted" colspan="8">No templates with messages in this window'
            " yet. A push account shows its templates once reports or send registrations"
            " arrive (see the README, “Real data from Huawei”).</td></tr>"
        )
    return "\n".join(rows)


def _health(snap: AccountSnapshot, now: float | None) -> str:
    state = '<span class="ok">up</span>' if snap.up else '<span class="bad">down</span>'
    if snap.last_success is None:
        last = "never"
    else:
        ago = f" ({age(now - snap.last_success)} ago)" if now is not None else ""
        last = f"{format_rfc3339(snap.last_success)}{ago}"
    duration = "—" if snap.poll_duration is None else f"{snap.poll_duration:.2f} s"
    error = (
        f'<tr><th class="l">Last error</th><td class="l bad">{escape(snap.last_error)}</td></tr>'
        if snap.last_error
        else ""
    )
    return (
        '<table class="health">'
        f'<tr><th class="l">Last poll</th><td class="l">{state}</td></tr>'
        f'<tr><th class="l">Last success</th><td class="l">{last}</td></tr>'
        f'<tr><th class="l">Poll duration</th><td class="l">{duration}</td></tr>'
        f'<tr><th class="l">Poll interval</th><td class="l">{snap.poll_interval:.0f} s</td></tr>'
        f'<tr><th class="l">Data lag</th><td class="l">{snap.data_lag:.0f} s</td></tr>'
        f"{error}</table>"
    )


def _account_section(snap: AccountSnapshot, now: float | None) -> str:
    parts = [f"<h2>Account {escape(snap.account)}</h2>", _health(snap, now)]
    if not snap.windows:
        parts.append('<p class="muted">No window published yet (or data too stale).</p>')
    else:
        parts.append(
            '<p class="note window-note">The counts below are for the window shown: it ends '
            f"{age(snap.data_lag)} before the last poll (settle_delay, rounded "
            "down to the minute), once most status reports are in. The sending-details "
            "view's “last 1 hour” ends now, so its counts include the newest minutes and "
            "differ from these; its pending messages also resolve as reports arrive.</p>"
        )
    for window in snap.windows:
        state = "" if window.complete else ' <span class="bad">(incomplete)</span>'
        parts.append(
            f"<h3>Window {escape(window.name)}: sent from {format_rfc3339(window.start)} "
            f"to {format_rfc3339(window.end)} (end excluded){state}</h3>"
            f'<table class="templates" data-account="{escape(snap.account)}">'
            "<tr><th class='l'>Template</th><th>Sent</th><th>Delivered</th>"
            "<th>Failed</th><th>Pending</th><th>Failure ratio</th>"
            "<th class='l'>Top failing codes</th><th class='l'>Records</th></tr>"
            f"{_template_rows(snap, window)}</table>"
        )
    return "\n".join(parts)


def landing_page(
    snapshots: list[AccountSnapshot], now: float | None = None, details_withheld: str | None = None
) -> str:
    """The ``/`` page; ``now`` (epoch seconds) shows the age of the last success;
    ``details_withheld`` says why the links into ``/details`` answer 403, while they do."""
    sections = "\n".join(_account_section(s, now) for s in snapshots) or (
        '<p class="muted">Waiting for the first poll.</p>'
    )
    if details_withheld is not None:
        withheld = escape(details_withheld[:1].upper() + details_withheld[1:])
        sections = f'<p class="note details-withheld">{withheld}.</p>\n{sections}'
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>msgsms-exporter</title><style>{STYLE}</style></head><body>"
        f"<h1>msgsms-exporter <span class='muted'>{escape(__version__)}</span></h1>"
        "<p>Huawei Cloud Message &amp; SMS delivery per template, for Prometheus. "
        "Failure ratio = failed / (delivered + failed); pending messages have no report "
        "yet. Open a template's failed records in the sending-details view.</p>"
        f"{nav()}{sections}</body></html>"
    )
