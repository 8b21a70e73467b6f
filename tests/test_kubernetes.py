"""The Kubernetes manifests: kustomize renders them, schemas accept them, copies cannot drift."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from health import free_port
from promtool import require_tool

REPO = Path(__file__).resolve().parents[1]
KUSTOMIZE = REPO / "deploy" / "kubernetes"
VARIANTS = {
    "single": KUSTOMIZE,
    "sharded": KUSTOMIZE / "sharded",
    "push": KUSTOMIZE / "push",
    "push-sqlite": KUSTOMIZE / "push-sqlite",
}
SECRET_EXAMPLE = KUSTOMIZE / "secret.example.yaml"
PUSH_VARIANTS = ("push", "push-sqlite")
SECRET_EXAMPLES = {
    "single": SECRET_EXAMPLE,
    "sharded": SECRET_EXAMPLE,
    "push": KUSTOMIZE / "push" / "secret.example.yaml",
    "push-sqlite": KUSTOMIZE / "push" / "secret.example.yaml",
}
RULES = REPO / "config" / "prometheus" / "msgsms-rules.yml"
DASHBOARDS = REPO / "dashboards"
CONFIG_MOUNT = "/etc/msgsms-exporter"
STORE_MOUNT = "/var/lib/msgsms-exporter"
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
    (found,) = by_kind(variant, "Deployment") + by_kind(variant, "StatefulSet")
    return found


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
    store = {STORE_MOUNT} if variant == "push-sqlite" else set()
    assert set(mounts) == {CONFIG_MOUNT, "/tmp"} | store
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


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_map_passes_the_exporters_config_check(variant: str, tmp_path: Path) -> None:
    (config_map,) = [c for c in by_kind(variant, "ConfigMap") if "config.yaml" in c["data"]]
    config = tmp_path / "config.yaml"
    config.write_text(config_map["data"]["config.yaml"])
    # The env the pod gets from its Secret, with the example's placeholder values.
    secret = yaml.safe_load(SECRET_EXAMPLES[variant].read_text())["stringData"]
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={config}", "--check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, **{e["name"]: secret[e["name"]] for e in secret_env(variant)}},
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def secret_env(variant: str) -> list[Object]:
    """The container's env entries that come from a Secret."""
    return [e for e in container(variant)["env"] if "secretKeyRef" in e.get("valueFrom", {})]


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


# --- push mode ---------------------------------------------------------------------------------


def pod_spec(variant: str) -> Object:
    spec: Object = workload(variant)["spec"]["template"]["spec"]
    return spec


def push_config(variant: str) -> Object:
    (config_map,) = [c for c in by_kind(variant, "ConfigMap") if "config.yaml" in c["data"]]
    config: Object = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


def flag(variant: str, name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in container(variant)["args"] if a.startswith(f"{name}=")]
    return values[0] if values else None


@pytest.mark.parametrize("variant", PUSH_VARIANTS)
def test_push_variants_read_the_push_store_with_secrets_from_the_secret(variant: str) -> None:
    config = push_config(variant)
    assert [a["source"] for a in config["accounts"]] == ["push"]
    receiver = config["receiver"]
    if variant == "push":
        assert receiver["store_url"] == {"env": "MSGSMS_STORE_URL"}
    else:
        assert receiver["store_path"].startswith(STORE_MOUNT + "/")
    secret = yaml.safe_load(SECRET_EXAMPLES[variant].read_text())
    validate(secret, "latest")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in secret_env(variant)}
    assert all(ref == {"name": secret["metadata"]["name"], "key": k} for k, ref in refs.items())
    assert set(refs) <= set(secret["stringData"])
    named = set(re.findall(r"\{env: (\w+)\}", yaml.safe_dump(config, default_flow_style=True)))
    named |= {v["env"] for v in _walk(config) if isinstance(v, dict) and set(v) == {"env"}}
    assert named == set(refs), "every env the config names comes from the Secret"
    assert receiver["registration_token"] == {"env": "MSGSMS_PUSH_REGISTRATION_TOKEN"}
    assert not [o for o in render(variant) if o["kind"] == "Secret"]


