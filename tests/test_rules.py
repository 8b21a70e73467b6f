"""The Prometheus rules: promtool accepts and unit-tests them, every alert is documented."""

from __future__ import annotations

import re

import pytest
from promtool import (
    ALERTS_DOC,
    FIXTURE_EXPOSITION,
    PROMETHEUS_EXAMPLE,
    RULES,
    RULES_DIR,
    RULES_TESTS,
    alerting_rules,
    exposition_metric_names,
    load_rule_groups,
    markdown_anchors,
    metric_names,
    recording_rules,
    run_promtool,
)

ALERTS = alerting_rules()
ALERT_NAMES = [rule["alert"] for rule in ALERTS]
SEVERITIES = {"critical", "warning", "info"}
# Series the rules read that Prometheus makes itself, not the exporter.
PROMETHEUS_SERIES = {"up"}


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert [path.name for path in RULES_TESTS] == [
        "msgsms-rules-daily.test.yml",
        "msgsms-rules.test.yml",
    ]
    result = run_promtool("test", "rules", *(path.name for path in RULES_TESTS), cwd=RULES_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULES_TESTS)


def test_promtool_check_config_accepts_the_example_config() -> None:
    result = run_promtool("check", "config", PROMETHEUS_EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_config_scrapes_the_job_the_alerts_expect() -> None:
    text = PROMETHEUS_EXAMPLE.read_text()
    assert "job_name: msgsms-exporter" in text
    assert f"- {RULES.name}" in text


def test_rule_names_are_unique() -> None:
    assert len(set(ALERT_NAMES)) == len(ALERT_NAMES)
    records = [rule["record"] for rule in recording_rules()]
    assert len(set(records)) == len(records)
    groups = [group["name"] for group in load_rule_groups()]
    assert len(set(groups)) == len(groups)


# The base is one recording rule's label (absolute, clickable in Alertmanager); promtool's
# unit tests check the expanded links.
RUNBOOK_URL = (
    '{{ with query "msgsms:runbook_base_url:info" }}{{ . | first | label "url" }}{{ end }}#'
)


def test_the_runbook_base_url_is_one_absolute_setting() -> None:
    (rule,) = [r for r in recording_rules() if r["record"] == "msgsms:runbook_base_url:info"]
    url = re.fullmatch(r'label_replace\(vector\(1\), "url", "([^"]+)", "", ""\)', rule["expr"])
    assert url is not None and url[1].startswith("https://")
    assert url[1].endswith("/docs/alerts.md")
    assert load_rule_groups()[0]["rules"][0] == rule, "evaluated before the alerts of its group"


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_NAMES)
def test_alert_has_severity_summary_description_and_runbook(rule: dict) -> None:
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"{rule['alert']} has no {key}"
    assert annotations["runbook_url"] == RUNBOOK_URL + rule["alert"].lower()


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_NAMES)
def test_template_alerts_name_the_template_and_the_value(rule: dict) -> None:
    if "template" not in rule["expr"]:
        return
    assert "group_left (template_name) msgsms:template_info" in rule["expr"]
    assert "{{ $labels.template_name }}" in rule["annotations"]["description"]
    assert "{{ $value" in rule["annotations"]["description"]


def test_every_runbook_anchor_exists_in_the_alerts_doc() -> None:
    anchors = markdown_anchors(ALERTS_DOC.read_text())
    missing = [
        rule["alert"]
        for rule in ALERTS
        if rule["annotations"]["runbook_url"].split("#", 1)[1] not in anchors
    ]
    assert missing == []


def test_every_alert_has_a_unit_test() -> None:
    text = "\n".join(path.read_text() for path in RULES_TESTS)
    tested = set(re.findall(r"alertname:\s*(\w+)", text))
    assert sorted(set(ALERT_NAMES) - tested) == []


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    texts = [path.read_text() for path in RULES_TESTS]
    for name in ALERT_NAMES:
        blocks = [
            block
            for text in texts
            for block in re.findall(
                rf"- alertname: {name}\n\s+eval_time: \S+\n\s+exp_alerts:(.*?)(?=\n\s+- alertname:|\n  - name:|\Z)",
                text,
                re.DOTALL,
            )
        ]
        quiet = [block for block in blocks if block.strip().startswith("[]")]
        firing = [block for block in blocks if "exp_labels" in block]
        assert quiet, f"{name}: no test that it stays quiet"
        assert firing, f"{name}: no test that it fires"


def test_rules_read_only_metrics_the_exporter_exposes() -> None:
    exposed = exposition_metric_names(FIXTURE_EXPOSITION.read_text())
    recorded = {rule["record"] for rule in recording_rules()}
    rules = alerting_rules() + recording_rules()
    unknown = {
        name
        for rule in rules
        for name in metric_names(rule["expr"])
        if name not in exposed | recorded | PROMETHEUS_SERIES
    }
    assert sorted(unknown) == []
