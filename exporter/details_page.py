"""The sending-details view rendered for people: an HTML page and a plain-text table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import urlencode

from exporter.details import PAGE_SIZE, QUICK_RANGES, RESULTS, DetailsFilter, DetailsOutcome
from exporter.details_fetch import Scan
from exporter.pages import STYLE, nav
from exporter.records import SendRecord, SendResult, mask_mobile
from exporter.status_codes import categorize, describe
from exporter.templates import SmsTemplate

COLUMNS = (
    "Send time",
    "Template",
    "Mobile",
    "Result",
    "Status code",
    "Category",
    "Receive time",
    "Segments",
    "Message ID",
    "Meaning",
)
RESULT_LABELS = {
    SendResult.SUCCESS: "Successful",
    SendResult.FAILED: "Failed",
    SendResult.SENDING: "Sending",
}
PENDING_MEANING = "Sent to the carrier; no status report yet."
TIME_INPUT = 'placeholder="YYYY-MM-DD hh:mm:ss" autocomplete="off" spellcheck="false"'
WINDOW_NOTE = (
    "“Last 1 hour” ends now. The overview and /metrics count a window that ends "
    "<code>settle_delay</code> (3 minutes by default) before each poll, rounded down to "
    "the minute, so that most status reports are in: their counts lag this view's."
)


def when(seconds: float | None) -> str:
    """A UTC time for people: ``2026-11-26 10:00:00``."""
    if seconds is None:
        return "—"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _time_input(seconds: float) -> str:
    return when(seconds)  # the table's own ISO 24-hour format, whatever the browser's locale


def record_cells(record: SendRecord, names: Mapping[str, str]) -> tuple[str, ...]:
    """One record as the view shows it, in :data:`COLUMNS` order (not escaped)."""
    final = record.send_result is not SendResult.SENDING
    return (
        when(record.send_time),
        names.get(record.template_id, record.template_id),
        mask_mobile(record.mobile) if record.mobile else "—",
        RESULT_LABELS[record.send_result],
        record.status_code if final else "—",
        categorize(record.status_code).value if final else "pending",
        when(record.receive_time),
        str(record.segments),
        record.message_id,
        describe(record.status_code) if final else PENDING_MEANING,
    )


def page_count(total: int) -> int:
    """Pages of :data:`PAGE_SIZE` records (at least one)."""
    return max(1, -(-total // PAGE_SIZE))


def summary(details: DetailsFilter, total: int) -> str:
    """``57 records sent 2026-... to 2026-... UTC · page 2 of 6`` (not escaped)."""
    noun = "record" if total == 1 else "records"
    code = f" with status code {details.status_code}" if details.status_code else ""
    return (
        f"{total} {noun}{code} sent {when(details.start)} to {when(details.end)} UTC"
        f" · account {details.account} · page {details.page} of {page_count(total)}"
    )


def scan_note(scan: Scan | None) -> str:
    """What a status-code filter could not read, or "" (not escaped)."""
    if scan is None or scan.complete:
        return ""
    return (
        f"The platform cannot filter by status code: the first {scan.read:,} of "
        f"{scan.total:,} records were searched. Narrow the sending time to search them all."
    )


def _options(choices: Sequence[tuple[str, str]], selected: str) -> str:
    return "".join(
        f'<option value="{escape(value)}"{" selected" if value == selected else ""}>'
        f"{escape(label)}</option>"
        for value, label in choices
    )


def _form(outcome: DetailsOutcome) -> str:
    form, details = outcome.form, outcome.details
    account = details.account if details else form.get("account", "")
    template = details.template_id or "" if details else form.get("template", "")
    result = (details.result.value if details.result else "all") if details else "all"
    if not details:
        result = form.get("result", "all") or "all"
    last = details.last if details else form.get("last", "")
    start = _time_input(details.start) if details else form.get("start", "")
    end = _time_input(details.end) if details else form.get("end", "")
    mobile = (details.mobile or "") if details else form.get("mobile", "")
    code = (details.status_code or "") if details else form.get("status_code", "")
    ranges = [("", "custom range"), *QUICK_RANGES]
    if last and last not in dict(ranges):
        ranges.append((last, f"last {last}"))
    fields = []
    if len(outcome.accounts) > 1:
        accounts = [(a, a) for a in outcome.accounts]
        fields.append(
            f'<label>Account <select name="account" id="account">'
            f"{_options(accounts, account)}</select></label>"
        )
    templates = [("", "all templates")] + [
        (t.template_id, f"{t.template_name} ({t.template_id})") for t in outcome.templates
    ]
    if template and template not in dict(templates):
        templates.append((template, template))
    custom = "onchange=\"this.form.last.value=''\""
    fields += [
        f'<label>Template <select name="template" id="template">'
        f"{_options(templates, template)}</select></label>",
        f'<label>Mobile number <input name="mobile" id="mobile" value="{escape(mobile)}" '
        'placeholder="4402000000" inputmode="numeric" size="16"></label>',
        f'<label>Send result <select name="result" id="result">'
        f"{_options([(r, r) for r in RESULTS], result)}</select></label>",
        f'<label>Status code <input name="status_code" id="status_code" value="{escape(code)}" '
        'placeholder="any" size="10"></label>',
        f'<label>Quick range <select name="last" id="last">{_options(ranges, last)}</select>'
        "</label>",
        f'<label>Start (UTC) <input class="time" name="start" id="start" {TIME_INPUT} '
        f'value="{escape(start)}" {custom}></label>',
        f'<label>End (UTC) <input class="time" name="end" id="end" {TIME_INPUT} '
        f'value="{escape(end)}" {custom}></label>',
        '<button type="submit" id="search">Search</button>',
    ]
    return '<form method="get" action="/details" id="filters">' + "".join(fields) + "</form>"


def _pager(details: DetailsFilter, total: int) -> str:
    pages = page_count(total)
    links = []
    if details.page > 1:
        href = "/details?" + urlencode(details.link_params(min(details.page - 1, pages)))
        links.append(f'<a id="prev" rel="prev" href="{escape(href)}">← Previous</a>')
    links.append(f'<span id="page">Page {details.page} of {pages}</span>')
    if details.page < pages:
        href = "/details?" + urlencode(details.link_params(details.page + 1))
        links.append(f'<a id="next" rel="next" href="{escape(href)}">Next →</a>')
    return '<nav class="pager">' + "".join(links) + "</nav>"


def _table(records: Sequence[SendRecord], names: Mapping[str, str]) -> str:
    head = "".join(f'<th class="l">{escape(c)}</th>' for c in COLUMNS)
    rows = []
    for record in records:
        cells = record_cells(record, names)
        css = {"Failed": "bad", "Successful": "ok"}.get(cells[3], "muted")
        tds = "".join(
            f'<td class="l{" " + css if i == 3 else ""}">{escape(c)}</td>'
            for i, c in enumerate(cells)
        )
        rows.append(f"<tr>{tds}</tr>")
    body = "".join(rows)
    # Scrolls in its own box: the page (form, summary, pager) stays the window's width.
    return (
        f'<div class="scroll"><table id="records"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def details_html(outcome: DetailsOutcome) -> str:
    """The ``/details`` page."""
    parts = [_form(outcome)]
    if outcome.message:
        parts.append(f'<p class="error" id="error" role="alert">{escape(outcome.message)}</p>')
    details, page = outcome.details, outcome.page
    if details is not None and page is not None:
        names = {t.template_id: t.template_name for t in outcome.templates}
        parts.append(f'<p id="summary">{escape(summary(details, page.total))}</p>')
        if note := scan_note(outcome.scan):
            parts.append(f'<p class="note" id="scan">{escape(note)}</p>')
        if page.total == 0:
            parts.append('<p class="muted" id="empty">No records match these filters.</p>')
        elif not page.records:
            parts.append(
                f'<p class="muted" id="empty">Page {details.page} is past the last page '
                f"({page_count(page.total)}).</p>"
            )
        else:
            parts.append(_table(page.records, names))
        if page.rejected:
            parts.append(
                f'<p class="bad">{len(page.rejected)} malformed record(s) on this page '
                "were skipped.</p>"
            )
        parts.append(_pager(details, page.total))
    elif not outcome.message:
        parts.append('<p class="muted">Choose filters and press Search.</p>')
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Sending details · msgsms-exporter</title><style>{STYLE}</style></head><body>"
        f"<h1>Sending details</h1>{nav()}"
        "<p class='muted'>The console's “Viewing Sending Details”: at most one query at a "
        f"time per account, {PAGE_SIZE} records a page, times in UTC.</p>"
        f'<p class="note" id="window-note">{WINDOW_NOTE}</p>'
        f"{''.join(parts)}</body></html>"
    )


def details_text(outcome: DetailsOutcome, templates: Sequence[SmsTemplate] = ()) -> str:
    """The same result as plain-text columns, for the terminal."""
    details, page = outcome.details, outcome.page
    if details is None or page is None:
        return outcome.message + "\n"
    names = {t.template_id: t.template_name for t in (templates or outcome.templates)}
    rows = [tuple(c.upper() for c in COLUMNS)]
    rows += [record_cells(r, names) for r in page.records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [summary(details, page.total)]
    if note := scan_note(outcome.scan):
        lines.append(note)
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    if page.total == 0:
        lines.append("No records match these filters.")
    elif not page.records:
        lines.append(f"page {details.page} is past the last page ({page_count(page.total)})")
    return "\n".join(lines) + "\n"
