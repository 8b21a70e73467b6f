"""The Grafana dashboards: structure, datasource, variables, and every query against Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from promtool import (
    DASHBOARDS,
    DASHBOARDS_DIR,
    FIXTURE_EXPOSITION,
    dashboard_expressions,
    exposition_metric_names,
    iter_panels,
    load_dashboard,
    metric_names,
    run_prometheus,
    serve_exposition,
)

DELIVERY = DASHBOARDS_DIR / "msgsms-delivery.json"
HEALTH = DASHBOARDS_DIR / "msgsms-exporter-health.json"
# Panel types whose values have a unit; rows and text panels have none.
UNIT_PANELS = {"timeseries", "stat", "gauge", "bargauge", "table", "barchart", "piechart"}
# Series Prometheus writes for every target, not the exporter.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds"}
BUILTIN_DATASOURCE_UIDS = {"${datasource}", "-- Grafana --"}

pytestmark = pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])


def walk(node: Any) -> Any:
    """Every dict in a JSON tree."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_both_dashboards_exist(path: Path) -> None:
    assert {DELIVERY, HEALTH} <= set(DASHBOARDS)


def test_is_a_current_grafana_dashboard(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["uid"] == path.stem
    assert dashboard["title"]
    assert dashboard["description"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["id"] is None
    assert "msgsms" in dashboard["tags"]


def test_panel_ids_are_unique(path: Path) -> None:
    ids = [panel["id"] for panel in iter_panels(load_dashboard(path))]
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap(path: Path) -> None:
    boxes = [(panel["title"], panel["gridPos"]) for panel in iter_panels(load_dashboard(path))]
    for title, box in boxes:
        assert box["x"] >= 0 and box["w"] > 0 and box["h"] > 0, title
        assert box["x"] + box["w"] <= 24, f"{title} is wider than the grid"
    overlapping = [
        (first, second)
        for index, (first, a) in enumerate(boxes)
        for second, b in boxes[index + 1 :]
        if a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    ]
    assert overlapping == []


def test_every_panel_has_a_description_and_a_unit(path: Path) -> None:
    for panel in iter_panels(load_dashboard(path)):
        assert panel.get("description", "").strip(), f"{panel['title']} has no description"
        if panel["type"] in UNIT_PANELS:
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit, f"{panel['title']} has no unit"


def test_every_query_panel_has_thresholds(path: Path) -> None:
    for panel in iter_panels(load_dashboard(path)):
        if panel["type"] in UNIT_PANELS:
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps and steps[0]["value"] is None, panel["title"]


def test_datasource_is_only_the_variable(path: Path) -> None:
    dashboard = load_dashboard(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for node in walk(dashboard):
        datasource = node.get("datasource")
        if isinstance(datasource, dict):
            assert datasource.get("uid") in BUILTIN_DATASOURCE_UIDS, datasource
        elif datasource is not None:
            assert datasource in BUILTIN_DATASOURCE_UIDS, datasource
    for panel in iter_panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_import_offers_the_prometheus_input_and_makes_it_the_variables_default(
    path: Path,
) -> None:
    text = path.read_text()
    (source,) = load_dashboard(path)["__inputs"]
    assert source == {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "description": "The Prometheus that scrapes msgsms-exporter",
        "type": "datasource",
        "pluginId": "prometheus",
        "pluginName": "Prometheus",
    }
    # Grafana's import replaces ${<input name>} everywhere with the data source picked.
    assert set(re.findall(r"\$\{(DS_\w+)\}", text)) == {"DS_PROMETHEUS"}
    imported = json.loads(text.replace("${DS_PROMETHEUS}", "picked-uid"))
    variables = {v["name"]: v for v in imported["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == "picked-uid"
    # Provisioned files are not substituted: the input is only the variable's default,
    # which Grafana replaces with a Prometheus data source that exists; panels never name it.
    for panel in iter_panels(imported):
        assert "picked-uid" not in json.dumps(panel), panel["title"]


def test_every_target_uses_the_datasource_variable(path: Path) -> None:
    for panel in iter_panels(load_dashboard(path)):
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_referenced_metric_is_in_the_exposition(path: Path) -> None:
    exposed = exposition_metric_names(FIXTURE_EXPOSITION.read_text()) | PROMETHEUS_SERIES
    unknown = {
        (query.panel_title, name)
        for query in dashboard_expressions(path)
        for name in metric_names(query.expr)
        if name not in exposed
    }
    assert sorted(unknown) == []


def test_every_query_filters_by_the_variables(path: Path) -> None:
    dashboard = load_dashboard(path)
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if path == DELIVERY:
                assert 'account=~"$account"' in expr, panel["title"]
                assert 'template=~"$template"' in expr, panel["title"]
            elif "msgsms_" in expr:
                assert 'job=~"$job"' in expr, panel["title"]


def test_expression_helper_substitutes_every_variable(path: Path) -> None:
    for query in dashboard_expressions(path):
        assert not re.search(r"\$(?!1\b)", query.expr), query


def test_delivery_dashboard_selects_templates_by_name(path: Path) -> None:
    if path != DELIVERY:
        return
    variables = {v["name"]: v for v in load_dashboard(path)["templating"]["list"]}
    assert {"datasource", "account", "template", "window"} <= set(variables)
    template = variables["template"]
    assert "msgsms_template_info" in template["query"]["query"]
    assert "(?<value>" in template["regex"] and "(?<text>" in template["regex"]
    # The regex matches the label order Prometheus prints (sorted by name).
    pattern = template["regex"].strip("/").replace("(?<", "(?P<")
    line = '{template="T001",template_name="Login code"} 1 1700000000000'
    match = re.search(pattern, line)
    assert match and match.group("value") == "T001" and match.group("text") == "Login code"


def test_delivery_tables_link_to_the_details_view(path: Path) -> None:
    if path != DELIVERY:
        return
    panels = {panel["title"]: panel for panel in iter_panels(load_dashboard(path))}
    links = [
        link["url"]
        for node in walk(panels["Top failing status codes"])
        for link in node.get("links", [])
    ]
    assert links == [
        "${exporter_url}/details?template=${__data.fields.template}&result=failed&last=${window}"
    ]
    assert panels["Delivery delay quantiles"]["targets"][0]["expr"].startswith(
        "histogram_quantile(0.5"
    )


def test_every_link_into_the_details_view_says_why_it_may_answer_403(path: Path) -> None:
    # Off loopback without basic auth the exporter withholds /details: a reader clicking
    # a row learns from the description what the 403 is and where the fix is.
    dashboard = load_dashboard(path)
    linking = [
        node
        for node in [*iter_panels(dashboard), *dashboard["templating"]["list"]]
        if "/details?" in json.dumps(node) or node.get("name") == "exporter_url"
    ]
    assert len(linking) == (3 if path == DELIVERY else 0)
    for node in linking:
        assert "--web.details-unauthenticated" in node["description"], node.get("title")
        assert "403" in node["description"], node.get("title")


def test_queries_evaluate_against_prometheus(path: Path, tmp_path: Path) -> None:
    """Every query, variables substituted, runs without error and returns data on the fixture."""
    queries = dashboard_expressions(path)
    with (
        serve_exposition(FIXTURE_EXPOSITION.read_text()) as target,
        run_prometheus(tmp_path, [target]) as prometheus,
    ):
        # Three scrapes: enough samples for every rate() to have a value.
        prometheus.wait_for('count_over_time(up{job="msgsms-exporter"}[1m]) >= 3')
        empty = []
        for query in queries:
            result = prometheus.query(query.expr) or prometheus.query_range(query.expr)
            if not result:
                empty.append((query.panel_title, query.ref_id))
    assert empty == []


def test_provisioning_files_point_at_the_dashboards(path: Path) -> None:
    providers = yaml.safe_load((DASHBOARDS_DIR / "provisioning" / "dashboards.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    datasources = yaml.safe_load((DASHBOARDS_DIR / "provisioning" / "datasources.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"].startswith("http")


# Delivery series every replica of one store (or shard) exports alike; counted once with
# `max without (instance, pod)` before any sum, as the rules do.
_DELIVERY_SERIES = re.compile(
    r"(rate\()?(msgsms_window_\w+|msgsms_messages_\w+_total)\{[^}]*\}(\[[^\]]*\]\))?"
)


def test_delivery_series_count_replicas_once(path: Path) -> None:
    if path != DELIVERY:  # the health dashboard shows each replica's own window on purpose
        return
    bare = []
    for query in dashboard_expressions(path, variables=False):
        for match in _DELIVERY_SERIES.finditer(query.expr):
            before = query.expr[: match.start()].rstrip()
            if not before.endswith("max without (instance, pod) ("):
                bare.append((query.panel_title, match.group(0)[:60]))
    assert bare == []


def test_health_dashboard_has_a_receiver_row(path: Path) -> None:
    if path != HEALTH:
        return
    panels = list(iter_panels(load_dashboard(path)))
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert "Receiver (push)" in rows
    start = next(i for i, p in enumerate(panels) if p["title"] == "Receiver (push)")
    row = panels[start + 1 :]
    metrics = {name for p in row for t in p.get("targets", []) for name in metric_names(t["expr"])}
    assert {
        "up",
        "msgsms_push_requests_total",
        "msgsms_push_rejected_total",
        "msgsms_push_ack_duration_seconds_bucket",
        "msgsms_push_store_write_duration_seconds_bucket",
        "msgsms_push_store_errors_total",
        "msgsms_push_store_size_bytes",
        "msgsms_push_store_up",
        "msgsms_push_last_report_timestamp_seconds",
    } <= metrics
