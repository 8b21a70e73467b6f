"""``--web.config.file``: the exporter-toolkit format, every problem located."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest

from exporter.errors import ConfigError
from exporter.webconfig import REMEMBERED_FAILURES, BasicAuth, load_web_config, parse_web_config

HASH = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()


def test_no_file_content_means_no_tls_and_no_auth() -> None:
    config = parse_web_config(None)
    assert (config.tls, config.auth()) == (None, None)


def test_users_are_checked_with_bcrypt() -> None:
    auth = parse_web_config({"basic_auth_users": {"prometheus": HASH}}).auth()
    assert auth is not None
    assert auth.check("prometheus", "s3cret-pass")
    assert auth.check("prometheus", "s3cret-pass")  # the remembered digest
    assert not auth.check("prometheus", "wrong")
    assert not auth.check("nobody", "s3cret-pass")


def test_every_problem_is_reported_with_its_location(tmp_path: Path) -> None:
    raw = {
        "tls_server_config": {"cert_file": str(tmp_path / "missing.crt"), "min_version": "TLS10"},
        "basic_auth_users": {"a": "plain-text", "b:c": HASH},
        "http_server_config": {"http2": True},
        "extra": 1,
    }
    with pytest.raises(ConfigError) as caught:
        parse_web_config(raw)
    assert caught.value.problems == [
        "extra: unknown key",
        "http_server_config: not supported by msgsms-exporter",
        f"tls_server_config.cert_file: cannot read {tmp_path / 'missing.crt'}:"
        " No such file or directory",
        "tls_server_config.key_file: is required (a file path)",
        "tls_server_config.min_version: expected TLS12 or TLS13",
        "basic_auth_users.a: expected a bcrypt hash ($2a$, $2b$ or $2y$)",
        "basic_auth_users.b:c: a user name must be a non-empty string without ':'",
    ]


def test_a_broken_hash_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_web_config({"basic_auth_users": {"a": "$2b$12$short"}})
    assert caught.value.problems == ["basic_auth_users.a: not a valid bcrypt hash"]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_web_config(tmp_path / "nope.yml")
    assert caught.value.problems == [
        f"{tmp_path / 'nope.yml'}: cannot read: No such file or directory"
    ]
    bad = tmp_path / "web.yml"
    bad.write_text("basic_auth_users: [\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(bad)
    assert caught.value.problems[0].startswith(f"{bad}:")


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    with pytest.raises(ConfigError) as caught:
        parse_web_config({"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}})
    assert caught.value.problems[0].startswith("tls_server_config: cannot load")


def test_min_version_tls13(tls_files: tuple[str, str]) -> None:
    cert, key = tls_files
    raw = {"tls_server_config": {"cert_file": cert, "key_file": key, "min_version": "TLS13"}}
    config = parse_web_config(raw)
    assert config.tls is not None
    assert config.tls.context().minimum_version is ssl.TLSVersion.TLSv1_3


def test_repr_never_shows_hashes() -> None:
    config = parse_web_config({"basic_auth_users": {"prometheus": HASH}})
    assert HASH not in repr(config)
    assert HASH not in repr(BasicAuth(config.users))


def test_verdicts_are_remembered_so_a_stale_password_costs_one_bcrypt_check() -> None:
    auth = parse_web_config({"basic_auth_users": {"prometheus": HASH}}).auth()
    assert auth is not None
    assert auth.cached("prometheus", "stale") is None  # not checked yet: needs bcrypt
    assert not auth.check("prometheus", "stale")
    assert auth.cached("prometheus", "stale") is False
    assert auth.check("prometheus", "s3cret-pass")
    assert auth.cached("prometheus", "s3cret-pass") is True


def test_only_the_latest_wrong_passwords_are_remembered() -> None:
    auth = parse_web_config({"basic_auth_users": {"prometheus": HASH}}).auth()
    assert auth is not None
    for i in range(REMEMBERED_FAILURES + 1):
        assert not auth.check("prometheus", f"guess-{i}")
    assert auth.cached("prometheus", "guess-0") is None  # the oldest forgotten
    assert auth.cached("prometheus", "guess-1") is False
