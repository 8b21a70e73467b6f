"""Command line: ``msgsms-exporter`` (also ``python -m exporter``)."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import structlog

from exporter import __version__
from exporter.app import Exporter
from exporter.config import Config
from exporter.configfile import load_config
from exporter.errors import ConfigError, StoreUnavailable
from exporter.logs import LEVELS, configure_logging
from exporter.pushauth import is_loopback
from exporter.routes import details_exposure, push_exposure
from exporter.sharding import UNSHARDED, Shard, parse_shard
from exporter.timestamps import parse_duration
from exporter.web import parse_listen_address
from exporter.webconfig import WebConfig, load_web_config
from exporter.yamlfile import locate_in_file

DEFAULT_CONFIG = "/etc/msgsms-exporter/config.yaml"
DEFAULT_LISTEN = ":9170"
DEFAULT_SHUTDOWN_DELAY = "5s"
SIGNAL_CHECK_SECONDS = 0.05
STOP_GRACE_SECONDS = 10.0
"""After the shutdown delay, how long requests in flight may take to finish."""

log = structlog.get_logger("msgsms_exporter")


class ConfigFileAction(argparse.Action):
    """``--config.file``, remembered as given: ``--demo`` runs a config of its own, and
    ignoring the operator's file without a word would show the demo's data as theirs."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.config_file_given = True


def refuse_config_with_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 with argparse's one line when ``--demo`` comes with ``--config.file``."""
    if args.demo and getattr(args, "config_file_given", False):
        parser.error(
            "argument --config.file: not allowed with argument --demo"
            " (the demo's config is built in; drop one of them)"
        )


