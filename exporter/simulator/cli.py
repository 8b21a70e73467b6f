"""``msgsms-simulator``: a Huawei Message & SMS platform on loopback."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import urllib.parse
from types import FrameType

import structlog

from exporter import __version__
from exporter.errors import ConfigError
from exporter.signing import Credentials
from exporter.simulator.api import QueryLimits
from exporter.simulator.gate import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    DEFAULT_TOKEN,
)
from exporter.simulator.push import PushConfig
from exporter.simulator.runner import SimulatorConfig, start_simulator
from exporter.simulator.scenario import load_scenario
from exporter.timestamps import parse_duration, parse_rfc3339


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _timestamp(text: str) -> float:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _rate(text: str) -> float:
    """A finite number >= 0 (a multiplier or a rate)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if "/" in host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not a URL: {text!r}")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _push_url(text: str) -> str:
    """An http(s) base URL: without its scheme every push would fail, one warning each."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// base URL such as http://127.0.0.1:9170, got {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="msgsms-simulator",
        description="Simulate Huawei Cloud Message & SMS sending details on loopback.",
        epilog=(
            f"credentials accepted: AK/SK {DEFAULT_ACCESS_KEY} / {DEFAULT_SECRET_KEY},"
            f" or token {DEFAULT_TOKEN}\n(any project id); set others with"
            " MSGSMS_SIMULATOR_AK, MSGSMS_SIMULATOR_SK, MSGSMS_SIMULATOR_TOKEN\n"
            "sending API: POST /sms/batchSendSms/v1 with X-WSSE, app key and secret = AK/SK"
            " (docs/simulator.md)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        type=_address,
        default=("127.0.0.1", 9171),
        help="HOST:PORT; port 0 picks a free one",
    )
    p.add_argument("--seed", type=int, default=1, help="same seed, same traffic")
    p.add_argument(
        "--clock",
        choices=("real", "manual"),
        default="real",
        help="manual: simulated time moves only on POST /-/clock",
    )
    p.add_argument(
        "--start-time",
        type=_timestamp,
        default=None,
        help="RFC 3339 start of the manual clock (default: now)",
    )
    p.add_argument(
        "--history", type=_duration, default=0.0, help="traffic generated before the start, e.g. 2h"
    )
    p.add_argument(
        "--scenario.file",
        dest="scenario",
        default=None,
        help="scenario YAML path, or a packaged one: default (6 templates), load (1M msgs/h)",
    )
    p.add_argument("--scale", type=_rate, default=1.0, help="multiply every send rate")
    p.add_argument(
        "--query.max-span",
        dest="max_span",
        type=_duration,
        default=86400.0,
        help="longest span one query may cover (default: 24h)",
    )
    p.add_argument(
        "--query.lookback",
        dest="lookback",
        type=_duration,
        default=60 * 86400.0,
        help="how far back a query may start, and what is kept (default: 60d)",
    )
    p.add_argument(
        "--query.max-limit",
        dest="max_limit",
        type=_count,
        default=100,
        help="largest page a query may ask for (default: 100)",
    )
    p.add_argument(
        "--rate-limit",
        type=_rate,
        default=200.0,
        help="requests per second per credential (0: unlimited)",
    )
    p.add_argument(
        "--push.url",
        dest="push_url",
        type=_push_url,
        default=None,
        help="push registrations and status reports to this base URL (an exporter's receiver)",
    )
    # The other --push.* flags shape the pushes to --push.url: default None, so that one
    # given without it is refused rather than ignored (_refuse_ignored).
    p.add_argument(
        "--push.mode",
        dest="push_mode",
        choices=("single", "batch"),
        default=None,
        help="form POSTs one report each, or JSON batches of up to 50 (default: batch)",
    )
    p.add_argument(
        "--push.sign",
        dest="push_sign",
        action="store_true",
        help="sign every push (statusCallback reports, and what goes to --push.url) with"
        " MSGSMS_PUSH_ACCESS_KEY / MSGSMS_PUSH_SECRET_KEY (SDK-HMAC-SHA256, wall-clock X-Sdk-Date)",
    )
    p.add_argument(
        "--push.extend-key",
        dest="push_extend_key",
        default=None,
        help="put KEY=<template id> in each report's extend",
    )
    p.add_argument(
        "--push.no-register",
        dest="push_register",
        action="store_false",
        default=None,
        help="do not register sends (attribution from extend only)",
    )
    p.add_argument(
        "--push.interval",
        dest="push_interval",
        type=_duration,
        default=None,
        help="how often the pusher sends what became due (default: 1s)",
    )
    p.add_argument(
        "--push.connections",
        dest="push_connections",
        type=_at_least_one,
        default=None,
        help="POSTs in flight at once (keep-alive connections), for high push rates",
    )
    p.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=("debug", "info", "warning", "error"),
    )
    p.add_argument(
        "--log.format",
        dest="log_format",
        default="auto",
        choices=("auto", "json", "console"),
        help="auto: console on a TTY, else JSON",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


PUSH_URL_FLAGS = {
    "push_mode": "--push.mode",
    "push_extend_key": "--push.extend-key",
    "push_register": "--push.no-register",
    "push_interval": "--push.interval",
    "push_connections": "--push.connections",
}


def _refuse_ignored(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2, argparse's way, for a flag that would change nothing beside the others."""
    if args.start_time is not None and args.clock != "manual":
        parser.error("argument --start-time: needs --clock manual (the real clock starts at now)")
    if not args.push_url:
        given = [flag for dest, flag in PUSH_URL_FLAGS.items() if getattr(args, dest) is not None]
        if given:
            parser.error(f"argument {given[0]}: needs --push.url (where to push)")


