"""The compose stack, checked without a Docker engine: schema, mounts, Prometheus config."""

from __future__ import annotations

import importlib.resources
import json
import os
import posixpath
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from promtool import require_tool

REPO = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
OVERRIDE = COMPOSE_DIR / "compose.override.example.yaml"
PROMETHEUS = COMPOSE_DIR / "prometheus.yml"
RULES = REPO / "config" / "prometheus" / "msgsms-rules.yml"
PUSH_CONFIG = COMPOSE_DIR / "push" / "config.yaml"
BALANCER_TEMPLATE = REPO / "deploy" / "loadbalancer" / "msgsms-push.conf.template"
PUSH_REPLICAS = ("exporter-push-1", "exporter-push-2")
ALERTMANAGER = COMPOSE_DIR / "alertmanager.yml"
ALERTS_DOC = REPO / "docs" / "alerts.md"
EXAMPLE_CONFIG = REPO / "config" / "msgsms-exporter.yaml"


def compose_schema() -> dict[str, Any]:
    """The compose specification's JSON schema, as vendored by the check-jsonschema package."""
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        message = "check-jsonschema (which ships compose-spec.json) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts as {container path: host path relative to deploy/compose}."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = source
    return mounts


@pytest.mark.parametrize("path", [COMPOSE, OVERRIDE], ids=lambda p: p.name)
def test_compose_file_follows_the_compose_specification(path: Path) -> None:
    import jsonschema

    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator_class(schema).iter_errors(load(path))
    ]
    assert errors == []


def test_stack_has_exporter_prometheus_alertmanager_grafana() -> None:
    services = load(COMPOSE)["services"]
    default = {name for name, service in services.items() if "profiles" not in service}
    assert default == {"exporter", "prometheus", "alertmanager", "grafana"}
    assert services["exporter"]["command"] == ["--demo"]
    assert services["exporter"]["build"] == {"context": "../..", "dockerfile": "Dockerfile"}
    assert (COMPOSE_DIR / "../../Dockerfile").resolve().is_file()


def test_exporter_runs_locked_down() -> None:
    exporter = load(COMPOSE)["services"]["exporter"]
    assert exporter["read_only"] is True
    assert exporter["tmpfs"] == ["/tmp"]
    assert exporter["cap_drop"] == ["ALL"]


def example_config_variables() -> set[str]:
    """The environment variables config/msgsms-exporter.yaml names (`${VAR}`, `{env: VAR}`)
    outside its comments: a container run with a copy of it needs each one."""
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    text = "\n".join(line.partition("#")[0] for line in lines)
    pairs = re.findall(r"\$\{(\w+)\}|\{env: (\w+)\}", text)
    return {name for pair in pairs for name in pair if name}


def test_override_swaps_the_demo_for_a_mounted_config() -> None:
    exporter = load(OVERRIDE)["services"]["exporter"]
    assert exporter["command"] == ["--config.file=/etc/msgsms-exporter/config.yaml"]
    assert bind_mounts(exporter) == {"/etc/msgsms-exporter/config.yaml": "./config.yaml"}


def test_every_documented_container_run_passes_each_variable_the_example_config_names() -> None:
    # A copy of the example config names ${MSGSMS_ENDPOINT} too: a run that passed only the
    # keys exited at once with "environment variable MSGSMS_ENDPOINT is not set".
    names = example_config_variables()
    assert names == {"MSGSMS_ENDPOINT", "MSGSMS_ACCESS_KEY", "MSGSMS_SECRET_KEY"}
    assert set(load(OVERRIDE)["services"]["exporter"]["environment"]) == names
    pages = {
        page.name: page.read_text()
        for page in (REPO / "README.md", REPO / "docs" / "deployment.md")
    }
    pages["Dockerfile"] = re.sub(r"^# *", "", (REPO / "Dockerfile").read_text(), flags=re.M)
    runs = [
        (name, run)
        for name, text in pages.items()
        for run in re.findall(r"^docker run .*", text.replace("\\\n", " "), re.M)
        if "config.yaml" in run
    ]
    assert len(runs) >= 3
    for page, run in runs:
        assert set(re.findall(r"-e (\w+)", run)) >= names, f"{page}: {run}"
    compose_steps = (REPO / "docs" / "deployment.md").read_text().split("compose.override.yaml")
    assert all(f"{name}=" in compose_steps[1].partition("docker compose")[0] for name in names)


