"""Bad configuration files meet a located, readable message: never a traceback, never a
value silently dropped, never a secret printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.configfile import load_config
from exporter.errors import ConfigError
from exporter.simulator.scenario import load_scenario
from exporter.webconfig import load_web_config
from exporter.yamlfile import key_lines

ENV = {"TOKEN": "tok-value"}
ACCOUNT = """accounts:
  - name: main
    endpoint: http://127.0.0.1:1
    project_id: p1
    credentials: {token: {env: TOKEN}}
    templates: [T1]
"""


def _problems(tmp_path: Path, content: str | bytes, env: dict[str, str] = ENV) -> list[str]:
    path = tmp_path / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, env)
    return info.value.problems


def test_each_problem_names_the_file_and_the_line_of_its_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert _problems(tmp_path, ACCOUNT + "poll_interval: 0s\n") == [
        f"{path}:7: poll_interval: must be greater than zero"
    ]
    assert _problems(tmp_path, ACCOUNT.replace("[T1]", "{include: ['([']}")) == [
        f"{path}:6: accounts[0].templates.discover: set to true, or list template ids instead",
        f"{path}:6: accounts[0].templates.include: invalid regular expression: "
        "unterminated character set at position 1",
    ]


def test_a_duration_written_as_a_bare_number_says_it_has_no_unit(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert _problems(tmp_path, ACCOUNT + "poll_interval: 60\nwindow: [1h]\n") == [
        f"{path}:7: poll_interval: not a duration (use e.g. 30s, 5m, 1h): 60 has no unit",
        f"{path}:8: window: not a duration (use e.g. 30s, 5m, 1h)",
    ]


def test_an_id_yaml_reads_as_a_number_is_to_be_quoted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = ACCOUNT.replace("project_id: p1", "project_id: 0123456701234567")
    assert _problems(tmp_path, text.replace("[T1]", "[T1, 20261126]")) == [
        f"{path}:4: accounts[0].project_id: expected a string; YAML read this one as a number:"
        " quote it",
        f"{path}:6: accounts[0].templates[1]: expected a template id string; YAML read this one"
        " as a number: quote it",
    ]


def test_a_misspelt_key_is_unknown_with_the_closest_spelling(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert _problems(tmp_path, ACCOUNT.replace("templates:", "tmplates:") + "pol_interval: 1m") == [
        f"{path}:7: pol_interval: unknown key, did you mean 'poll_interval'?",
        f"{path}:6: accounts[0].tmplates: unknown key, did you mean 'templates'?",
        f"{path}:2: accounts[0].templates: is required (a list of ids, or discover: true)",
    ]


def test_a_key_given_twice_is_refused_instead_of_the_last_one_winning(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert _problems(tmp_path, ACCOUNT + "accounts: []\n") == [
        f"{path}:7:1: duplicate key 'accounts'"
    ]


def test_a_yaml_merge_may_still_override_a_merged_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    merged = ACCOUNT.replace("  - name: main", "  - &base\n    name: main")
    path.write_text(merged + "  - <<: *base\n    name: second\n")
    config = load_config(path, ENV)
    assert [a.name for a in config.accounts] == ["main", "second"]


def test_an_alias_that_holds_itself_is_a_located_problem_not_a_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(ACCOUNT.replace("[T1]", "&t [*t]"))
    result = _run("exporter", "--config.file", str(path), "--check-config")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "msgsms-exporter: invalid configuration:",
        f"  {path}:6: accounts[0].templates[0]: expected a template id string",
    ]


def test_nested_aliases_are_located_in_one_walk_of_the_text(tmp_path: Path) -> None:
    # Five levels of ten aliases: 111,110 key paths when every alias is walked again.
    levels = ["l0: &l0 [a, b, c, d, e, f, g, h, i, j]"]
    levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 6)]
    text = "\n".join(levels) + "\n"
    lines = key_lines(yaml.compose(text))
    assert len(lines) == 6 + 10 * 6
    assert lines["l5"] == 6
    # A problem under an alias is located at the key that holds the alias.
    path = tmp_path / "config.yaml"
    path.write_text(ACCOUNT + "\n".join(levels) + "\n")
    assert _problems(tmp_path, path.read_text())[0] == f"{path}:7: l0: unknown key"


def test_a_file_that_is_not_a_mapping_says_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for content, held in (
        ("", "the file is empty"),
        ("# only\n", "the file is empty"),
        ("- a\n", "got a list"),
        ("hello\n", "got a single value"),
    ):
        assert _problems(tmp_path, content) == [
            f"{path}: top level: expected a mapping of settings, {held}",
            f"{path}: accounts: expected a non-empty list of accounts",
        ]


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert _problems(tmp_path, ACCOUNT.encode() + b"window: \xff\n") == [
        f"{path}:7: not UTF-8 text (byte {len(ACCOUNT) + 8})"
    ]


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + ACCOUNT.encode())
    assert load_config(path, ENV).accounts[0].name == "main"


def test_an_api_account_without_credentials_says_they_are_required(tmp_path: Path) -> None:
    text = ACCOUNT.replace("    credentials: {token: {env: TOKEN}}\n", "")
    assert _problems(tmp_path, text) == [
        f"{tmp_path / 'config.yaml'}:2: accounts[0].credentials: "
        "is required (access_key and secret_key, or token)"
    ]


def test_a_secret_file_that_is_not_text_is_named_without_its_bytes(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_bytes(b"s3cr3t\xff\xfe")
    text = ACCOUNT.replace("{env: TOKEN}", f"{{file: {secret}}}")
    (problem,) = _problems(tmp_path, text)
    assert problem.endswith(f"accounts[0].credentials.token.file: {secret} is not UTF-8 text")
    assert "s3cr3t" not in problem


def test_a_secret_reference_that_is_not_a_name_is_refused_as_such(tmp_path: Path) -> None:
    assert _problems(tmp_path, ACCOUNT.replace("{env: TOKEN}", "{env: [1]}"))[0].endswith(
        "accounts[0].credentials.token.env: expected an environment variable name"
    )
    assert _problems(tmp_path, ACCOUNT.replace("{env: TOKEN}", "{file: 5}"))[0].endswith(
        "accounts[0].credentials.token.file: expected a file path"
    )


def test_an_empty_secret_is_refused_naming_its_variable_or_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for blank in ("", " \n"):
        assert _problems(tmp_path, ACCOUNT, {"TOKEN": blank}) == [
            f"{path}:5: accounts[0].credentials.token.env: environment variable TOKEN is empty"
        ]
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert _problems(tmp_path, ACCOUNT.replace("{env: TOKEN}", f"{{file: {empty}}}")) == [
        f"{path}:5: accounts[0].credentials.token.file: {empty} is empty"
    ]


def test_an_empty_registration_token_stops_the_start_instead_of_admitting_any_bearer(
    tmp_path: Path,
) -> None:
    # MSGSMS_PUSH_REGISTRATION_TOKEN="$(openssl rand -hex 32)" without openssl sets it
    # empty: "Authorization: Bearer " then matched it, and anyone could register sends.
    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts: [{name: a, source: push, templates: {discover: true}}]\n"
        "receiver:\n"
        f"  store_path: {tmp_path / 'push.db'}\n"
        "  registration_token: {env: TOKEN}\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={path}",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKEN": ""},
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "msgsms-exporter: invalid configuration:",
        f"  {path}:4: receiver.registration_token.env: environment variable TOKEN is empty",
    ]
    assert not (tmp_path / "push.db").exists()


def test_a_store_url_that_urllib_cannot_split_is_refused_without_its_password(
    tmp_path: Path,
) -> None:
    text = (
        "accounts: [{name: a, source: push, templates: {discover: true}}]\n"
        "receiver: {store_url: 'postgresql://u:hunter2@[::1/db'}\n"
    )
    (problem,) = _problems(tmp_path, text)
    assert problem.endswith(
        "receiver.store_url: is not a valid URL (check the brackets around an IPv6 host)"
    )
    assert "hunter2" not in problem


def test_a_duration_too_long_for_the_clock_is_refused(tmp_path: Path) -> None:
    for huge in ("3651d", "99999999999999999999h", "9" * 400 + "h"):
        (problem,) = _problems(tmp_path, ACCOUNT + f"poll_interval: {huge}\n")
        assert problem.endswith("poll_interval: too long, at most 3650d")


def test_a_scenario_file_that_is_not_utf8_or_has_a_duplicate_key_is_located(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_bytes(b"templates: [{template_id: x\xff}]\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert info.value.problems == [f"{path}:1: not UTF-8 text (byte 27)"]
    path.write_text("templates: []\ntemplates: []\nrate_multipler: 2\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert info.value.problems == [f"{path}:2:1: duplicate key 'templates'"]
    path.write_text("- a\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert info.value.problems[0] == f"{path}: top level: expected a mapping"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=60,
        check=False,
    )


def test_check_config_refuses_a_garbage_listen_address(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(ACCOUNT)
    result = _run(
        "exporter", "--config.file", str(path), "--check-config", "--web.listen-address", "nohost"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("msgsms-exporter: --web.listen-address: invalid listen address")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("mode", ["--check-config", "--demo"])
def test_a_url_as_listen_address_is_refused_before_any_warning(tmp_path: Path, mode: str) -> None:
    # It used to pass as host "http://127.0.0.1": the demo warned that the host was off
    # loopback, then the start failed with "Name or service not known".
    path = tmp_path / "config.yaml"
    path.write_text(ACCOUNT)
    config = ["--config.file", str(path)] if mode == "--check-config" else []
    result = _run("exporter", *config, mode, "--web.listen-address", "http://127.0.0.1:9170")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "msgsms-exporter: --web.listen-address: invalid listen address"
        " 'http://127.0.0.1:9170': use host:port or :port, not a URL\n"
    )


def test_the_simulator_refuses_a_push_url_without_its_scheme_before_starting() -> None:
    # It used to start and log "push failed: UnsupportedProtocol" for every push.
    result = _run("exporter.simulator.cli", "--push.url", "127.0.0.1:9170")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "msgsms-simulator: error: argument --push.url: expected an http:// or https:// base"
        " URL such as http://127.0.0.1:9170, got '127.0.0.1:9170'"
    )


@pytest.mark.parametrize(
    ("flag", "value"), [("--scale", "-1"), ("--scale", "nan"), ("--query.max-limit", "0")]
)
def test_the_simulator_refuses_a_negative_or_not_a_number_rate_flag(flag: str, value: str) -> None:
    result = _run("exporter.simulator.cli", flag, value, "--web.listen-address", "127.0.0.1:0")
    assert result.returncode == 2
    assert f"argument {flag}: expected a" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_store_path_that_cannot_be_created_is_one_line_at_start(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    store = tmp_path / "missing-dir" / "push.db"
    path.write_text(
        "accounts: [{name: a, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {store}, allow_unsigned: true}}\n"
    )
    result = _run("exporter", "--config.file", str(path), "--web.listen-address", "127.0.0.1:0")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"msgsms-exporter: receiver.store_path: {store}: unable to open database file",
        "  (its directory must exist and be writable by the exporter)",
    ]


@pytest.mark.parametrize(
    ("kind", "error", "hint"),
    [
        ("directory", "unable to open database file", "it is a directory: name a file in it"),
        ("text", "file is not a database", "the file must be an SQLite store"),
        ("tilde", "unable to open database file", "~ is not expanded"),
    ],
)
def test_a_store_path_that_is_no_store_says_what_it_is(
    tmp_path: Path, kind: str, error: str, hint: str
) -> None:
    store = tmp_path / "store"
    if kind == "directory":
        store.mkdir()
    elif kind == "text":
        store.write_text("notes, not a database\n" * 100)
    else:
        store = Path("~/msgsms-exporter-test-no-such-dir/push.db")
    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts: [{name: a, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {store}, allow_unsigned: true}}\n"
    )
    result = _run("exporter", "--config.file", str(path), "--web.listen-address", "127.0.0.1:0")
    assert result.returncode == 1
    first, second = result.stderr.splitlines()
    assert first == f"msgsms-exporter: receiver.store_path: {store}: {error}"
    assert second.startswith(f"  ({hint}")


def test_a_mistyped_packaged_scenario_name_lists_the_packaged_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_scenario("defualt")
    assert info.value.problems == [
        "defualt: cannot read: No such file or directory (nor a packaged scenario: default, load)"
    ]
    with pytest.raises(ConfigError) as info:
        load_scenario("mine.yaml")  # clearly a file: no guess
    assert info.value.problems == ["mine.yaml: cannot read: No such file or directory"]


def test_web_config_and_scenario_problems_carry_their_line_too(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {}\nbasic_auth_user: {a: b}\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(web)
    assert info.value.problems == [
        f"{web}:2: basic_auth_user: unknown key, did you mean 'basic_auth_users'?"
    ]
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("seed: 1\nrate_multiplier: fast\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(scenario)
    assert f"{scenario}:2: rate_multiplier: expected a number in [0, 1e+06]" in info.value.problems


def test_a_store_url_without_the_postgres_extra_names_the_install_from_the_clone(
    tmp_path: Path,
) -> None:
    # msgsms-exporter is not on PyPI: the message must not send pip there for it.
    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts: [{name: a, source: push, templates: {discover: true}}]\n"
        "receiver: {store_url: 'postgresql://msgsms@127.0.0.1:1/msgsms', allow_unsigned: true}\n"
    )
    without_psycopg = (
        "import sys; sys.modules['psycopg'] = None; from exporter.cli import main;"
        f" sys.exit(main(['--config.file', {str(path)!r}, '--check-config']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_psycopg],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "msgsms-exporter: invalid configuration:",
        f"  {path}:2: receiver.store_url: needs the postgres extra (psycopg): in a clone,"
        " pip install '.[postgres]' (msgsms-exporter is not on PyPI); the container image has it",
    ]


def test_a_secret_written_inline_is_refused_naming_the_two_forms_and_never_quoted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    inline = ACCOUNT.replace("{token: {env: TOKEN}}", "{token: s3cr3t-inline}")
    problems = _problems(tmp_path, inline)
    assert problems == [
        f"{path}:5: accounts[0].credentials.token: expected {{env: VAR}} or {{file: PATH}};"
        " never the secret itself"
    ]
    assert "s3cr3t-inline" not in "".join(problems)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("discover", "expected a list of template ids, or {discover: true}"),
        ("T1", "expected a list of template ids, or {discover: true}"),
        ("[]", "selects no template: list template ids, or {discover: true}"),
        ("{}", "selects no template: list template ids, or {discover: true}"),
    ],
)
def test_templates_that_select_nothing_or_are_no_list_say_the_two_forms(
    tmp_path: Path, written: str, problem: str
) -> None:
    # An empty selection used to pass: the account then exported no template at all.
    path = tmp_path / "config.yaml"
    assert _problems(tmp_path, ACCOUNT.replace("[T1]", written)) == [
        f"{path}:6: accounts[0].templates: {problem}"
    ]


@pytest.mark.parametrize("written", ["off", "'off'", "on", "extra"])
def test_a_synchronous_setting_yaml_reads_as_a_boolean_names_the_two_values(
    tmp_path: Path, written: str
) -> None:
    # YAML reads SQLite's `off` as false: that said "expected a non-empty string".
    path = tmp_path / "config.yaml"
    content = (
        "accounts: [{name: a, source: push, templates: {discover: true}}]\n"
        f"receiver: {{store_path: {tmp_path / 'push.db'}, synchronous: {written}}}\n"
    )
    assert _problems(tmp_path, content) == [
        f"{path}:2: receiver.synchronous: expected 'normal' or 'full'"
        " (SQLite's off is not offered: a power loss could lose reports)"
    ]


def test_a_short_mobile_key_is_refused_with_its_length_never_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    receiver = (
        "receiver:\n  store_path: push.db\n  mobile_key: {env: MOBILE_KEY}\n"
        "  mobile_key_previous: {env: OLD_KEY}\n"
    )
    env = {**ENV, "MOBILE_KEY": "short-key-9f2", "OLD_KEY": "o" * 32}
    problems = _problems(tmp_path, ACCOUNT + receiver, env)
    assert problems == [
        f"{path}:9: receiver.mobile_key: expected a key of 32 characters or more"
        " (openssl rand -hex 32); got 13",
        f"{path}:10: receiver.mobile_key_previous: needs receiver.mobile_key (the new key)",
    ]
    assert "short-key-9f2" not in "".join(problems)
