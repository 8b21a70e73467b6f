"""``msgsms-exporter details``: the sending-details query from the terminal."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

import httpx

from exporter.cli import ConfigFileAction, refuse_config_with_demo
from exporter.client import DetailsClient, build_http_client
from exporter.config import AccountConfig, AccountSource, Config
from exporter.configfile import load_config
from exporter.details import RESULTS, SERVING_HINT, DetailsQueries
from exporter.details_page import details_text
from exporter.errors import ConfigError
from exporter.logs import configure_logging

DEFAULT_CONFIG = "/etc/msgsms-exporter/config.yaml"


def build_parser() -> argparse.ArgumentParser:
    """The ``details`` subcommand's flags; each is a filter of the console's query."""
    parser = argparse.ArgumentParser(
        prog="msgsms-exporter details",
        description="Print one page (10 records) of sending details, like the console.",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default=DEFAULT_CONFIG,
        action=ConfigFileAction,
        help=f"the exporter's YAML config (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="query an embedded simulator with two hours of history (no config needed)",
    )
    parser.add_argument("--account", default="", help="account name (default: the first)")
    parser.add_argument("--template", default="", help="template id or exact name")
    parser.add_argument("--mobile", default="", help="number with country code, no '+'")
    parser.add_argument("--result", default="all", choices=RESULTS)
    parser.add_argument("--status-code", default="", help="only records with this status code")
    parser.add_argument("--last", default="", help="quick range, e.g. 1h or 24h")
    parser.add_argument("--start", default="", help="RFC 3339 start of the sending time")
    parser.add_argument("--end", default="", help="RFC 3339 end of the sending time")
    parser.add_argument("--page", default="1", help="page number, from 1")
    return parser


def run_details_command(
    argv: Sequence[str],
    *,
    clock: Callable[[], float] = time.time,
    http_factory: Callable[[AccountConfig, float], httpx.Client] = build_http_client,
) -> int:
    """Query and print; 0 on success, 2 on bad input, 1 on config or upstream errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_config_with_demo(parser, args)
    configure_logging("warning")  # stdout is the table; only trouble goes to stderr
    if args.demo:
        from exporter.demo import demo_simulator, simulated_account

        with demo_simulator() as url:
            return query(Config(accounts=(simulated_account(url),)), args, clock, http_factory)
    try:
        config: Config = load_config(args.config_file)
    except ConfigError as error:
        print("msgsms-exporter: invalid configuration:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        if not getattr(args, "config_file_given", False) and not os.path.exists(DEFAULT_CONFIG):
            print(
                "  (no --config.file given, and none at the default path: pass one, or try --demo)",
                file=sys.stderr,
            )
        return 1
    return query(config, args, clock, http_factory)


def push_account_refusal(account: str) -> str:
    """Why a push account's records are not read from the terminal, and where they are."""
    return (
        f"account {account!r} reads the receiver's push store, which only the running"
        f" exporter serves: open /details?account={account} on it, or its"
        " GET /api/v1/send-details (receiver.details_api: true)"
    )


def query(
    config: Config,
    args: argparse.Namespace,
    clock: Callable[[], float],
    http_factory: Callable[[AccountConfig, float], httpx.Client],
) -> int:
    """Run the query the flags describe against `config`'s accounts and print the page."""
    form = {
        "account": args.account,
        "template": args.template,
        "mobile": args.mobile,
        "result": args.result,
        "status_code": args.status_code,
        "last": args.last,
        "start": args.start,
        "end": args.end,
        "page": args.page,
    }
    if not (args.last or args.start or args.end):
        form["last"] = "1h"
    # A push account's records are in the receiver's store, which the running exporter
    # owns (its writer, pruning, migrations): this command does not open it alongside.
    pushed = [a.name for a in config.accounts if a.source == AccountSource.PUSH]
    polled = tuple(a for a in config.accounts if a.source != AccountSource.PUSH)
    if args.account in pushed or not polled:
        refusal = push_account_refusal(args.account or pushed[0])
        print(f"msgsms-exporter details: {refusal}", file=sys.stderr)
        return 1
    clients = [http_factory(a, config.request_timeout) for a in polled]
    try:
        sources = {a.name: DetailsClient(a, http) for a, http in zip(polled, clients, strict=True)}
        outcome = DetailsQueries(sources, max_span=config.max_query_span, clock=clock).run(form)
    finally:
        for http in clients:
            http.close()
    if outcome.status != 200:
        # No exporter runs here to keep serving: the terminal's reader just tries again.
        message = outcome.message.replace(SERVING_HINT, "Try again in a moment.")
        print(f"msgsms-exporter details: {message}", file=sys.stderr)
        return 2 if outcome.status == 400 else 1
    sys.stdout.write(details_text(outcome))
    return 0
