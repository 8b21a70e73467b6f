import pytest
import yaml

from exporter.configfile import load_config, parse_config
from exporter.errors import ConfigError

ENV = {
    "MSGSMS_ACCESS_KEY": "AK1",
    "MSGSMS_SECRET_KEY": "very-secret",
    "ENDPOINT": "http://127.0.0.1:9171",
}


def _parse(text, env=ENV):
    return parse_config(yaml.safe_load(text), env)


def _problems(text, env=ENV):
    with pytest.raises(ConfigError) as info:
        _parse(text, env)
    return info.value.problems


VALID = """
accounts:
  - name: main
    endpoint: ${ENDPOINT}
    project_id: p1
    credentials:
      access_key: {env: MSGSMS_ACCESS_KEY}
      secret_key: {env: MSGSMS_SECRET_KEY}
    templates: [T1, T2]
poll_interval: 30s
window: 2h
"""


def test_parses_a_valid_config_into_frozen_objects():
    config = _parse(VALID)
    account = config.accounts[0]
    assert account.endpoint == "http://127.0.0.1:9171"
    assert account.templates.ids == ("T1", "T2")
    assert account.credentials is not None and account.credentials.access_key == "AK1"
    assert config.poll_interval == 30 and config.window == 7200
    assert config.page_size == 100 and config.top_status_codes == 10
    with pytest.raises(AttributeError):
        config.poll_interval = 1  # type: ignore[misc]


def test_never_shows_a_secret_in_repr():
    config = _parse(VALID)
    assert "very-secret" not in repr(config)
    assert "very-secret" not in str(config.accounts[0].secret_key)


def test_reports_every_problem_with_its_location_at_once():
    problems = _problems(
        """
accounts:
  - name: "bad name!"
    endpoint: ftp://x
    credentials:
      access_key: {env: MISSING_AK}
      secret_key: {file: /nonexistent/sk}
    templates: [T1, 3]
    colour: blue
poll_interval: soon
page_size: 500
extra: 1
"""
    )
    assert problems == [
        "extra: unknown key",
        "accounts[0].colour: unknown key",
        "accounts[0].name: use letters, digits, '_', '.' or '-' (at most 64)",
        "accounts[0].endpoint: expected an http:// or https:// URL",
        "accounts[0].project_id: is required",
        "accounts[0].credentials.access_key.env: environment variable MISSING_AK is not set",
        "accounts[0].credentials.secret_key.file: cannot read /nonexistent/sk: "
        "No such file or directory",
        "accounts[0].templates[1]: expected a template id string; YAML read this one as a"
        " number: quote it",
        "poll_interval: not a duration (use e.g. 30s, 5m, 1h): 'soon'",
        "page_size: must be at most 100 (the contract's maximum page)",
    ]


def test_rejects_an_unset_environment_reference():
    problems = _problems(VALID.replace("${ENDPOINT}", "${NOPE}"))
    assert problems == [
        "accounts[0].endpoint: environment variable NOPE is not set",
    ]


def test_requires_accounts():
    assert _problems("poll_interval: 1m") == ["accounts: expected a non-empty list of accounts"]


def test_rejects_a_window_longer_than_the_query_span():
    assert _problems(VALID.replace("window: 2h", "window: 25h")) == [
        "window: must not be longer than max_query_span (default 24h)"
    ]


def test_reads_secrets_from_files(tmp_path):
    secret = tmp_path / "sk"
    secret.write_text("from-file\n")
    config = _parse(VALID.replace("{env: MSGSMS_SECRET_KEY}", f"{{file: {secret}}}"))
    assert config.accounts[0].secret_key is not None
    assert config.accounts[0].secret_key.value == "from-file"


def test_discovery_patterns_filter_templates():
    config = _parse(
        VALID.replace("[T1, T2]", "{discover: true, include: ['^SMS_'], exclude: [test]}")
    )
    selection = config.accounts[0].templates
    assert selection.selects("SMS_LOGIN")
    assert not selection.selects("SMS_test_1")
    assert not selection.selects("OTHER")


def test_locates_yaml_syntax_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("accounts: [\n  - x: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith(f"{path}:")


def test_example_config_is_valid():
    config = load_config("config/msgsms-exporter.yaml", {**ENV, "MSGSMS_ENDPOINT": "https://x"})
    assert config.accounts[0].templates.discover


def test_accepts_several_windows_and_reads_back_the_longest():
    config = _parse(VALID.replace("window: 2h", "windows: [24h, 1h]"))
    assert config.windows == (3600, 86400)
    assert config.window == 86400


def test_rejects_window_and_windows_together_and_odd_windows():
    assert _problems(VALID.replace("window: 2h", "window: 2h\nwindows: [1h]")) == [
        "windows: give either 'window' or 'windows', not both"
    ]
    assert _problems(VALID.replace("window: 2h", "windows: [90s]")) == [
        "windows: must be whole multiples of 60s"
    ]
