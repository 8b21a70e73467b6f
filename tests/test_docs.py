"""The README's and docs/' reference parts against the code they describe.

A newcomer reads the flag table, the configuration table, the metric tables and the YAML
examples as the truth; each is compared here with what the code does: the flag table with
``build_parser()``, the configuration keys and defaults with ``exporter.config``, every
YAML example with the config parser, the metric tables with a real ``/metrics`` of the
demo after a few pushes, and every relative link with the files and headings it names.
The README's shell blocks run in ``tests/test_readme.py``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from health import free_port, stop, wait_healthy
from prometheus_client.parser import text_string_to_metric_families

from exporter import configfile, receiverconfig
from exporter.cli import build_parser
from exporter.config import Config, ReceiverConfig
from exporter.configfile import parse_config
from exporter.details_cli import build_parser as build_details_parser
from exporter.errors import ConfigError
from exporter.routes import details_withheld_message
from exporter.simulator import cli as simulator_cli
from exporter.simulator import gate, scenario, template_specs
from exporter.simulator.cli import build_parser as build_simulator_parser
from exporter.status_codes import StatusCategory
from exporter.timestamps import parse_duration
from exporter.webconfig import load_web_config
from exporter.webstats import DROP_REASONS, REQUEST_REASONS
from exporter.yamlfile import parse_yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FIXTURE = REPO / "tests" / "fixtures" / "exposition.prom"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
CODE = re.compile(r"`([^`]+)`")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)


def table(text: str, *header: str) -> list[list[str]]:
    """The rows (cells stripped) of the Markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[: len(header)] == list(header):
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table with the header {header}")


def section(text: str, heading: str) -> str:
    """The text under `heading` (a '#'-line) up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(f"\n{heading}\n")
    after = re.search(rf"^#{{1,{level}}} ", text[start + len(heading) + 2 :], re.M)
    return text[start : start + len(heading) + 2 + after.start()] if after else text[start:]


# --------------------------------------------------------------------------------- flags


def test_the_readme_flag_table_is_the_exporters_flags_with_their_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MSGSMS_SHARD", raising=False)
    parser = build_parser()
    flags = {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    documented = {
        CODE.findall(row[0])[0].split()[0]: row[1]
        for row in table(README.read_text(), "flag", "default", "meaning")
    }
    subcommands = {flag for flag in documented if not flag.startswith("--")}
    assert subcommands == {"details"}, "the details row names the subcommand"
    assert "details" in (parser.epilog or ""), "--help lists the subcommand"
    assert set(documented) - subcommands == set(flags)
    for flag, default in documented.items():
        if flag in subcommands:
            continue
        action = flags[flag]
        shown = CODE.findall(default)
        if action.default in (None, False, "", argparse.SUPPRESS):
            assert not shown, f"{flag}: the README shows a default the flag does not have"
        else:
            assert shown and shown[0] == str(action.default), (flag, default, action.default)


def test_the_simulator_flag_table_is_the_simulators_flags_with_their_defaults() -> None:
    parser = build_simulator_parser()
    flags = {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    page = (REPO / "docs" / "simulator.md").read_text()
    documented = {
        CODE.findall(row[0])[0]: row[1] for row in table(page, "flag", "default", "meaning")
    }
    assert set(documented) == set(flags)
    for flag, default in documented.items():
        action = flags[flag]
        shown = CODE.findall(default)
        if any(action.default is unset for unset in (None, False, argparse.SUPPRESS)):
            assert not shown, f"{flag}: docs/simulator.md shows a default the flag does not have"
            continue
        assert shown, f"{flag}: docs/simulator.md shows no default, the flag's is {action.default}"
        # Shown as a user types it (24h, 127.0.0.1:9171): read as the flag reads it.
        read = action.type(shown[0]) if callable(action.type) else shown[0]
        assert read == action.default, (flag, shown[0], action.default)


def test_the_packaged_scenarios_name_every_key_a_scenario_file_may_hold() -> None:
    # --scenario.file points the reader at default.yaml, "commented", for the format.
    shown = "".join(
        (REPO / "exporter" / "simulator" / name).read_text()
        for name in ("default.yaml", "load.yaml")
    )
    keys = scenario._TOP_KEYS | template_specs._TEMPLATE_KEYS | template_specs._GENERATED_KEYS
    missing = sorted(key for key in keys if not re.search(rf"\b{key}\b", shown))
    assert missing == [], f"scenario keys in neither packaged scenario: {missing}"


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The parser's long options."""
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


