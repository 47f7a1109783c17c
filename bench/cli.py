"""``python -m bench`` (also the ``ae-bench`` console script).

Commands: ``run`` a matrix without pytest; ``matrices`` and ``columns`` to look things up.
Exit status: 0 done, 1 some case errored, 2 bad input (one line on stderr naming the bad value).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

from .cases import available_matrices, load_matrix
from .launcher import DEFAULT_CASE_TIMEOUT_S, LAUNCHERS, choose_launcher
from .options import AXIS_HELP, DEVICE_HELP, MATRIX_HELP, MIN_TIME_HELP, RESULTS_HELP, case_listing, plan_from_args

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# name -> (add its arguments, run it); other modules register theirs with `command`
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help_text: str):
    def register(pair):
        add_args, run = pair
        COMMANDS[name] = (help_text, add_args, run)
        return pair

    return register


def add_matrix_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matrix", default="auto", help=MATRIX_HELP)
    for axis, text in AXIS_HELP.items():
        parser.add_argument(f"--{axis}", default=None, help=f"narrow the matrix: {text}")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def _run_args(parser: argparse.ArgumentParser) -> None:
    add_matrix_args(parser)
    parser.add_argument("--results", default="results", help=RESULTS_HELP)
    parser.add_argument("--min-time", type=float, default=None, help=MIN_TIME_HELP + " (seconds)")
    parser.add_argument("--list", action="store_true", help="list the cases (and why any are skipped) without running them")
    parser.add_argument("-k", dest="keyword", default=None, help="only cases whose id contains this text")
    parser.add_argument("--launcher", default="auto", choices=LAUNCHERS,
                        help="where each case runs: in-process (fast), subprocess (a fresh child per case: a crash, "
                             "kill or hang costs one row), auto (subprocess on CUDA, in-process on CPU) [default: auto]")
    parser.add_argument("--case-timeout", type=float, default=None,
                        help=f"seconds before a case's child process is killed and recorded as timeout "
                             f"(subprocess launcher) [default: {DEFAULT_CASE_TIMEOUT_S:g}]")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue an interrupted run in RUN_DIR: cases already in its results.csv are skipped, "
                             "the rest appended")


def _run(args: argparse.Namespace) -> int:
    from .calibration import calibrate
    from .results import RunWriter, new_run_id, run_meta
    from .sweep import SweepInterrupted, summary_table, sweep

    plan = plan_from_args(args)
    cases = plan.cases
    if args.list:
        print(case_listing(cases))
        return EXIT_OK
    launcher = choose_launcher(args.launcher, plan.device, args.case_timeout)
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "results.csv").is_file():
            raise ValueError(f"--resume {run_dir}: not a results folder (no results.csv in it)")
        writer = RunWriter(run_dir)
        done = writer.done_keys()
        total = len(cases)
        cases = [c for c in cases if c.key not in done]
        print(f"ae-bench: resuming {run_dir}: {total - len(cases)} of {total} cases already measured", file=sys.stderr)
        run_id = run_dir.name
    else:
        run_id = new_run_id(plan.facts.slug)
        run_dir = Path(args.results) / run_id
        writer = RunWriter(run_dir, run_meta(plan.facts, plan.matrix.name, ["python", "-m", "bench"] + sys.argv[1:],
                                             {"entry": "cli", "settings": plan.settings.__dict__}, calibrate(plan.device)))
    print(f"ae-bench: {len(cases)} cases of matrix {plan.matrix.name!r} on {plan.facts.name} ({plan.facts.type}), "
          f"{launcher.name}; rows -> {writer.csv_path}", file=sys.stderr)
    try:
        rows = sweep(cases, plan.device, plan.facts, plan.settings, writer, run_id, launcher=launcher)
    except SweepInterrupted as stop:
        again = _without_option(sys.argv[1:], "--resume")
        kept = len(writer.done_keys())  # the file is the truth: a signal can land between a write and the count
        print(f"ae-bench: interrupted; {kept} rows kept in {writer.csv_path} ({stop.total} cases asked for)\n"
              f"resume with: python -m bench {' '.join(again)} --resume {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary_table(rows))
    print(f"results: {writer.csv_path}")
    try:
        from .report import write_report

        print(f"report: {write_report(run_dir)}")
    except Exception as err:  # noqa: BLE001 - a report problem must not hide the rows measured above
        print(f"report not written: {type(err).__name__}: {err}; retry with `python -m bench report {run_dir}`", file=sys.stderr)
    return EXIT_FAILED if any(r["status"] in ("error", "timeout") for r in rows) else EXIT_OK


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` less ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


command("run", "measure a matrix of cases (no pytest needed); rows are written as each case finishes")((_run_args, _run))


def _matrices_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show this matrix's groups")


def _matrices(args: argparse.Namespace) -> int:
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


command("matrices", "list the named matrices, or show one")((_matrices_args, _matrices))


def _columns(args: argparse.Namespace) -> int:
    from .schema import markdown_table

    print(markdown_table())
    return EXIT_OK


command("columns", "print the results.csv columns with units, as a markdown table")((lambda p: None, _columns))


def _load_command_modules() -> None:
    """Modules that add commands (report, plan, compare, ...) register themselves on import."""
    import importlib

    for module in ("report", "compare", "plan", "profile", "quality"):
        try:
            importlib.import_module(f"bench.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"bench.{module}":
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_command_modules()
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark PyTorch image autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except ValueError as err:
        print(f"ae-bench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ae-bench: interrupted; rows measured so far are in the results folder", file=sys.stderr)
        return EXIT_INTERRUPTED
