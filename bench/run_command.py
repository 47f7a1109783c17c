"""``python -m bench run`` (the speed sweep without pytest), ``matrices`` and ``columns``.

Nothing here imports torch at module level: ``--help``, ``matrices`` and ``columns`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.core.commandline import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_IO, EXIT_OK, KEYWORD_HELP, MIN_TIME_HELP, PROCESSES_HELP, RESULTS_HELP, Command,
    add_launcher_args, add_matrix_args, check_case_timeout, rerun_command, without_option,
)
from bench.plan.defaults import PLAN_FOR_HELP
from bench.runs.contract import DEFAULT_CARD
from bench.scale.options import add_scale_args, orchestrated

def _run_args(parser: argparse.ArgumentParser) -> None:
    add_matrix_args(parser)
    parser.add_argument("--results", default="results", help=RESULTS_HELP)
    parser.add_argument("--min-time", type=float, default=None, help=MIN_TIME_HELP + " (seconds)")
    parser.add_argument("--list", action="store_true", help="list the cases (and why any are skipped) without running them")
    parser.add_argument("-k", dest="keyword", default=None, help=KEYWORD_HELP)
    add_launcher_args(parser.add_argument)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue an interrupted run in RUN_DIR with the same options: cases already in its "
                             "results.csv are skipped, the rest appended (refused, the folder untouched, for other "
                             "cases or timing settings than the run's, or while another process writes to it); a "
                             "sweep's folder (--gpus, --executor) reruns only the missing cases of its incomplete shards")
    parser.add_argument("--plan-for", metavar="CARD", default=DEFAULT_CARD, help=PLAN_FOR_HELP)
    parser.add_argument("--processes", type=int, default=None, metavar="N", help=PROCESSES_HELP)
    add_scale_args(parser)  # --shard K/N, --gpus, --executor and its options (bench/scale/options.py)


def _run(args: argparse.Namespace) -> int:
    from bench.core.selection import case_listing, check_args, listed_cases, selection_from_args

    argv = getattr(args, "argv", None) or sys.argv[1:]  # the command line as given (bench.cli.main records it)
    if args.case_timeout is not None:
        check_case_timeout(args.case_timeout)
    if orchestrated(args):  # --gpus, --executor or --resume SWEEP: children or jobs, one shard each, then a merge
        from bench.scale.command import run_sweep

        return run_sweep(args)
    if args.list:
        print(case_listing(listed_cases(args)))
        return EXIT_OK
    check_args(args)  # a bad matrix or axis value is refused before torch loads (resolve_card's import loads it)
    from bench.plan.partial import resolve_card

    resolve_card(args.plan_for)  # a bad card is refused before the sweep, not after it
    from bench.core.loop import SweepInterrupted, sweep, watch_deadline
    from bench.core.session import end_run, start_run
    from bench.report.build import write_report

    watch_deadline()  # SIGUSR2 before a batch job's time limit: finish the case in flight, then end the run cleanly
    selection = selection_from_args(args)
    run = start_run(selection, Path(args.results), "cli", ["python", "-m", "bench"] + argv, args.launcher,
                    args.case_timeout, Path(args.resume) if args.resume else None)
    cases = run.pending(selection.cases)
    if args.resume:
        print(f"ae-bench: resuming {run.run_dir}: {len(selection.cases) - len(cases)} of {len(selection.cases)} cases "
              "already measured", file=sys.stderr)
    for note in run.notes:
        print(f"ae-bench: {note}", file=sys.stderr)
    if selection.shard:
        print(f"ae-bench: shard {selection.shard}", file=sys.stderr)
    print(f"ae-bench: {len(cases)} cases of matrix {selection.matrix.name!r} on {selection.facts.name} "
          f"({selection.facts.type}), {run.launcher.name}; rows -> {run.writer.csv_path}", file=sys.stderr)
    resume = rerun_command(without_option(argv, "--resume") + ["--resume", str(run.run_dir)])
    try:
        sweep(run, cases)
    except SweepInterrupted as stop:
        if stop.deadline:  # the time limit is near: the rows are whole; end calibration, plan and report now
            return _end_before_the_limit(run, selection, args, stop, resume)
        kept = len(run.writer.done_keys())  # the file is the truth: a signal can land between a write and the count
        dropped = ""
        if stop.in_flight is not None:
            dropped = f"; the case in flight, {stop.in_flight.id}, was dropped after {stop.in_flight_s:.0f} s"
            if run.launcher.name == "in-process":
                dropped += " (if it hangs, add --case-timeout SECONDS to the resume command: it is then timed out, not replayed)"
        print(f"ae-bench: interrupted; {kept} rows kept in {run.writer.csv_path} ({stop.total} cases asked for){dropped}\n"
              f"resume with: {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # a full disk, a folder gone read-only: what is on disk is whole rows only
        run.close()
        kept = _rows_on_disk(run)
        print(f"ae-bench: error: {err.strerror or err}{': ' + str(err.filename) if err.filename else ''}; the sweep "
              f"stopped with {kept} whole rows kept in {run.writer.csv_path} ({len(selection.cases)} cases asked for)\n"
              f"when the folder is writable again, resume with: {resume}", file=sys.stderr)
        return EXIT_IO
    from bench.plan.partial import plan_for_run  # before the report, which answers from it

    try:
        for line in plan_for_run(run, selection, args.plan_for):
            print(f"ae-bench: {line}", file=sys.stderr)
        print("\n".join(end_run(run, write_report)))
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP in the end phase (peaks, plan, report): the rows are whole
        run.close()
        print(f"ae-bench: interrupted while ending the run; {_rows_on_disk(run)} rows kept in {run.writer.csv_path}; "
              f"the report is not written\nresume with (it writes the end files): {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if run.report_error is not None:  # the rows are kept, the report is not: never a success
        print(f"ae-bench: error: the report could not be written ({run.report_error}); the rows are in "
              f"{run.writer.csv_path}: {rerun_command(['report', str(run.run_dir)])}", file=sys.stderr)
        return EXIT_IO
    if cases and not run.rows:  # cases asked for, none measured (a case or factory that ended the sweep early)
        print(f"ae-bench: error: {len(cases)} cases asked for, no row measured; resume with: {resume}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if any(r["status"] in ("error", "timeout") for r in run.rows) else EXIT_OK


def _end_before_the_limit(run, selection, args, stop, resume: str) -> int:
    """After a SIGUSR2: the run's end files (settled peaks, plan, report) for the rows measured, and how
    to resume the rest; exits 130 (interrupted) so a sweep knows cases are left."""
    from bench.core.session import end_run
    from bench.plan.partial import plan_for_run
    from bench.report.build import write_report

    print(f"ae-bench: {stop.deadline}: stopped before the time limit with {len(run.writer.done_keys())} rows in "
          f"{run.writer.csv_path} ({stop.total - stop.done} of this sweep's cases not started); writing the end "
          "calibration and the report", file=sys.stderr)
    for line in plan_for_run(run, selection, args.plan_for):
        print(f"ae-bench: {line}", file=sys.stderr)
    print("\n".join(end_run(run, write_report)))
    print(f"ae-bench: resume with: {resume}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _rows_on_disk(run) -> str:
    try:
        return str(len(run.writer.done_keys()))
    except (OSError, ValueError):
        return "the"


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