def test_every_command_in_the_docs_uses_flags_its_program_has() -> None:
    programs = {
        "msgsms-exporter details": parser_flags(build_details_parser()),
        "msgsms-exporter": parser_flags(build_parser()),
        "msgsms-simulator": parser_flags(build_simulator_parser()),
    }
    invocation = re.compile(
        r"(?:^|[\s`(/])(msgsms-exporter details|msgsms-exporter|msgsms-simulator)(?=\s)([^`|&;#]*)"
    )
    checked = 0
    for page in PAGES:
        text = page.read_text().replace("\\\n", " ")
        for number, line in enumerate(text.splitlines(), start=1):
            for program, rest in invocation.findall(line):
                for flag in re.findall(r"(?<![\w-])(--[a-z][\w.-]*)", rest):
                    checked += 1
                    assert flag in programs[program], f"{page.name}:{number}: {program} {flag}"
    assert checked >= 20


def test_every_benchmark_the_docs_quote_exists_with_the_flags_shown() -> None:
    # Read, not run: the benchmarks take minutes to hours.
    quoted = 0
    for page in PAGES:
        text = page.read_text().replace("\\\n", " ")
        for script, rest in re.findall(r"python (bench/\w+\.py)([^`\n|]*)", text):
            quoted += 1
            source = (REPO / script).read_text() if (REPO / script).is_file() else ""
            assert source, f"{page.name}: {script} does not exist"
            for flag in re.findall(r"(?<![\w-])(--[a-z][\w.-]*)", rest):
                assert f'"{flag}"' in source, f"{page.name}: {script} has no {flag}"
    assert quoted >= 10


def test_the_simulator_credentials_the_readme_gives_are_the_ones_it_accepts() -> None:
    # The example config polls the simulator only with these: a newcomer finds them here.
    text = README.read_text()
    for name, default in (
        ("MSGSMS_SIMULATOR_AK", gate.DEFAULT_ACCESS_KEY),
        ("MSGSMS_SIMULATOR_SK", gate.DEFAULT_SECRET_KEY),
        ("MSGSMS_SIMULATOR_TOKEN", gate.DEFAULT_TOKEN),
    ):
        assert f"`{default}" in text and f"`{name}`" in text, name
        assert name in (build_simulator_parser().epilog or "")
        assert name in inspect.getsource(simulator_cli)
    assert f"MSGSMS_ACCESS_KEY={gate.DEFAULT_ACCESS_KEY} " in text
    assert f"MSGSMS_SECRET_KEY={gate.DEFAULT_SECRET_KEY}\n" in text


def test_the_details_flags_in_the_docs_are_the_subcommands_flags() -> None:
    text = (REPO / "docs/details.md").read_text()
    listed = section(text, "## From the terminal")
    documented = set(re.findall(r"`(--[a-z.-]+)", listed))
    parser = build_details_parser()
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert documented == flags - {"--help"}


# -------------------------------------------------------------------------- configuration


def test_the_readme_configuration_table_names_every_key_with_its_default() -> None:
    rows = table(README.read_text(), "key", "default", "meaning")
    top: dict[str, str] = {}
    account: dict[str, str] = {}
    for row in rows:
        for key in CODE.findall(row[0]):
            if key.startswith("accounts[]."):
                account[key.removeprefix("accounts[].")] = row[1]
            else:
                top[key] = row[1]
    assert set(top) | {"accounts"} == configfile._TOP_KEYS
    assert set(account) == configfile._ACCOUNT_KEYS
    defaults = Config(accounts=())
    for key, shown in top.items():
        if key in ("receiver", "windows"):
            continue
        (value,) = CODE.findall(shown) or [shown]
        expected = defaults.window if key == "window" else getattr(defaults, key)
        if isinstance(expected, float):
            assert parse_duration(value) == expected, key
        else:
            assert value == str(expected), key
    assert account["source"] == "`api`", "an account without source: is polled (api)"


def placeholder_env(text: str) -> dict[str, str]:
    """A value for every variable the config text names (``{env: X}``, ``${X}``)."""
    names = {a or b for a, b in re.findall(r"\{env: ([A-Z_]+)\}|\$\{([A-Z_]+)\}", text)}
    # A mobile key needs 32 characters or more (what ``openssl rand -hex 32`` gives).
    env = {name: "0" * 64 if "MOBILE_KEY" in name else "x" for name in names}
    if "MSGSMS_ENDPOINT" in env:
        env["MSGSMS_ENDPOINT"] = "https://sms-details.example.internal"
    if "MSGSMS_STORE_URL" in env:
        env["MSGSMS_STORE_URL"] = "postgresql://msgsms@db:5432/msgsms?sslmode=verify-full"
    return env


