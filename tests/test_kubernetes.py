"""The Kubernetes manifests: kustomize renders them, schemas accept them, copies cannot drift."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from promtool import require_tool

REPO = Path(__file__).resolve().parents[1]
KUSTOMIZE = REPO / "deploy" / "kubernetes"
VARIANTS = {"single": KUSTOMIZE, "sharded": KUSTOMIZE / "sharded"}
RULES = REPO / "config" / "prometheus" / "msgsms-rules.yml"
DASHBOARDS = REPO / "dashboards"
SECRET_EXAMPLE = KUSTOMIZE / "secret.example.yaml"
CONFIG_MOUNT = "/etc/msgsms-exporter"
# The oldest Kubernetes minor still commonly run, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.28.0", "latest")

Object = dict[str, Any]


@functools.cache
def render(variant: str) -> tuple[Object, ...]:
    kubectl = require_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(VARIANTS[variant])],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def by_kind(variant: str, kind: str) -> list[Object]:
    return [obj for obj in render(variant) if obj["kind"] == kind]


def one(variant: str, kind: str) -> Object:
    (obj,) = by_kind(variant, kind)
    return obj


def workload(variant: str) -> Object:
    return one(variant, "Deployment" if variant == "single" else "StatefulSet")


def container(variant: str) -> Object:
    (only,) = workload(variant)["spec"]["template"]["spec"]["containers"]
    return dict(only)


# --- schemas ---------------------------------------------------------------------------------

_DURATION = {
    "type": "string",
    "pattern": "^(0|"
    + "".join(f"(([0-9]+){u})?" for u in ("y", "w", "d", "h", "m", "s", "ms"))
    + ")$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": False,
}


def _resource(kind: str, spec: Object) -> Object:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


# Structural schemas of the two Prometheus Operator CRDs (monitoring.coreos.com/v1), written
# from the operator's CRD openAPIV3Schema for the fields a ServiceMonitor / PrometheusRule of
# this project may use; unknown fields are rejected so a typo cannot pass silently.
CRD_SCHEMAS: dict[str, Object] = {
    "PrometheusRule": _resource(
        "PrometheusRule",
        {
            "type": "object",
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "query_offset": _DURATION,
                            "limit": {"type": "integer"},
                            "labels": _STRING_MAP,
                            "partial_response_strategy": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
                                    "properties": {
                                        "record": {"type": "string"},
                                        "alert": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": _DURATION,
                                        "keep_firing_for": _DURATION,
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    ),
    "ServiceMonitor": _resource(
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": False,
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "params": {"type": "object"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                            "tlsConfig": {"type": "object"},
                            "basicAuth": {"type": "object"},
                            "authorization": {"type": "object"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
}


def kubernetes_validate() -> Any:
    if importlib.util.find_spec("kubernetes_validate") is None:
        message = "kubernetes-validate (offline Kubernetes JSON schemas) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    import kubernetes_validate as module

    return module


def validate(obj: Object, version: str) -> None:
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        import jsonschema

        jsonschema.Draft202012Validator(CRD_SCHEMAS[obj["kind"]]).validate(obj)
        return
    kv = kubernetes_validate()
    kv.validate(obj, kv.latest_version() if version == "latest" else version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_objects_validate_against_kubernetes_schemas(variant: str, version: str) -> None:
    objects = render(variant)
    assert {o["kind"] for o in objects} >= {
        "ConfigMap",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for obj in objects:
        validate(obj, version)


def test_secret_example_validates_and_is_not_applied() -> None:
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    validate(secret, "latest")
    assert secret["kind"] == "Secret"
    assert not [o for o in render("single") if o["kind"] == "Secret"]
    referenced = {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for env in container("single")["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert referenced == {
        key: {"name": secret["metadata"]["name"], "key": key} for key in secret["stringData"]
    }
    assert set(referenced) == {"MSGSMS_ACCESS_KEY", "MSGSMS_SECRET_KEY"}


def test_crd_schemas_reject_a_typo() -> None:
    import jsonschema

    monitor = copy.deepcopy(one("single", "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, "latest")
    rule = copy.deepcopy(one("single", "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate(rule, "latest")


# --- the workload ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pod_is_locked_down(variant: str) -> None:
    pod = workload(variant)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(variant)["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"]: m for m in container(variant)["volumeMounts"]}
    assert set(mounts) == {CONFIG_MOUNT, "/tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_probes_resources_and_port(variant: str) -> None:
    exporter = container(variant)
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http-metrics"}
    assert exporter["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http-metrics"}
    assert exporter["ports"] == [{"name": "http-metrics", "containerPort": 9170, "protocol": "TCP"}]
    assert set(exporter["resources"]) == {"requests", "limits"}
    assert "memory" in exporter["resources"]["limits"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_map_is_mounted_where_the_image_reads_it(variant: str) -> None:
    exporter = container(variant)
    assert exporter["args"][0] == f"--config.file={CONFIG_MOUNT}/config.yaml"
    (config_map,) = [c for c in by_kind(variant, "ConfigMap") if "config.yaml" in c["data"]]
    pod = workload(variant)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["name"].startswith("msgsms-exporter-config-"), "hash suffix"


def test_config_map_passes_the_exporters_config_check(tmp_path: Path) -> None:
    (config_map,) = [c for c in by_kind("single", "ConfigMap") if "config.yaml" in c["data"]]
    config = tmp_path / "config.yaml"
    config.write_text(config_map["data"]["config.yaml"])
    if importlib.util.find_spec("exporter.cli") is None:
        pytest.skip("exporter CLI not landed")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={config}", "--check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, "MSGSMS_ACCESS_KEY": "ak", "MSGSMS_SECRET_KEY": "sk"},
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_single_replica_is_replaced_not_rolled() -> None:
    deployment = one("single", "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_service_monitor_scrapes_the_service_port() -> None:
    for variant in VARIANTS:
        monitor = one(variant, "ServiceMonitor")
        services = [
            s
            for s in by_kind(variant, "Service")
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(services) == 1, "each target would be scraped once per matching Service"
        ports = {p["name"] for p in services[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
        # The rules' exporter alerts match job="msgsms-exporter": the job is the Service name.
        assert services[0]["metadata"]["name"] == "msgsms-exporter"
        assert "jobLabel" not in monitor["spec"]


# --- single sources --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prometheus_rule_groups_equal_the_rules_file(variant: str) -> None:
    rules = yaml.safe_load(RULES.read_text())
    assert one(variant, "PrometheusRule")["spec"]["groups"] == rules["groups"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dashboard_config_maps_equal_the_dashboards(variant: str) -> None:
    files = {p.name: p.read_text() for p in sorted(DASHBOARDS.glob("*.json"))}
    assert files, "no dashboards/*.json: the comparison would prove nothing"
    maps = [
        c for c in by_kind(variant, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert all(c["metadata"]["labels"]["grafana_dashboard"] == "1" for c in maps)
    assert all(len(c["data"]) == 1 for c in maps), "one dashboard per ConfigMap"
    shipped = {name: text for c in maps for name, text in c["data"].items()}
    assert shipped == files
    for text in shipped.values():
        json.loads(text)


def test_generated_files_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "render-kubernetes.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- the sharded variant ---------------------------------------------------------------------


def test_sharded_variant_runs_one_pod_per_shard() -> None:
    assert by_kind("sharded", "Deployment") == []
    statefulset = one("sharded", "StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    assert replicas > 1
    assert f"--shard=auto/{replicas}" in container("sharded")["args"]


def test_sharded_pods_are_named_for_their_ordinal() -> None:
    from exporter.sharding import parse_shard

    statefulset = one("sharded", "StatefulSet")
    name = statefulset["metadata"]["name"]
    (flag,) = [a for a in container("sharded")["args"] if a.startswith("--shard=")]
    shards = [
        parse_shard(flag.split("=", 1)[1], hostname=f"{name}-{ordinal}")
        for ordinal in range(statefulset["spec"]["replicas"])
    ]
    assert [s.index for s in shards] == list(range(statefulset["spec"]["replicas"]))


def test_sharded_statefulset_is_governed_by_a_headless_service() -> None:
    statefulset = one("sharded", "StatefulSet")
    (service,) = by_kind("sharded", "Service")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"


def test_sharded_pod_equals_the_single_pod_but_for_the_shard() -> None:
    single = copy.deepcopy(workload("single")["spec"]["template"])
    sharded = copy.deepcopy(workload("sharded")["spec"]["template"])
    args = sharded["spec"]["containers"][0]["args"]
    sharded["spec"]["containers"][0]["args"] = [a for a in args if not a.startswith("--shard=")]
    assert sharded == single
