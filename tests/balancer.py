"""The shipped load-balancer examples (``deploy/loadbalancer``), filled in and run by
Debian's nginx or HAProxy on a free loopback port, in front of the given replicas."""

from __future__ import annotations

import os
import socket
import string
import subprocess
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from health import free_port, stop
from promtool import require_tool

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy" / "loadbalancer" / "msgsms-push.conf.template"
HAPROXY_CONFIG = REPO / "deploy" / "loadbalancer" / "haproxy.cfg"


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def write_config(workdir: Path, listen_port: int, replica_ports: list[int]) -> Path:
    """nginx.conf including the filled-in template; returns its path."""
    filled = string.Template(TEMPLATE.read_text()).safe_substitute(
        MSGSMS_LISTEN=f"127.0.0.1:{listen_port}",
        MSGSMS_REPLICA_1=f"127.0.0.1:{replica_ports[0]}",
        MSGSMS_REPLICA_2=f"127.0.0.1:{replica_ports[1]}",
    )
    assert "${" not in filled
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "msgsms-push.conf").write_text(filled)
    temp = " ".join(
        f"{name}_temp_path {workdir}/{name};" for name in ("client_body", "proxy", "fastcgi")
    )
    temp += f" uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;"
    main = workdir / "nginx.conf"
    main.write_text(
        textwrap.dedent(
            f"""\
            {"user root;" if os.geteuid() == 0 else ""}
            worker_processes 1;
            pid {workdir}/nginx.pid;
            error_log {workdir}/error.log warn;
            events {{ worker_connections 1024; }}
            http {{
                access_log off;
                {temp}
                include {workdir}/msgsms-push.conf;
            }}
            """
        )
    )
    return main


def check_config(workdir: Path, replica_ports: list[int]) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on the filled-in template."""
    main = write_config(workdir, free_port(), replica_ports)
    command = [require_tool("nginx"), "-t", "-p", str(workdir), "-c", str(main)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def nginx(workdir: Path, replica_ports: list[int]) -> Iterator[str]:
    """nginx serving the filled-in template; yields its base URL."""
    binary = require_tool("nginx")
    port = free_port()
    main = write_config(workdir, port, replica_ports)
    with (workdir / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(main), "-g", "daemon off;"], stderr=stderr
        )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and not _accepts(port):
            assert time.monotonic() < deadline, "nginx did not listen within 60 s"
            time.sleep(0.05)
        assert process.poll() is None, (workdir / "stderr.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process, timeout=30)


def _haproxy_environment(listen_port: int, replica_ports: list[int]) -> dict[str, str]:
    return os.environ | {
        "MSGSMS_LISTEN": f"127.0.0.1:{listen_port}",
        "MSGSMS_REPLICA_1": f"127.0.0.1:{replica_ports[0]}",
        "MSGSMS_REPLICA_2": f"127.0.0.1:{replica_ports[1]}",
    }


def check_haproxy_config(replica_ports: list[int]) -> subprocess.CompletedProcess[str]:
    """``haproxy -c`` on the shipped file, its variables set."""
    command = [require_tool("haproxy"), "-c", "-f", str(HAPROXY_CONFIG)]
    environment = _haproxy_environment(free_port(), replica_ports)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, env=environment
    )


@contextmanager
def haproxy(workdir: Path, replica_ports: list[int]) -> Iterator[str]:
    """HAProxy serving the shipped file as it is; yields its base URL."""
    binary = require_tool("haproxy")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(HAPROXY_CONFIG)],
            stderr=stderr,
            env=_haproxy_environment(port, replica_ports),
        )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and not _accepts(port):
            assert time.monotonic() < deadline, "haproxy did not listen within 60 s"
            time.sleep(0.05)
        assert process.poll() is None, (workdir / "stderr.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process, timeout=30)
