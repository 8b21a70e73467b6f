"""Sharding: pure ownership rules, then 3 shards against the simulator summing to one."""

from __future__ import annotations

import collections
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_exporter_config
from hypothesis import given
from hypothesis import strategies as st

from exporter.errors import ConfigError
from exporter.sharding import (
    UNSHARDED,
    Shard,
    ordinal_from_hostname,
    owner_index,
    owns,
    parse_shard,
)

ids = st.text(min_size=1, max_size=40)


@given(account=ids, templates=st.lists(ids, max_size=50, unique=True), count=st.integers(1, 16))
def test_every_template_is_owned_by_exactly_one_shard(
    account: str, templates: list[str], count: int
) -> None:
    for template in templates:
        owners = [i for i in range(count) if owns(Shard(i, count), account, template)]
        assert owners == [owner_index(account, template, count)]


@given(account=ids, template=ids)
def test_one_shard_owns_everything(account: str, template: str) -> None:
    assert owns(UNSHARDED, account, template)


def test_ownership_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; the shard map must not be.
    code = "from exporter.sharding import owner_index; print(owner_index('default', 't-7', 5))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert outputs == {f"{owner_index('default', 't-7', 5)}\n"}


def test_ownership_known_answers() -> None:
    # Pinned so a change of hash silently reshuffling every deployment fails here.
    owners = [owner_index("default", f"tpl-{n:04d}", 3) for n in range(8)]
    assert owners == [2, 1, 0, 0, 0, 0, 2, 1]
    assert owner_index("default", "tpl-0001", 1) == 0