def test_every_repository_mount_exists() -> None:
    for name, service in load(COMPOSE)["services"].items():
        for source in bind_mounts(service).values():
            assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"


def test_rules_and_dashboards_are_mounted_not_copied() -> None:
    services = load(COMPOSE)["services"]
    assert "../../config/prometheus" in bind_mounts(services["prometheus"]).values()
    assert "../../dashboards" in bind_mounts(services["grafana"]).values()
    copies = [p for p in (REPO / "deploy").rglob("*") if p.name == RULES.name]
    copies += list((REPO / "deploy" / "compose").rglob("*.json"))
    assert copies == []


def test_rules_path_resolves_the_same_in_the_container_and_the_checkout() -> None:
    prometheus = load(COMPOSE)["services"]["prometheus"]
    (config_flag,) = [c for c in prometheus["command"] if c.startswith("--config.file=")]
    container_config = config_flag.split("=", 1)[1]
    mounts = bind_mounts(prometheus)
    assert mounts[container_config] == "./prometheus.yml"
    for rule_file in load(PROMETHEUS)["rule_files"]:
        in_container = posixpath.normpath(
            posixpath.join(posixpath.dirname(container_config), rule_file)
        )
        target, source = next((t, s) for t, s in mounts.items() if in_container.startswith(t))
        on_host = (COMPOSE_DIR / source / posixpath.relpath(in_container, target)).resolve()
        assert on_host == (PROMETHEUS.parent / rule_file).resolve() == RULES


def test_promtool_accepts_the_prometheus_config_and_its_rules() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS: 1 rule files found" in output
    assert f"Checking {RULES}" in output or f"Checking {RULES.relative_to(REPO)}" in output


def test_scrape_job_matches_the_rules_job_name() -> None:
    jobs = {job["job_name"]: job for job in load(PROMETHEUS)["scrape_configs"]}
    assert jobs["msgsms-exporter"]["static_configs"] == [{"targets": ["exporter:9170"]}]
    assert 'job="msgsms-exporter"' in RULES.read_text()


def test_grafana_provisions_the_mounted_dashboards() -> None:
    grafana = load(COMPOSE)["services"]["grafana"]
    mounts = bind_mounts(grafana)
    (dashboards_target,) = [t for t, s in mounts.items() if s == "../../dashboards"]
    (provider_file,) = [
        COMPOSE_DIR / s
        for t, s in mounts.items()
        if t.startswith("/etc/grafana/provisioning/dashboards/")
    ]
    assert provider_file.resolve() == REPO / "dashboards" / "provisioning" / "dashboards.yml"
    paths = [provider["options"]["path"] for provider in load(provider_file)["providers"]]
    assert paths == [dashboards_target]
    assert list((REPO / "dashboards").glob("*.json")), "no dashboard to provision"
    datasources = COMPOSE_DIR / mounts["/etc/grafana/provisioning/datasources"]
    (source,) = [d for f in datasources.glob("*.yaml") for d in load(f)["datasources"]]
    assert source["url"] == "http://prometheus:9090"


# --- the push profile ------------------------------------------------------------------------


def push_services() -> dict[str, dict[str, Any]]:
    services = load(COMPOSE)["services"]
    return {n: s for n, s in services.items() if "push" in s.get("profiles", [])}


