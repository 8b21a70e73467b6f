"""Wheels for offline installs, as the Dockerfile builds them: the project and every dependency.

Dependency wheels are kept between runs in a cache (``$MSGSMS_WHEEL_CACHE``, default
``~/.cache/msgsms-exporter/wheels``), filled from the package index only when it lacks
one; the project's own wheel is always built from the checkout.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest


def wheel_cache() -> Path:
    """Where dependency wheels are kept between runs."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("MSGSMS_WHEEL_CACHE") or base / "msgsms-exporter" / "wheels")


def _pip_wheel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def build_wheels(source: Path, wheels: Path) -> None:
    """`pip wheel source` into `wheels` from the cache alone, filling the cache if it must.

    One process at a time (a lock file beside the cache): tests running in parallel
    never read a wheel another is still writing.
    """
    cache = wheel_cache()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with (cache.parent / "wheels.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_wheels(source, wheels, cache)


def _build_wheels(source: Path, wheels: Path, cache: Path) -> None:
    offline = ("--no-index", f"--find-links={cache}", "--wheel-dir", str(wheels), str(source))
    if _pip_wheel(*offline).returncode == 0:
        return
    cache.mkdir(parents=True, exist_ok=True)
    # The build backend's wheels too: an offline, isolated build installs them from here.
    build = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]["requires"]
    filled = _pip_wheel("--wheel-dir", str(cache), *build, str(source))
    if filled.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{filled.stdout}{filled.stderr}")
    for stale in cache.glob("msgsms_exporter-*.whl"):
        stale.unlink()  # the project itself is always built from the checkout
    again = _pip_wheel(*offline)
    assert again.returncode == 0, f"the filled wheel cache still lacks a wheel:\n{again.stderr}"