def test_the_example_config_shows_every_key_and_its_commented_values_are_the_defaults() -> None:
    text = (REPO / "config/msgsms-exporter.yaml").read_text()
    for key in configfile._TOP_KEYS:
        assert re.search(rf"^(# )?{key}:", text, re.M), f"top-level {key} is not shown"
    for key in configfile._ACCOUNT_KEYS:
        assert re.search(rf"^ +(- )?(# )?{key}:", text, re.M), f"accounts[].{key} is not shown"
    defaults = Config(accounts=())
    commented = dict(re.findall(r"^# (\w+): (\S+)", text, re.M))
    for key, shown in commented.items():
        if key in ("windows", "receiver"):  # an example of several windows; a section
            continue
        expected = defaults.window if key == "window" else getattr(defaults, key)
        if isinstance(expected, float):
            assert parse_duration(shown) == expected, key
        else:
            assert shown == str(expected), key
    for path in re.findall(r"\(([\w/]+\.\w+)\)", text):
        assert (REPO / path).is_file(), f"the example names {path}, which does not exist"


def unknown_keys(path: str) -> list[str]:
    """The parser's "unknown key" problems for a config holding the dotted `path`."""
    raw: dict[str, object] = {
        "accounts": [{"name": "a", "source": "push", "templates": {"discover": True}}],
        "receiver": {"store_path": "/nonexistent/push.db"},
    }
    node: object = raw
    parts = path.split(".")
    for index, part in enumerate(parts):
        name, listed = part.removesuffix("[]"), part.endswith("[]")
        last = index == len(parts) - 1
        assert isinstance(node, dict)
        if last:
            node[name] = "x"
            break
        child = node.get(name)
        if listed:
            if not isinstance(child, list):
                child = node[name] = [{}]
            node = child[0]
        else:
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
    try:
        parse_config(raw, {})
    except ConfigError as error:
        return [p for p in error.problems if "unknown key" in p]
    return []


def test_every_config_key_the_docs_name_is_one_the_parser_knows() -> None:
    dotted = re.compile(r"(?<![\w/])((?:accounts\[\]|receiver)(?:\.[a-z_]+(?:\[\])?)+)")
    # An account's own keys, named without the accounts[] prefix (`templates.include`).
    relative = re.compile(r"`((?:templates|credentials|tls)(?:\.[a-z_]+)+)`")
    pages = [*PAGES, REPO / "config/msgsms-exporter.yaml"]
    named = {
        path
        for page in pages
        for path in dotted.findall(page.read_text())
        if not path.endswith(".py")  # receiver.py, the module
    } | {
        f"accounts[].{path}"
        for page in pages
        for path in relative.findall(page.read_text())
        if not path.endswith(".py")  # templates.py, the module
    }
    assert len(named) >= 10, named
    for path in sorted(named):
        assert unknown_keys(path) == [], f"the docs name {path}"
    assert unknown_keys("receiver.signing.keys[].acount"), "the check finds a misspelt key"


def test_the_readme_lists_every_status_the_http_layer_refuses_with() -> None:
    # 403 (details_withheld), 405 and 503 (auth_overloaded) were missing from the list.
    listed = re.search(r"refusals of the HTTP layer \(([\d, ]+)\)", README.read_text())
    assert listed is not None
    statuses = sorted(set(REQUEST_REASONS.values()))
    assert [int(code) for code in listed[1].split(", ")] == statuses


def test_the_withheld_details_answer_quoted_in_operations_is_the_exporters() -> None:
    text = (REPO / "docs/operations.md").read_text()
    quoted = text.partition("The 403 reads:")[2]
    (body,) = [m["body"] for m in FENCE.finditer(quoted)][:1]
    assert body.strip() == details_withheld_message("0.0.0.0")


def test_the_web_config_example_is_one_the_exporter_loads(
    tls_files: tuple[str, str], tmp_path: Path
) -> None:
    text = (REPO / "docs/operations.md").read_text()
    (example,) = [
        m["body"] for m in FENCE.finditer(text) if m["body"].startswith("tls_server_config:")
    ]
    cert, key = tls_files
    written = tmp_path / "web-config.yml"
    written.write_text(
        re.sub(
            r"key_file: \S+",
            f"key_file: {key}",
            re.sub(r"cert_file: \S+", f"cert_file: {cert}", example),
        )
    )
    web = load_web_config(str(written))
    assert web.tls is not None and web.tls.min_version == ssl.TLSVersion.TLSv1_2
    assert set(web.users) == {"prometheus"}