def configure_logging(level: str, fmt: str = "auto") -> None:
    """structlog to stderr: JSON when not on a TTY, console renderer on one (or as told)."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT; 0 on a clean stop, 1 on a bad scenario or address,
    130 for Ctrl-C before serving (while the history is generated)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("msgsms-simulator: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _refuse_ignored(parser, args)
    configure_logging(args.log_level, args.log_format)
    log = structlog.get_logger("msgsms-simulator")
    try:
        scenario = load_scenario(args.scenario).scaled(args.scale)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"msgsms-simulator: {problem}", file=sys.stderr)
        return 1
    signing_keys = None
    if args.push_sign:
        ak = os.environ.get("MSGSMS_PUSH_ACCESS_KEY")
        sk = os.environ.get("MSGSMS_PUSH_SECRET_KEY")
        if not ak or not sk:
            print(
                "msgsms-simulator: --push.sign needs MSGSMS_PUSH_ACCESS_KEY and"
                " MSGSMS_PUSH_SECRET_KEY",
                file=sys.stderr,
            )
            return 1
        signing_keys = Credentials(ak, sk)
    push: PushConfig | None = None
    if args.push_url:
        push = PushConfig(
            url=args.push_url.rstrip("/"),
            mode=args.push_mode or "batch",
            credentials=signing_keys,
            register=args.push_register is None,
            extend_key=args.push_extend_key,
            interval=1.0 if args.push_interval is None else args.push_interval,
            connections=args.push_connections or 1,
        )
    config = SimulatorConfig(
        scenario=scenario,
        seed=args.seed,
        manual_clock=args.clock == "manual",
        start_time=args.start_time,
        history_seconds=args.history,
        host=args.listen[0],
        port=args.listen[1],
        limits=QueryLimits(args.max_span, args.lookback, args.max_limit),
        rate_limit=args.rate_limit,
        access_key=os.environ.get("MSGSMS_SIMULATOR_AK", DEFAULT_ACCESS_KEY),
        secret_key=os.environ.get("MSGSMS_SIMULATOR_SK", DEFAULT_SECRET_KEY),
        token=os.environ.get("MSGSMS_SIMULATOR_TOKEN", DEFAULT_TOKEN),
        push=push,
        push_signing=signing_keys,
    )
    try:
        running = start_simulator(config)
    except OSError as exc:
        host, port = args.listen
        reason = exc.strerror or exc
        print(f"msgsms-simulator: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"msgsms-simulator listening on {running.url}", flush=True)
    log.info(
        "simulator started",
        url=running.url,
        templates=len(scenario.templates),
        clock=args.clock,
        messages=running.store.generated,
    )
    stop.wait()
    running.stop()
    log.info("simulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