def build_parser() -> argparse.ArgumentParser:
    """The exporter's flags, Prometheus style."""
    parser = argparse.ArgumentParser(
        prog="msgsms-exporter",
        description="Prometheus exporter for Huawei Cloud Message & SMS delivery.",
        epilog=(
            "subcommands:\n"
            "  details    print sending details like the console's query"
            " (msgsms-exporter details --help)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default=DEFAULT_CONFIG,
        action=ConfigFileAction,
        help=f"YAML config (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        help=f"where to serve /, /metrics and the health endpoints (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default="",
        help="TLS and basic auth, in the Prometheus exporter-toolkit format",
    )
    parser.add_argument(
        "--web.health-unauthenticated",
        dest="health_open",
        action="store_true",
        help="serve /-/healthy and /-/ready without basic auth (for probes)",
    )
    parser.add_argument(
        "--web.details-unauthenticated",
        dest="details_open",
        action="store_true",
        help="serve /details and /api/v1/send-details without credentials, also off"
        " loopback (else they need basic auth there); logs a warning at every start and reload",
    )
    parser.add_argument(
        "--web.shutdown-delay",
        dest="shutdown_delay",
        type=_delay,
        default=DEFAULT_SHUTDOWN_DELAY,
        help="on SIGTERM, answer /-/ready 503 but keep serving this long before stopping"
        " (default 5s: the endpoint's removal reaches load balancers meanwhile)",
    )
    parser.add_argument("--log.level", dest="log_level", choices=LEVELS, default="info")
    parser.add_argument(
        "--log.format", dest="log_format", choices=("auto", "json", "console"), default="auto"
    )
    # The demo's config is built in: --check-config beside it would check nothing.
    config_or_demo = parser.add_mutually_exclusive_group()
    config_or_demo.add_argument(
        "--check-config", action="store_true", help="validate the config and exit 0 or 1"
    )
    parser.add_argument("--once", action="store_true", help="poll once, print the exposition, exit")
    config_or_demo.add_argument(
        "--demo",
        action="store_true",
        help="export an embedded simulator with two hours of history, and receive pushes",
    )
    parser.add_argument(
        "--shard",
        default=os.environ.get("MSGSMS_SHARD", "0/1"),
        help="own shard i of n ('i/n', or 'auto/n' from a StatefulSet pod ordinal)",
    )
    parser.add_argument("--version", action="version", version=f"msgsms-exporter {__version__}")
    return parser


def _wait_in_main_thread(done: Callable[[], bool]) -> None:
    """Wait until ``done()``, waking often: Python runs signal handlers in the main
    thread, and a signal the kernel gives to another thread does not wake a blocked one."""
    while not done():
        time.sleep(SIGNAL_CHECK_SECONDS)


def _delay(value: str) -> float:
    """``--web.shutdown-delay``: a duration such as ``5s`` or ``0s``."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def _shard(text: str, argv: Sequence[str]) -> Shard:
    """``--shard``; ConfigError names the flag, or ``MSGSMS_SHARD`` when the value is its."""
    try:
        return UNSHARDED if text == "0/1" else parse_shard(text, hostname=socket.gethostname())
    except ConfigError as error:
        given = any(arg.split("=", 1)[0] == "--shard" for arg in argv)
        if given or "MSGSMS_SHARD" not in os.environ:
            raise
        raise ConfigError(
            [p.replace("--shard:", "MSGSMS_SHARD (--shard):", 1) for p in error.problems]
        ) from None


def _report_config_error(error: ConfigError) -> int:
    print("msgsms-exporter: invalid configuration:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def serve(
    exporter: Exporter,
    listen: str,
    web: WebConfig = WebConfig(),  # noqa: B008 - frozen, never mutated
    health_open: bool = False,
    shutdown_delay: float = 5.0,
    details_open: bool = False,
) -> int:
    """Serve until a signal, then stop; SIGHUP reloads the config.

    SIGTERM drains: ``/-/ready`` answers 503 at once, pushes are still acknowledged for
    ``shutdown_delay``, requests in flight finish, then exit 0. SIGINT stops without
    the delay. A second SIGTERM or SIGINT exits at once (every acknowledged report is
    already committed).
    """
    host, port = parse_listen_address(listen)
    stop = threading.Event()
    delay = [shutdown_delay]

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("exiting at once", signal=name)
            os._exit(128 + signum)
        if signum == signal.SIGINT:
            delay[0] = 0.0
        log.info("shutting down", signal=name, delay_seconds=delay[0])
        stop.set()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        # Not in the handler itself: a reload waits for polls in flight.
        threading.Thread(target=exporter.reload_from_file, name="reload", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    bound_host, bound_port = exporter.start(
        host, port, web=web, health_open=health_open, details_open=details_open
    )
    # What exists now lives as long as the process: out of the collector's sight, so its
    # full passes (which otherwise walk every module, class and config object) stay short.
    gc.freeze()
    scheme, shown = "https" if web.tls is not None else "http", bound_host
    if ":" in shown:
        shown = f"[{shown}]"  # an IPv6 address, as a URL writes it
    log.info("listening", address=f"{scheme}://{shown}:{bound_port}", version=__version__)
    _wait_in_main_thread(stop.is_set)
    exporter.drain()
    drained_at = time.monotonic() + delay[0]
    _wait_in_main_thread(lambda: time.monotonic() >= drained_at)
    exporter.stop(timeout=STOP_GRACE_SECONDS)
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; return the process exit code (130 for Ctrl-C before serving)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before serve() handles SIGINT: start-up, the demo's history
        print("msgsms-exporter: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["details"]:
        from exporter.details_cli import run_details_command

        return run_details_command(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_config_with_demo(parser, args)
    configure_logging(args.log_level, args.log_format)
    if args.demo:
        from exporter.demo import demo_session  # the simulator is only loaded for the demo

        # The demo's config is built in; TLS, basic auth and the shard are the operator's
        # (two demos with --shard 0/2 and 1/2 split the same simulated templates).
        try:
            web = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
            shard = _shard(args.shard, argv)
            host, _ = parse_listen_address(args.listen)
        except ConfigError as error:
            return _report_config_error(error)
        except ValueError as error:  # the listen address
            print(f"msgsms-exporter: --web.listen-address: {error}", file=sys.stderr)
            return 1
        with demo_session() as demo:
            # The demo's records are made up: /details shows without basic auth anywhere,
            # and no warning names --web.details-unauthenticated, which nobody passed.
            exporter = Exporter(demo, shard=shard)
            exporter.demo = True
            if not args.details_open and web.auth() is None:
                args.details_open = exporter.details_open_by_demo = True
            if web.auth() is None and not is_loopback(host) and not args.once:
                log.warning(
                    "the demo takes status reports without a signature and shows its made-up"
                    " records to anyone who can reach it",
                    host=host or "*",
                    fix="--web.listen-address 127.0.0.1:PORT keeps it to this machine",
                )
            return _run(exporter, args, web)
    try:
        config: Config = load_config(args.config_file)
        web = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
        shard = _shard(args.shard, argv)
        host, _ = parse_listen_address(args.listen)
        # What start would refuse, --check-config refuses too (unsigned pushes, or the
        # details API without credentials, off loopback).
        basic_auth = web.auth() is not None
        problems = [
            problem
            for problem in (
                # Their warnings: here for --check-config, else once by the start.
                push_exposure(config, host, basic_auth, warn=args.check_config),
                details_exposure(
                    config, host, basic_auth, args.details_open, warn=args.check_config
                ),
            )
            if problem
        ]
        if problems:
            raise ConfigError(locate_in_file(args.config_file, problems))
    except ConfigError as error:
        code = _report_config_error(error)
        if not getattr(args, "config_file_given", False) and not os.path.exists(DEFAULT_CONFIG):
            print(
                "  (no --config.file given, and none at the default path: pass one, or try --demo)",
                file=sys.stderr,
            )
        return code
    except ValueError as error:  # the listen address
        print(f"msgsms-exporter: --web.listen-address: {error}", file=sys.stderr)
        return 1
    if args.check_config:
        print(f"{args.config_file}: configuration is valid")
        return 0
    try:
        exporter = Exporter(config, shard=shard)
    except (OSError, sqlite3.Error) as error:  # --check-config may run on another host
        where = config.receiver.store_path if config.receiver else ""
        print(f"msgsms-exporter: receiver.store_path: {where}: {error}", file=sys.stderr)
        print(f"  ({_store_path_hint(where)})", file=sys.stderr)
        return 1
    except StoreUnavailable as error:  # a mobile key the SQLite store does not know
        print(f"msgsms-exporter: receiver.mobile_key: {error}", file=sys.stderr)
        return 1
    exporter.config_file = args.config_file
    exporter.web_config_file = args.web_config_file or None
    return _run(exporter, args, web)


def _store_path_hint(path: str) -> str:
    """What to check when the SQLite store at ``path`` could not be opened."""
    if path.startswith("~"):
        return "~ is not expanded: give the path from /"
    if os.path.isdir(path):
        return "it is a directory: name a file in it, such as push.db"
    if os.path.isfile(path):
        return "the file must be an SQLite store written by this exporter, or absent"
    return "its directory must exist and be writable by the exporter"


def _run(exporter: Exporter, args: argparse.Namespace, web: WebConfig) -> int:
    """Poll once and print (``--once``), or serve; a busy address is one line, exit 1."""
    if args.once:
        ok = exporter.poll_once()
        sys.stdout.buffer.write(exporter.exposition_text())
        sys.stdout.flush()
        exporter.stop()
        return 0 if ok else 1
    try:
        return serve(
            exporter,
            args.listen,
            web,
            args.health_open,
            args.shutdown_delay,
            details_open=args.details_open,
        )
    except ConfigError as error:
        exporter.stop()
        return _report_config_error(error)
    except (OSError, ValueError) as error:
        exporter.stop()
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        print(f"msgsms-exporter: cannot listen on {args.listen}: {reason}", file=sys.stderr)
        return 1