def config_examples() -> Iterator[tuple[str, str]]:
    """Every YAML block of the README and docs/ that is exporter configuration."""
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            body = textwrap.dedent(match["body"])
            if match["lang"] in ("yaml", "yml") and re.search(r"^(accounts|receiver):", body, re.M):
                line = text[: match.start()].count("\n") + 1
                yield f"{page.relative_to(REPO)}:{line}", body


EXAMPLES = list(config_examples())


def test_the_docs_have_configuration_examples() -> None:
    assert len(EXAMPLES) >= 4, [where for where, _ in EXAMPLES]


@pytest.mark.parametrize(("where", "body"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_every_configuration_example_in_the_docs_is_valid(
    where: str, body: str, tmp_path: Path
) -> None:
    # Secret files the example names are made here; the variables it names are set.
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")
    body = re.sub(r"\{file: /[^}\s]+\}", f"{{file: {secret_file}}}", body)
    raw = parse_yaml(body, where)
    assert isinstance(raw, dict)
    if "accounts" not in raw:  # a receiver fragment: shown for the push account it serves
        raw = {
            "accounts": [{"name": "prod", "source": "push", "templates": {"discover": True}}],
            **raw,
        }
    env = placeholder_env(body)
    config = parse_config(raw, env)
    if config.receiver is not None and "paths:" in body and "defaults shown" in body:
        defaults = ReceiverConfig(store_path="")
        shown = config.receiver
        assert (shown.single_path, shown.batch_path, shown.sends_path) == (
            defaults.single_path,
            defaults.batch_path,
            defaults.sends_path,
        )
        assert shown.retention == defaults.retention
        assert shown.synchronous == defaults.synchronous
        assert shown.max_templates == defaults.max_templates
        assert shown.allow_unsigned == defaults.allow_unsigned


def test_every_bundled_exporter_config_passes_check_config() -> None:
    configs = sorted(
        p
        for p in [*(REPO / "config").glob("*.yaml"), *(REPO / "deploy").rglob("config.yaml")]
        if "accounts:" in p.read_text()
    )
    assert len(configs) >= 5, configs
    for path in configs:
        env = placeholder_env(path.read_text())
        result = subprocess.run(
            [sys.executable, "-m", "exporter", f"--config.file={path}", "--check-config"],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **env},
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, (path, result.stdout + result.stderr)
        assert result.stdout == f"{path}: configuration is valid\n"


# -------------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def demo_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """Every family of the demo's /metrics after pushes, a rejected push and a 404:
    its type and the label names its samples carry."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--demo", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(url, path="/-/ready", alive=lambda: proc.poll() is None, what="demo")
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        with httpx.Client(base_url=url, timeout=30) as http:
            sent = http.post(
                "/push/sends?templateId=t-docs",
                json=[{"message_id": "docs-1", "template_id": "t-docs", "send_time": now()}],
            )
            assert sent.status_code == 200, sent.text
            report = f"smsMsgId=docs-1&status=DELIVRD&updateTime={now()}"
            assert http.post("/push/status-report", content=report, headers=form).status_code == 200
            refused = http.post("/push/status-report", content="status=DELIVRD", headers=form)
            assert refused.status_code == 400
            assert http.get("/no-such-page").status_code == 404
            # The receiver's live counters are rendered again when 100 ms old.
            deadline = time.monotonic() + 30
            while 'msgsms_push_rejected_total{reason="missing_field"}' not in (
                exposition := http.get("/metrics").text
            ):
                assert time.monotonic() < deadline, "the pushes never showed in /metrics"
                time.sleep(0.2)
    finally:
        stop(proc, timeout=10)
    families: dict[str, dict[str, object]] = {}
    for family in text_string_to_metric_families(exposition):
        labels = {name for sample in family.samples for name in sample.labels} - {"le"}
        families[family.name] = {"type": family.type, "labels": labels, "samples": family.samples}
    return families


def now() -> str:
    """The current time as Huawei writes it in a push."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def label_names(cell: str) -> set[str]:
    """The label names a table cell lists, comma-separated."""
    return {label.strip() for label in cell.split(",") if label.strip()}


def exposed_name(name: str) -> str:
    """A family's name as the parser keys it (counters lose ``_total``)."""
    return name.removesuffix("_total")


def test_the_readme_metric_table_is_what_the_demo_exports(
    demo_metrics: dict[str, dict[str, object]],
) -> None:
    rows = table(README.read_text(), "name", "type", "labels", "meaning")
    documented: set[str] = set()
    for row in rows:
        names, kind, labels = CODE.findall(row[0]), row[1], row[2]
        wanted = label_names(labels) - {"le"}
        for name in names:
            if name.endswith("*"):
                prefix = name.removesuffix("*")
                matched = [f for f in demo_metrics if f.startswith(prefix)]
                assert matched, name
                documented.update(matched)
                seen = set().union(*(demo_metrics[f]["labels"] for f in matched))  # type: ignore[misc]
                assert seen == wanted, (name, seen)
                types = {demo_metrics[f]["type"] for f in matched}
                assert {t + "s" for t in types} == {t.strip() for t in kind.split(",")}, name
                continue
            family = demo_metrics.get(exposed_name(name))
            assert family is not None, f"{name} is in the README but not in /metrics"
            documented.add(exposed_name(name))
            expected_type = "histogram" if kind == "gauge histogram" else kind
            assert family["type"] == expected_type, (name, family["type"])
            if family["samples"]:
                assert family["labels"] == wanted, (name, family["labels"])
    # A gauge histogram's _gsum/_gcount are exposed as gauge families of their own.
    exposed = {f for f in demo_metrics if not f.endswith(("_gsum", "_gcount"))}
    assert exposed - documented == set(), "exported but not in the README's metric table"


def test_every_metric_the_docs_rules_and_dashboards_name_is_one_the_demo_exports(
    demo_metrics: dict[str, dict[str, object]],
) -> None:
    # Beyond the tables: prose, runbooks, PromQL in the rules and in the dashboards.
    series = {
        sample.name
        for family in demo_metrics.values()
        for sample in family["samples"]  # type: ignore[attr-defined]
    } | set(demo_metrics)  # a histogram's own name, and a counter's without _total
    # PostgreSQL tables the docs name.
    not_metrics = {
        "msgsms_schema_version",
        "msgsms_messages",
        "msgsms_mobile_key",
        "msgsms_heartbeat",
        "msgsms_moves",
    }
    sources = [
        *PAGES,
        REPO / "config/prometheus/msgsms-rules.yml",
        *sorted((REPO / "dashboards").glob("*.json")),
    ]
    named = {
        (source.name, name)
        for source in sources
        for name in re.findall(
            r"(?<![\w:])msgsms_[a-z0-9_]*[a-z0-9]\b(?![*:(])", source.read_text()
        )
        if name not in not_metrics and not name.endswith("_")
    }
    assert len(named) >= 40
    unknown = sorted((page, name) for page, name in named if name not in series)
    assert unknown == [], f"named but not exported by the demo: {unknown}"


def test_the_fixture_the_dashboards_and_rules_are_tested_on_has_every_family_the_demo_exports(
    demo_metrics: dict[str, dict[str, object]],
) -> None:
    # test_dashboards.py and test_rules.py evaluate every query on tests/fixtures/exposition.prom:
    # a family missing there, or with other labels, is a panel or alert tested on nothing.
    fixture: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(FIXTURE.read_text()):
        labels = {name for sample in family.samples for name in sample.labels} - {"le"}
        fixture.setdefault(family.name.removesuffix("_bucket"), set()).update(labels)
    differ = {
        name: (sorted(family["labels"]), sorted(fixture.get(name, {"(missing)"})))  # type: ignore[call-overload]
        for name, family in demo_metrics.items()
        if family["samples"] and fixture.get(name) != family["labels"]
    }
    assert differ == {}, "the demo's label names against the fixture's"


def test_every_dashboard_and_panel_the_runbooks_name_exists() -> None:
    # A runbook's "Check." sends the reader to a panel by its title: one renamed since is
    # a dead end at 3 a.m.
    titles = set()
    for path in sorted((REPO / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        titles.add(dashboard["title"])
        for panel in dashboard["panels"]:
            titles.update(p["title"] for p in [panel, *panel.get("panels", [])])
    # The other screens the runbooks name: Prometheus's and Huawei's console.
    screens = {"Status → Targets", "Status → Configuration", "Application Management"}
    text = (REPO / "docs" / "alerts.md").read_text().replace("\n", " ")
    named = set(re.findall(r"(?<![*\w])\*([A-Z][^*]{2,80}?)\*(?![*\w])", text))
    assert len(named) >= 8
    assert sorted(named - titles - screens) == []


def test_the_readme_lists_exactly_the_status_code_categories() -> None:
    text = README.read_text()
    listed = text[text.index("Status-code categories") :].split("\n\n")[0]
    assert set(CODE.findall(listed)) - {"exporter/status_codes.py"} == set(StatusCategory)


def test_the_push_metric_table_is_what_the_receiver_exports(
    demo_metrics: dict[str, dict[str, object]],
) -> None:
    rows = table((REPO / "docs/push.md").read_text(), "name", "labels", "meaning")
    documented = {}
    for row in rows:
        (name,) = CODE.findall(row[0])
        documented[exposed_name(name)] = label_names(row[1])
    pushed = {f for f in demo_metrics if f.startswith("msgsms_push_")}
    assert pushed <= set(documented), pushed - set(documented)
    for name, labels in documented.items():
        family = demo_metrics.get(name)
        assert family is not None, f"{name} is in docs/push.md but not in /metrics"
        if family["samples"]:
            assert family["labels"] == labels, (name, family["labels"])


def test_the_http_refusal_reasons_in_the_docs_are_the_servers() -> None:
    rows = table((REPO / "docs/operations.md").read_text(), "metric", "reason", "status, when")
    metric = ""
    reasons: dict[str, dict[str, str]] = {}
    for row in rows:
        metric = CODE.findall(row[0])[0] if row[0] else metric
        for reason in CODE.findall(row[1]):
            reasons.setdefault(metric, {})[reason] = row[2]
    rejected = reasons["msgsms_http_requests_rejected_total"]
    assert set(rejected) == set(REQUEST_REASONS)
    for reason, status in REQUEST_REASONS.items():
        if reason in ("not_found", "method_not_allowed"):
            assert rejected[reason].startswith("404, 405")
        else:
            assert rejected[reason].startswith(str(status)), (reason, rejected[reason])
    assert set(reasons["msgsms_http_connections_dropped_total"]) == set(DROP_REASONS)


# --------------------------------------------------------------------------- architecture


def test_the_architecture_table_names_every_module_and_only_modules_that_exist() -> None:
    text = README.read_text()
    architecture = text[text.index("## Architecture") : text.index("## Dependencies")]
    named = {
        name
        for row in table(architecture, "module", "role")
        for name in CODE.findall(row[0])
        if name.endswith((".py", "/"))
    }
    modules = {p.name for p in (REPO / "exporter").glob("*.py")} - {"__init__.py", "__main__.py"}
    assert modules - named == set(), "modules missing from the README's architecture table"
    assert {n for n in named if not (REPO / "exporter" / n).exists()} == set()


# ---------------------------------------------------------------------------------- links


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for the page's headings (code blocks left out)."""
    prose = FENCE.sub("", text)
    anchors = set()
    for heading in re.findall(r"^#+ (.*)$", prose, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_names_a_file_and_heading_that_exist(page: Path) -> None:
    text = page.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", text))
    assert links or page.name != "README.md"
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} names no file"
        if anchor and target.suffix == ".md":
            assert anchor in heading_anchors(target.read_text()), f"{page.name}: {link}"


def test_every_pip_install_of_the_project_installs_it_from_the_clone() -> None:
    # msgsms-exporter is not on PyPI: `pip install 'msgsms-exporter[postgres]'` fails for a
    # newcomer, or installs someone else's package of that name.
    installs = [
        (page.name, rest)
        for page in PAGES
        for rest in re.findall(r"pip install ([^`\n&;]*)", page.read_text())
    ]
    assert len(installs) >= 3
    for name, rest in installs:
        assert "msgsms-exporter" not in rest, f"{name}: pip install {rest}"
    assert "msgsms-exporter[" not in receiverconfig.POSTGRES_EXTRA_MISSING


def test_shell_examples_in_the_docs_parse() -> None:
    # The README's blocks run in tests/test_readme.py; the docs' need docker, kubectl,
    # sudo or a real account, so bash checks their syntax here.
    blocks = [
        (page, match)
        for page in DOCS
        for match in FENCE.finditer(page.read_text())
        if match["lang"] in ("sh", "bash", "shell")
    ]
    assert len(blocks) >= 15
    for page, match in blocks:
        script = textwrap.dedent(match["body"])
        syntax = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert syntax.returncode == 0, f"{page.name}: {syntax.stderr}\n{script}"


def test_yaml_examples_in_the_docs_parse() -> None:
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match["lang"] in ("yaml", "yml"):
                yaml.safe_load(textwrap.dedent(match["body"]))
