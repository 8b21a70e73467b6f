"""A small filesystem of a test's own (tmpfs), to fill up; unmounted at the end.

    with small_disk(tmp_path / "disk", size="1m") as disk:
        PushStore(disk / "push.db")

Needs root (mount); elsewhere a skip, a failure under CI=true.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` while the block runs."""
    problem = ""
    if os.geteuid() != 0:
        problem = "not root: cannot mount a small filesystem"
    elif shutil.which("mount") is None:
        problem = "mount (util-linux) is not installed"
    else:
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        problem = done.stderr.strip() if done.returncode else ""
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    try:
        yield where
    finally:
        # Lazy: a file the test left open must not leave the mount behind.
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(folder: Path, name: str = "filler") -> Path:
    """Write ``folder/name`` until its filesystem has no byte left; the file."""
    path = folder / name
    chunk = b"\0" * 4096
    with path.open("ab", buffering=0) as out:
        for size in (len(chunk), 1):
            while True:
                try:
                    out.write(chunk[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return path