def test_push_profile_runs_two_replicas_postgres_and_a_balancer() -> None:
    services = push_services()
    assert set(services) == {*PUSH_REPLICAS, "postgres", "push-balancer"}
    for name in PUSH_REPLICAS:
        exporter = services[name]
        assert exporter["image"] == load(COMPOSE)["services"]["exporter"]["image"]
        assert bind_mounts(exporter) == {"/etc/msgsms-exporter/config.yaml": "./push/config.yaml"}
        assert exporter["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert exporter["read_only"] is True and exporter["cap_drop"] == ["ALL"]
        assert "--web.shutdown-delay=5s" in exporter["command"]
        assert exporter["stop_grace_period"] == "20s", "longer than the drain"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_push_replicas_read_the_shared_postgres_with_secrets_from_the_environment() -> None:
    config = load(PUSH_CONFIG)
    assert [a["source"] for a in config["accounts"]] == ["push"]
    url = config["receiver"]["store_url"]
    assert url.startswith("postgresql://msgsms:${MSGSMS_POSTGRES_PASSWORD}@postgres:5432/msgsms")
    named = set(re.findall(r"\$\{(\w+)\}", url))
    named |= {k[part]["env"] for k in config["receiver"]["signing"]["keys"] for part in k}
    # Registrations (POST /push/sends) come from the operator's application with a Bearer token.
    assert config["receiver"]["registration_token"] == {"env": "MSGSMS_PUSH_REGISTRATION_TOKEN"}
    named.add(config["receiver"]["registration_token"]["env"])
    for name in PUSH_REPLICAS:
        assert set(push_services()[name]["environment"]) == named
    postgres = push_services()["postgres"]["environment"]
    assert postgres["POSTGRES_USER"] == "msgsms" and postgres["POSTGRES_DB"] == "msgsms"


def test_push_config_passes_the_exporters_config_check() -> None:
    env = {
        **os.environ,
        "MSGSMS_POSTGRES_PASSWORD": "pw",
        "MSGSMS_PUSH_ACCESS_KEY": "ak",
        "MSGSMS_PUSH_SECRET_KEY": "sk",
        "MSGSMS_PUSH_REGISTRATION_TOKEN": "token",
    }
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={PUSH_CONFIG}", "--check-config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_balancer_uses_the_tested_load_balancer_config_for_both_replicas() -> None:
    balancer = push_services()["push-balancer"]
    mounts = {t: s for s, t, *_ in (v.split(":") for v in balancer["volumes"])}
    (template,) = [s for t, s in mounts.items() if t.startswith("/etc/nginx/templates/")]
    assert (COMPOSE_DIR / template).resolve() == BALANCER_TEMPLATE
    placeholders = set(re.findall(r"\$\{(\w+)\}", BALANCER_TEMPLATE.read_text()))
    assert set(balancer["environment"]) == placeholders
    replicas = {v for k, v in balancer["environment"].items() if k.startswith("MSGSMS_REPLICA_")}
    assert replicas == {f"{name}:9170" for name in PUSH_REPLICAS}


def test_prometheus_scrapes_the_push_replicas_as_the_exporter_job() -> None:
    jobs = {job["job_name"]: job for job in load(PROMETHEUS)["scrape_configs"]}
    (dns,) = jobs["msgsms-exporter"]["dns_sd_configs"]
    assert set(dns["names"]) == set(PUSH_REPLICAS)
    assert dns["port"] == 9170


def test_amtool_accepts_the_alertmanager_config() -> None:
    amtool = require_tool("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 inhibit rules" in result.stdout


def test_the_stack_inhibits_as_the_alerts_doc_suggests() -> None:
    (suggested,) = re.findall(r"```yaml\n(inhibit_rules:.*?)```", ALERTS_DOC.read_text(), re.S)
    rules = yaml.safe_load(suggested)["inhibit_rules"]
    assert load(ALERTMANAGER)["inhibit_rules"] == rules
    alerts = {
        rule["alert"]
        for group in load(RULES)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    for rule in rules:  # every alert a matcher names exists (no typo silences nothing)
        for matcher in (*rule["source_matchers"], *rule["target_matchers"]):
            pattern = matcher.split('"')[1]
            assert any(re.fullmatch(pattern, alert) for alert in alerts), matcher