def test_templates_spread_evenly() -> None:
    counts = collections.Counter(owner_index("default", f"tpl-{n}", 4) for n in range(4000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(abs(c - 1000) < 120 for c in counts.values()), counts


def test_adding_a_shard_moves_few_templates() -> None:
    moved = sum(
        owner_index("default", f"tpl-{n}", 4) != owner_index("default", f"tpl-{n}", 5)
        for n in range(5000)
    )
    # Rendezvous hashing moves about 1/5 of the keys when going from 4 to 5 shards.
    assert math.isclose(moved / 5000, 1 / 5, abs_tol=0.03)


def test_account_is_part_of_the_key() -> None:
    owners = {owner_index(f"account-{a}", "same-template", 8) for a in range(64)}
    assert len(owners) > 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)), (" 15/16 ", Shard(15, 16))],
)
def test_parses_index_over_count(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected
    assert str(expected) == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3", "--shard: expected 'i/n' or 'auto/n' (e.g. '0/3'), got '3'"),
        ("a/3", "--shard: expected 'i/n' or 'auto/n' (e.g. '0/3'), got 'a/3'"),
        ("-1/3", "--shard: expected 'i/n' or 'auto/n' (e.g. '0/3'), got '-1/3'"),
        ("0/0", "--shard: shard count must be at least 1, got 0"),
        ("3/3", "--shard: shard index 3 is out of range for 3 shards (0..2)"),
        ("auto/3", "--shard: 'auto' needs a hostname to take the ordinal from"),
    ],
)
def test_rejects_bad_shard_with_located_message(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_shard(text)
    assert caught.value.problems == [message]


def test_location_names_the_config_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_shard("5/2", where="shard")
    assert caught.value.problems == ["shard: shard index 5 is out of range for 2 shards (0..1)"]


@pytest.mark.parametrize(
    ("hostname", "ordinal"),
    [
        ("msgsms-exporter-0", 0),
        ("msgsms-exporter-2", 2),
        ("msgsms-exporter-12.msgsms-exporter.monitoring.svc.cluster.local", 12),
    ],
)
def test_ordinal_from_statefulset_hostname(hostname: str, ordinal: int) -> None:
    assert ordinal_from_hostname(hostname) == ordinal


def test_auto_takes_index_from_hostname() -> None:
    assert parse_shard("auto/3", hostname="msgsms-exporter-2") == Shard(2, 3)


def test_auto_rejects_ordinal_beyond_count() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_shard("auto/2", hostname="msgsms-exporter-2")
    assert caught.value.problems == ["--shard: shard index 2 is out of range for 2 shards (0..1)"]


def test_hostname_without_ordinal_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        ordinal_from_hostname("msgsms-exporter-7d9f8b-xk2lp")
    assert caught.value.problems == [
        "--shard: hostname 'msgsms-exporter-7d9f8b-xk2lp' has no StatefulSet ordinal suffix"
        " ('-<n>')"
    ]


def test_shard_value_invariants() -> None:
    with pytest.raises(ValueError, match="index must be in"):
        Shard(3, 3)
    with pytest.raises(ValueError, match="count must be at least 1"):
        Shard(0, 0)


# --- 3 shards against the simulator --------------------------------------------------------

# Series that describe the account's templates; the rest (up, timestamps, durations, request
# counters, build info) describe each process and are not expected to add up across shards.
BUSINESS = (
    "msgsms_window_messages",
    "msgsms_window_status_code_messages",
    "msgsms_window_delivery_delay_seconds",
    "msgsms_template_info",
)

Sample = tuple[str, frozenset[tuple[str, str]]]


def parse_exposition(text: str) -> dict[Sample, float]:
    """Business samples of a text exposition, keyed by name and label set."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(BUSINESS):
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sum_expositions(texts: list[str]) -> dict[Sample, float]:
    total: dict[Sample, float] = collections.defaultdict(float)
    for text in texts:
        for key, value in parse_exposition(text).items():
            total[key] += value
    return dict(total)


def test_sum_of_expositions_adds_matching_series() -> None:
    series = 'msgsms_window_messages{account="a",template="t1",result="success"}'
    a = f'{series} 3\nmsgsms_up{{account="a"}} 1\n'
    b = f"{series} 4\n"
    key = (
        "msgsms_window_messages",
        frozenset({("account", "a"), ("template", "t1"), ("result", "success")}),
    )
    assert sum_expositions([a, b]) == {key: 7.0}


@pytest.fixture(scope="module")
def simulator_url() -> Iterator[str]:
    """A frozen simulator: manual clock, two hours of history, so every run sees the same data."""
    from tests.simulator_process import simulator_process

    with simulator_process(
        "--clock", "manual", "--history", "2h", "--seed", "7", "--scale", "0.1"
    ) as url:
        yield url


def exporter_command() -> list[str]:
    exe = shutil.which("msgsms-exporter")
    return [exe] if exe else [sys.executable, "-m", "exporter"]


def run_once(config: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    (text,) = run_together(config, [extra], env=env)
    return text


def run_together(
    config: Path, runs: list[tuple[str, ...]], env: dict[str, str] | None = None
) -> list[str]:
    """``--once`` with each run's extra flags, all started at once; their expositions."""
    procs = [
        subprocess.Popen(
            [*exporter_command(), f"--config.file={config}", "--once", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "MSGSMS_ACCESS_KEY": DEMO_AK,
                "MSGSMS_SECRET_KEY": DEMO_SK,
                **(env or {}),
            },
        )
        for extra in runs
    ]
    try:
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
    return [stdout for stdout, _ in outputs]


DEMO_AK = os.environ.get("MSGSMS_SIMULATOR_AK", "demo-access-key")
DEMO_SK = os.environ.get("MSGSMS_SIMULATOR_SK", "demo-secret-key")


def window_end(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    (value,) = {
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "msgsms_window_end_timestamp_seconds"
    }
    return value


def owned_templates(text: str) -> set[str]:
    return {
        dict(labels)["template"]
        for name, labels in parse_exposition(text)
        if name == "msgsms_template_info"
    }


def test_three_shards_sum_to_the_unsharded_exposition(simulator_url: str, tmp_path: Path) -> None:
    config = write_exporter_config(tmp_path / "config.yaml", simulator_url)
    # The simulator's clock is frozen, but each run's window ends at the exporter's own
    # (wall-clock) minute: the four run together, and the rare set that straddles a
    # minute boundary runs again.
    for _attempt in range(3):
        whole, *parts = run_together(config, [(), *((f"--shard={i}/3",) for i in range(3))])
        if len({window_end(text) for text in [whole, *parts]}) == 1:
            break
    else:
        pytest.fail("three sets of runs, each straddling a minute boundary")
    shards = [owned_templates(part) for part in parts]
    assert all(shards), f"a shard owns no template, the test proves nothing: {shards}"
    assert sum(map(len, shards)) == len(set.union(*shards)) == len(owned_templates(whole))
    expected = parse_exposition(whole)
    assert any(
        name == "msgsms_window_messages" and value > 0 for (name, _), value in expected.items()
    ), "the unsharded run counted no message"
    assert sum_expositions(parts) == expected


def test_shard_from_env_and_from_the_pod_hostname(simulator_url: str, tmp_path: Path) -> None:
    config = write_exporter_config(tmp_path / "config.yaml", simulator_url)
    by_flag = owned_templates(run_once(config, "--shard=2/3"))
    assert by_flag
    assert owned_templates(run_once(config, env={"MSGSMS_SHARD": "2/3"})) == by_flag
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to give the exporter a StatefulSet pod's hostname")
    # A private UTS namespace whose hostname is a StatefulSet pod's, as in the sharded variant.
    pod = ["unshare", "--uts", "sh", "-c", 'hostname msgsms-exporter-2 && exec "$@"', "sh"]
    result = subprocess.run(
        [*pod, *exporter_command(), f"--config.file={config}", "--once", "--shard=auto/3"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MSGSMS_ACCESS_KEY": DEMO_AK, "MSGSMS_SECRET_KEY": DEMO_SK},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert owned_templates(result.stdout) == by_flag


def test_bad_shard_flag_exits_1_with_a_located_message(tmp_path: Path) -> None:
    config = write_exporter_config(tmp_path / "config.yaml", "http://127.0.0.1:9")
    result = subprocess.run(
        [*exporter_command(), f"--config.file={config}", "--once", "--shard=3/3"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MSGSMS_ACCESS_KEY": DEMO_AK, "MSGSMS_SECRET_KEY": DEMO_SK},
        check=False,
    )
    assert result.returncode == 1
    assert "--shard: shard index 3 is out of range for 3 shards (0..2)" in result.stderr


def test_a_bad_msgsms_shard_is_named_as_the_variable_it_came_from(tmp_path: Path) -> None:
    # The flag's default comes from MSGSMS_SHARD: naming only --shard sent the reader
    # looking for a flag they never typed.
    config = write_exporter_config(tmp_path / "config.yaml", "http://127.0.0.1:9")
    env = {**os.environ, "MSGSMS_ACCESS_KEY": DEMO_AK, "MSGSMS_SECRET_KEY": DEMO_SK}
    from_env = subprocess.run(
        [*exporter_command(), f"--config.file={config}", "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "MSGSMS_SHARD": "3/3"},
        check=False,
    )
    assert from_env.returncode == 1
    assert from_env.stderr.splitlines()[-1] == (
        "  MSGSMS_SHARD (--shard): shard index 3 is out of range for 3 shards (0..2)"
    )
    given = subprocess.run(
        [*exporter_command(), f"--config.file={config}", "--check-config", "--shard=4/3"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "MSGSMS_SHARD": "3/3"},
        check=False,
    )
    assert given.stderr.splitlines()[-1] == (
        "  --shard: shard index 4 is out of range for 3 shards (0..2)"
    )
