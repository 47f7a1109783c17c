"""``python -m bench run`` (the speed sweep without pytest), ``matrices`` and ``columns``.

Nothing here imports torch at module level: ``--help``, ``matrices`` and ``columns`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.core.commandline import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, KEYWORD_HELP, MIN_TIME_HELP, RESULTS_HELP, Command, add_matrix_args,
    add_launcher_args, rerun_command, without_option,
)

def _run_args(parser: argparse.ArgumentParser) -> None:
    add_matrix_args(parser)
    parser.add_argument("--results", default="results", help=RESULTS_HELP)
    parser.add_argument("--min-time", type=float, default=None, help=MIN_TIME_HELP + " (seconds)")
    parser.add_argument("--list", action="store_true", help="list the cases (and why any are skipped) without running them")
    parser.add_argument("-k", dest="keyword", default=None, help=KEYWORD_HELP)
    add_launcher_args(parser.add_argument)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue an interrupted run in RUN_DIR: cases already in its results.csv are skipped, "
                             "the rest appended")


def _run(args: argparse.Namespace) -> int:
    from bench.core.loop import SweepInterrupted, sweep
    from bench.core.selection import case_listing, selection_from_args
    from bench.core.session import end_run, start_run

    selection = selection_from_args(args)
    if args.list:
        print(case_listing(selection.cases))
        return EXIT_OK
    run = start_run(selection, Path(args.results), "cli", ["python", "-m", "bench"] + sys.argv[1:], args.launcher,
                    args.case_timeout, Path(args.resume) if args.resume else None)
    cases = run.pending(selection.cases)
    if args.resume:
        print(f"ae-bench: resuming {run.run_dir}: {len(selection.cases) - len(cases)} of {len(selection.cases)} cases "
              "already measured", file=sys.stderr)
    print(f"ae-bench: {len(cases)} cases of matrix {selection.matrix.name!r} on {selection.facts.name} "
          f"({selection.facts.type}), {run.launcher.name}; rows -> {run.writer.csv_path}", file=sys.stderr)
    try:
        sweep(run, cases)
    except SweepInterrupted as stop:
        again = without_option(sys.argv[1:], "--resume")
        kept = len(run.writer.done_keys())  # the file is the truth: a signal can land between a write and the count
        print(f"ae-bench: interrupted; {kept} rows kept in {run.writer.csv_path} ({stop.total} cases asked for)\n"
              f"resume with: {rerun_command(again + ['--resume', str(run.run_dir)])}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("\n".join(end_run(run)))
    return EXIT_FAILED if any(r["status"] in ("error", "timeout") for r in run.rows) else EXIT_OK


def _matrices_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show this matrix's groups")


def _matrices(args: argparse.Namespace) -> int:
    from bench.core.cases import available_matrices, load_matrix

    if args.name:
        matrix = load_matrix(args.name)
        print(f"{matrix.name}: {matrix.description}")
        for i, group in enumerate(matrix.groups, 1):
            print(f"  group {i}: " + "; ".join(f"{k}={','.join(map(str, v))}" for k, v in group.items()))
        print(f"  timing: {matrix.timing}")
        return EXIT_OK
    for name in available_matrices():
        print(f"{name:<10} {load_matrix(name).description}")
    return EXIT_OK


def _columns(args: argparse.Namespace) -> int:
    from bench.runs.schema import markdown_table

    print(markdown_table())
    return EXIT_OK


COMMANDS = [
    Command("run", "measure a matrix of cases (no pytest needed); rows are written as each case finishes", _run_args, _run),
    Command("matrices", "list the named matrices, or show one", _matrices_args, _matrices),
    Command("columns", "print the results.csv columns with units, as a markdown table", lambda parser: None, _columns),
]
