"""``python -m bench`` (also the ``ae-bench`` console script): a thin face over the command modules.

Each package that adds commands has a ``command.py`` with a ``COMMANDS`` list; this module imports
them (they never import it back) and dispatches. Those modules import torch only inside the
commands that need it, so ``--help`` answers at once.
Exit status: 0 done, 1 a case failed (run) or a regression (compare), 2 bad input (one line on
stderr naming the bad value), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

from bench.core.commandline import EXIT_INTERRUPTED, EXIT_USAGE, Command

COMMAND_MODULES = (
    "bench.core.run_command", "bench.report.command", "bench.compare.command", "bench.plan.command",
    "bench.profile.command", "bench.quality.command",
)


def commands() -> dict[str, Command]:
    found: dict[str, Command] = {}
    for module in COMMAND_MODULES:
        for cmd in importlib.import_module(module).COMMANDS:
            found[cmd.name] = cmd
    return found


def build_parser(table: Optional[dict[str, Command]] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark PyTorch image autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in (table or commands()).items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    table = commands()
    args = build_parser(table).parse_args(argv)
    try:
        return table[args.command].run(args)
    except ValueError as err:
        print(f"ae-bench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ae-bench: interrupted; rows measured so far are in the results folder", file=sys.stderr)
        return EXIT_INTERRUPTED
