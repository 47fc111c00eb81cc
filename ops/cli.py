"""`ledgerstream`: the one command operators, analysts and CI use.

Every subcommand reads the same settings (environment variables, see
`ledgerstream stack env`) and reports errors as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ops.cli_auth import add_auth_commands
from ops.cli_chaos import add_chaos_command
from ops.cli_connect import add_connect_commands
from ops.cli_data import add_data_commands
from ops.cli_dev import add_dev_commands
from ops.cli_ledger import add_ledger_commands
from ops.cli_operate import add_operate_commands
from ops.cli_records import add_record_commands
from ops.cli_run import add_deploy_command, add_run_command
from ops.cli_setup import add_setup_commands
from ops.cli_workers import add_worker_commands
from ops.console import Parser, err
from topics.errors import LedgerstreamError


def build_parser() -> Parser:
    parser = Parser(
        prog="ledgerstream",
        description="ledgerstream: event backbone for open banking, cards and crypto. "
        "Settings come from the environment (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, REDIS_URL, "
        "SCHEMA_REGISTRY_URL); the defaults name the local stack.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    def command(
        group: argparse._SubParsersAction,
        name: str,
        fn: Callable[[argparse.Namespace], int],
        help: str,
    ) -> Parser:
        p: Parser = group.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    add_setup_commands(sub, command)
    add_worker_commands(sub, command)
    add_record_commands(sub, command)
    add_connect_commands(sub, command)
    add_run_command(sub, command)
    add_deploy_command(sub, command)
    add_data_commands(sub, command)
    add_chaos_command(sub, command)
    add_operate_commands(sub, command)
    add_ledger_commands(sub, command)
    add_auth_commands(sub, command)

    add_dev_commands(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ledgerstream` command."""
    from topics.ports import port_offset

    try:
        port_offset()
    except LedgerstreamError as e:
        err.print(f"ledgerstream: error: {e}", markup=False)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except LedgerstreamError as e:
        err.print(f"ledgerstream: error: {e}", markup=False)
        return 1
    except OSError as e:
        err.print(f"ledgerstream: error: {e}", markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("ledgerstream: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
