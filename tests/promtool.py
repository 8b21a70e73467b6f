"""Helpers shared by the rule, dashboard and end-to-end tests: tools, rules, dashboards, PromQL.

Import from a test module (pytest puts `tests/` on sys.path):

    from promtool import dashboard_expressions, metric_names, require_tool
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from health import free_port, stop

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "config" / "prometheus"
RULES = RULES_DIR / "msgsms-rules.yml"
# promtool unit tests: one file a rule evaluation interval (1m; 5m for the day-long ones).
RULES_TESTS = sorted(RULES_DIR.glob("*.test.yml"))
PROMETHEUS_EXAMPLE = RULES_DIR / "prometheus.example.yml"
DASHBOARDS_DIR = REPO / "dashboards"
DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))
FIXTURE_EXPOSITION = REPO / "tests" / "fixtures" / "exposition.prom"
ALERTS_DOC = REPO / "docs" / "alerts.md"

# Values for Grafana's variables when an expression leaves the dashboard: regex variables
# match everything, the window is the exporter's default one.
DEFAULT_VARIABLES: dict[str, str] = {
    "job": ".+",
    "account": ".+",
    "template": ".+",
    "window": "1h",
    "datasource": "prometheus",
    "exporter_url": "http://localhost:9170",
    "__rate_interval": "2m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
}


# ------------------------------------------------------------------------------------ tools


def require_tool(name: str) -> str:
    """The tool's path; a skip on a developer machine, a failure under CI=true."""
    # Tools installed with the test dependencies (hadolint) sit next to this interpreter.
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        message = f"{name} is not installed (./scripts/test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with `args`; the completed process, output captured as text."""
    promtool = require_tool("promtool")
    return subprocess.run(
        [promtool, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


# ------------------------------------------------------------------------------------ rules


def load_rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    """The rule groups of a Prometheus rule file."""
    data = yaml.safe_load(path.read_text())
    groups: list[dict[str, Any]] = data["groups"]
    return groups


def alerting_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """Every alerting rule of a rule file, in file order."""
    return [rule for group in load_rule_groups(path) for rule in group["rules"] if "alert" in rule]


def recording_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """Every recording rule of a rule file, in file order."""
    return [rule for group in load_rule_groups(path) for rule in group["rules"] if "record" in rule]


def markdown_anchors(text: str) -> set[str]:
    """The anchors GitHub generates for a Markdown document's headings."""
    anchors = set()
    for line in text.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        title = heading.group(1).strip().lower()
        title = re.sub(r"[^\w\- ]", "", title)
        anchors.add(title.replace(" ", "-"))
    return anchors


# ------------------------------------------------------------------------------- exposition


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)")


def exposition_metric_names(text: str) -> set[str]:
    """The names of the samples in a Prometheus text exposition (`_bucket`, `_total`, ...)."""
    names = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample = _SAMPLE.match(line)
        if sample is not None:
            names.add(sample.group(1))
    return names


# ------------------------------------------------------------------------------------ PromQL


_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "start",
    "end",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_RANGE = re.compile(r"\[[^\[\]]*\]")
_DURATION_OFFSET = re.compile(r"\b(offset)\s+-?[0-9][0-9a-z]*", re.IGNORECASE)
_AT = re.compile(r"@\s*(start\(\)|end\(\)|[0-9.]+)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub("", text)
    text = _DURATION_OFFSET.sub(" ", text)
    text = _AT.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


# -------------------------------------------------------------------------------- dashboards


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """One PromQL query of a dashboard: where it lives and its text after substitution."""

    dashboard: str
    panel_id: int | None
    panel_title: str
    ref_id: str
    expr: str
    instant: bool


def load_dashboard(path: Path) -> dict[str, Any]:
    """A dashboard JSON file as a dict."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows and the panels nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """`expr` with Grafana's `$var`, `${var}`, `${var:fmt}` and `[[var]]` replaced."""
    merged = {**DEFAULT_VARIABLES, **(values or {})}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name.isdigit():  # label_replace()'s "$1" is not a variable
            return match.group(0)
        if name not in merged:
            raise KeyError(f"no value for dashboard variable {name!r} in {expr!r}")
        return merged[name]

    return re.sub(
        r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)",
        replace,
        expr,
    )


def variable_query(query: Any) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query, if it has one."""
    text = query.get("query", "") if isinstance(query, dict) else str(query or "")
    text = text.strip()
    wrapped = re.fullmatch(r"query_result\((.*)\)", text, re.DOTALL)
    if wrapped:
        return wrapped.group(1).strip()
    labels = re.fullmatch(r"label_values\((.*?)(?:,\s*\w+)?\)", text, re.DOTALL)
    if labels:
        inner = labels.group(1).strip()
        return inner or None
    return None


def dashboard_expressions(
    path: Path, values: Mapping[str, str] | None = None, *, variables: bool = True
) -> list[PanelQuery]:
    """Every PromQL expression of a dashboard, variables substituted.

    Panel targets come first; with `variables`, the queries of the query variables follow
    (as `PanelQuery` with `panel_id=None`), unwrapped from `label_values()`/`query_result()`.
    """
    dashboard = load_dashboard(path)
    queries = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            queries.append(
                PanelQuery(
                    dashboard=path.name,
                    panel_id=panel.get("id"),
                    panel_title=panel.get("title", ""),
                    ref_id=target.get("refId", ""),
                    expr=substitute(expr, values),
                    instant=bool(target.get("instant")) and not target.get("range"),
                )
            )
    if variables:
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            inner = variable_query(variable.get("query"))
            if inner:
                queries.append(
                    PanelQuery(
                        dashboard=path.name,
                        panel_id=None,
                        panel_title=f"variable {variable['name']}",
                        ref_id=variable["name"],
                        expr=substitute(inner, values),
                        instant=True,
                    )
                )
    return queries


# -------------------------------------------------------------------------------- Prometheus


@dataclass
class PrometheusServer:
    """A Prometheus started by a test: its base URL and process."""

    url: str
    process: subprocess.Popen[bytes]

    def api(self, path: str, **params: str) -> Any:
        """GET an HTTP API path; the decoded `data`, or AssertionError with Prometheus' error."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate `expr` as an instant query now; the result vector."""
        data = self.api("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def query_range(self, expr: str, seconds: int = 300, step: str = "15s") -> list[Any]:
        """Evaluate `expr` over the last `seconds`; the result matrix."""
        end = time.time()
        data = self.api(
            "/api/v1/query_range",
            query=expr,
            start=str(end - seconds),
            end=str(end),
            step=step,
        )
        result: list[Any] = data["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll `expr` until it returns a non-empty vector; that vector."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} returned nothing within {timeout}s")
            time.sleep(0.5)


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    targets: list[str],
    *,
    job: str = "msgsms-exporter",
    scrape_interval: str = "1s",
    rule_files: list[Path] | None = None,
    evaluation_interval: str = "1s",
) -> Iterator[PrometheusServer]:
    """Run a real Prometheus on loopback scraping `targets` as `job`; stop it on exit."""
    binary = require_tool("prometheus")
    port = free_port()
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": [str(path) for path in rule_files or []],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PrometheusServer(url=f"http://127.0.0.1:{port}", process=process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    "prometheus exited: " + (workdir / "prometheus.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        stop(process, timeout=15)
        log.close()


def scaled_exposition(text: str, scrapes: int) -> str:
    """The fixture exposition with counter and histogram samples multiplied by `scrapes`.

    Serving it with a growing `scrapes` makes every `rate()` over the fixture non-zero.
    """
    types: dict[str, str] = {}
    lines = []
    for line in text.splitlines():
        declared = re.match(r"# TYPE (\S+) (\S+)", line)
        if declared:
            types[declared.group(1)] = declared.group(2)
        sample = _SAMPLE.match(line)
        if sample and not line.startswith("#"):
            name = sample.group(1)
            family = re.sub(r"_(total|bucket|count|sum|gcount|gsum)$", "", name)
            if types.get(name) == "counter" or types.get(family) in {"counter", "histogram"}:
                head, value = line.rsplit(" ", 1)
                line = f"{head} {float(value) * scrapes}"
        lines.append(line)
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def serve_exposition(text: str) -> Iterator[str]:
    """Serve `text` (scaled by the scrape count) at /metrics on loopback; yields host:port."""
    count = {"scrapes": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            count["scrapes"] += 1
            body = scaled_exposition(text, count["scrapes"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