@pytest.mark.parametrize("variant", PUSH_VARIANTS)
def test_push_pods_take_registrations_only_with_the_secrets_bearer_token(
    variant: str, tmp_path: Path
) -> None:
    config = push_config(variant)
    receiver = config["receiver"]
    receiver.pop("store_url", None)  # the same receiver on a local store
    receiver["store_path"] = str(tmp_path / "push.db")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    secret = yaml.safe_load(SECRET_EXAMPLES[variant].read_text())["stringData"]
    port = free_port()
    env = {**os.environ, **{e["name"]: secret[e["name"]] for e in secret_env(variant)}}
    command = [sys.executable, "-m", "exporter", f"--config.file={path}"]
    command.append(f"--web.listen-address=127.0.0.1:{port}")
    sends = f"http://127.0.0.1:{port}/push/sends?templateId=t-1"
    sent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    one = {"smsMsgId": "m-1", "originTo": "+8613800000000", "createTime": sent, "status": "000000"}
    body = {"code": "000000", "description": "Success", "result": [one]}
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE) as process:
        try:
            wait_serving(process, f"http://127.0.0.1:{port}")
            token = secret["MSGSMS_PUSH_REGISTRATION_TOKEN"]
            bearer = {"Authorization": f"Bearer {token}"}
            assert httpx.post(sends, json=body, headers=bearer, timeout=30).status_code == 200
            wrong = {"Authorization": "Bearer not-the-token"}
            assert httpx.post(sends, json=body, headers=wrong, timeout=30).status_code == 401
            assert httpx.post(sends, json=body, timeout=30).status_code == 401
        finally:
            process.terminate()


