"""A network namespace of a test's own: loopback only, so fixed ports (9170) are free in it.

    with network_namespace() as inside:
        subprocess.run([*inside, "msgsms-exporter", "--demo"])   # listens on the namespace's :9170
        status, body = fetch(inside, "http://127.0.0.1:9170/-/ready")

Needs root (unshare, nsenter) and iproute2; elsewhere a skip, a failure under CI=true.
Nothing inside reaches other hosts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def require_namespaces() -> str:
    """The path of `ip`; a skip (a failure under CI=true) when namespaces cannot be made."""
    ip = shutil.which("ip", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    problem = ""
    if os.geteuid() != 0:
        problem = "not root: cannot make a network namespace"
    elif ip is None or shutil.which("nsenter") is None or shutil.which("unshare") is None:
        problem = "ip (iproute2) or nsenter/unshare (util-linux) is not installed"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    assert ip is not None
    return ip


@contextmanager
def network_namespace() -> Iterator[tuple[str, ...]]:
    """Yield the command prefix that runs a process inside a fresh network namespace."""
    ip = require_namespaces()
    holder = subprocess.Popen(
        [
            "unshare",
            "--net",
            "--",
            "sh",
            "-c",
            f"{ip} link set lo up && echo up && exec sleep 3600",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "up", "the network namespace did not start"
        yield ("nsenter", f"--net=/proc/{holder.pid}/ns/net", "--")
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


# Prints the status line, then the body; no output when nothing answers.
_FETCH = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
        print(response.status); print(response.read().decode(), end="")
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    pass
"""


def fetch(inside: tuple[str, ...], url: str) -> tuple[int, str]:
    """GET `url` from inside the namespace: (status, body), (0, "") when nothing answers."""
    result = subprocess.run(
        [*inside, sys.executable, "-c", _FETCH, url],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    status, _, body = result.stdout.partition("\n")
    return int(status or 0), body