def wait_serving(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/-/healthy", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    stderr = process.stderr.read() if process.stderr and process.poll() is not None else b""
    raise AssertionError(f"exporter not serving: {stderr.decode(errors='replace')[-2000:]}")


def _walk(node: Any) -> list[Any]:
    out = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        out += _walk(child)
    return out


def test_push_deployment_rolls_one_new_pod_in_before_an_old_one_leaves() -> None:
    deployment = one("push", "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def _drain(variant: str) -> tuple[float, float]:
    """(preStop sleep, --web.shutdown-delay) of a push variant's pods, in seconds."""
    from exporter.timestamps import parse_duration

    pre_stop = container(variant)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "/bin/sleep"
    delay = flag(variant, "--web.shutdown-delay")
    assert delay is not None
    return float(pre_stop[1]), parse_duration(delay)


@pytest.mark.parametrize("variant", PUSH_VARIANTS)
def test_push_pods_drain_within_their_grace_period(variant: str) -> None:
    pre_stop, delay = _drain(variant)
    grace = pod_spec(variant)["terminationGracePeriodSeconds"]
    # Room after the drain for the requests in flight and the store's close.
    assert grace >= pre_stop + delay + 10, (grace, pre_stop, delay)
    # Endpoint removal starts at deletion: preStop keeps serving while it propagates.
    assert pre_stop >= 5


def test_ha_push_pods_keep_acknowledging_until_the_probe_has_taken_them_out() -> None:
    _pre_stop, delay = _drain("push")
    # Ready turns 503 on SIGTERM; the probe must notice well within the drain.
    probe = container("push")["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= delay


def test_the_single_pod_does_not_lengthen_its_restart_gap() -> None:
    # One replica: from its deletion nothing new is routed to it, and its successor starts
    # only once it has exited, so every second of drain after the removal propagated (the
    # preStop sleep) is a second more of lost pushes.
    pre_stop, delay = _drain("push-sqlite")
    assert delay == 0
    assert pod_spec("push-sqlite")["terminationGracePeriodSeconds"] <= pre_stop + delay + 15


def test_push_pods_spread_across_nodes_and_a_disruption_keeps_one() -> None:
    labels = workload("push")["spec"]["template"]["metadata"]["labels"]
    spread = {c["topologyKey"]: c for c in pod_spec("push")["topologySpreadConstraints"]}
    node = spread["kubernetes.io/hostname"]
    assert node["whenUnsatisfiable"] == "DoNotSchedule" and node["maxSkew"] == 1
    assert node["labelSelector"]["matchLabels"].items() <= labels.items()
    budget = one("push", "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] < one("push", "Deployment")["spec"]["replicas"]


@pytest.mark.parametrize("variant", PUSH_VARIANTS)
def test_ingress_exposes_only_the_push_paths_over_tls(variant: str) -> None:
    from exporter.config import ReceiverConfig

    ingress = one(variant, "Ingress")
    (rule,) = ingress["spec"]["rules"]
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [rule["host"]] and tls["secretName"]
    paths = {p["path"]: p for p in rule["http"]["paths"]}
    receiver = push_config(variant)["receiver"]
    defaults = ReceiverConfig(store_path="")
    single = receiver.get("paths", {}).get("single", defaults.single_path)
    batch = receiver.get("paths", {}).get("batch", defaults.batch_path)
    push_paths = {single, batch, f"{single}/", f"{batch}/"}  # the receiver takes both forms
    assert set(paths) == push_paths, "only Huawei's push paths, not /metrics or /push/sends"
    (service,) = by_kind(variant, "Service")
    for path in paths.values():
        assert path["pathType"] == "Exact"
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    annotations = ingress["metadata"]["annotations"]
    retry = annotations["nginx.ingress.kubernetes.io/proxy-next-upstream"]
    # As deploy/loadbalancer does: a push one replica could not store (503: nothing was
    # stored, its connection to the database broke) is sent to another, not lost.
    assert {"error", "timeout", "http_503", "non_idempotent"} <= set(retry.split())


def test_push_sqlite_keeps_one_pod_and_its_store_on_a_volume_claim() -> None:
    statefulset = one("push-sqlite", "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container("push-sqlite")["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == STORE_MOUNT
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod_spec("push-sqlite")["securityContext"]["fsGroup"] == 10001
    assert by_kind("push-sqlite", "PodDisruptionBudget") == []  # it would block node drains
    (service,) = by_kind("push-sqlite", "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]


def test_push_pods_equal_the_single_pod_but_for_push_mode() -> None:
    """Security context, probes' paths and mounts come from one pattern."""
    single = pod_spec("single")
    for variant in PUSH_VARIANTS:
        push = pod_spec(variant)
        assert push["securityContext"].items() >= single["securityContext"].items()
        assert container(variant)["securityContext"] == container("single")["securityContext"]
        assert container(variant)["image"] == container("single")["image"]


def documented_secret_commands() -> list[tuple[str, str, str]]:
    """(page:line, `kubectl create secret` command, the variant the same block applies)."""
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text()
        for block in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
            script = block[1].replace("\\\n", " ")
            applied = re.findall(r"kubectl apply -n \S+ -k deploy/kubernetes(\S*)", script)
            where = f"{page.name}:{text[: block.start()].count(chr(10)) + 1}"
            for command in re.findall(r"^.*create secret generic.*$", script, re.M):
                (path,) = applied
                (variant,) = [v for v, d in VARIANTS.items() if d == KUSTOMIZE / path.strip("/")]
                found.append((where, command, variant))
    return found


def test_the_documented_kubectl_secrets_carry_exactly_the_keys_the_pods_read() -> None:
    commands = documented_secret_commands()
    assert {variant for _, _, variant in commands} == set(VARIANTS) - {"sharded"}, commands
    for where, command, variant in commands:
        name = re.search(r"create secret generic (\S+)", command)[1]  # type: ignore[index]
        keys = set(re.findall(r"--from-literal=([A-Z_]+)=", command))
        read = {
            e["valueFrom"]["secretKeyRef"]["key"]
            for e in secret_env(variant)
            if e["valueFrom"]["secretKeyRef"]["name"] == name
        }
        assert keys == read, (where, variant, keys, read)
