"""``python -m bench history SOURCE... --out DIR`` (the pages) and ``python -m bench history backfill A..B
--matrix M --out DIR`` (a run per commit, then the pages of DIR)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.core.commandline import AXIS_HELP, EXIT_OK, MIN_TIME_HELP, Command, add_matrix_args


def _args(parser: argparse.ArgumentParser) -> None:
    from bench.history.backfill import DEFAULT_COMMIT_TIMEOUT_S
    from bench.history.steps import CONFIDENCE, MIN_STEP

    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="results folders, folders of runs, .benchmarks/ (pytest-benchmark storage) or a baseline "
                             "store; or `backfill A..B` to measure each commit of the range first (git's A..B: A "
                             "excluded, along the first parent), one run per commit, into --out")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for index.html and one page per machine key (backfill: also runs/<commit>/)")
    parser.add_argument("--repo", type=Path, default=None,
                        help="git repository whose commit order sorts the runs [default: the one around the current "
                             "folder; without one, runs go in recorded time order]")
    parser.add_argument("--min-step", type=float, default=MIN_STEP,
                        help=f"smallest step called, as a fraction (0.05 = 5%%) [default: {MIN_STEP:g}]")
    parser.add_argument("--confidence", type=float, default=CONFIDENCE, help=f"interval level [default: {CONFIDENCE:g}]")
    parser.add_argument("--normalize", action="store_true",
                        help="scale each run's times by the median calibration GEMM time over its own (a busy or "
                             "throttled machine during one run counts against that run, not against its commit)")
    add_matrix_args(parser)
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="backfill: measure each case in N fresh processes per commit (the interval of a commit is "
                             "then over processes)")
    parser.add_argument("--min-time", type=float, default=None, help="backfill: " + MIN_TIME_HELP + " (seconds)")
    parser.add_argument("--commit-timeout", type=float, default=DEFAULT_COMMIT_TIMEOUT_S,
                        help=f"backfill: seconds before a commit's run is killed and recorded as skipped "
                             f"[default: {DEFAULT_COMMIT_TIMEOUT_S:g}]")


def _repo(args: argparse.Namespace, required: bool) -> Path | None:
    import subprocess

    start = args.repo or Path.cwd()
    done = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0:
        if required or args.repo is not None:
            raise ValueError(f"history: {start} is not in a git repository")
        return None
    return Path(done.stdout.strip())


def _bench_args(args: argparse.Namespace) -> list[str]:
    out = ["--matrix", str(Path(args.matrix).resolve()) if args.matrix.endswith(".toml") else args.matrix,
           "--device", args.device]
    for axis in AXIS_HELP:
        value = getattr(args, axis.replace("-", "_"))
        if value is not None:
            out += [f"--{axis}", value]
    if args.min_time is not None:
        out += ["--min-time", str(args.min_time)]
    if args.processes is not None:
        out += ["--processes", str(args.processes)]
    return out


def _history(args: argparse.Namespace) -> int:
    from bench.history.build import build
    from bench.history.order import git_order
    from bench.history.page import MAX_PAGE_BYTES, file_name, index_page, machine_page, steps_json
    from bench.history.sources import load_sources
    from bench.runs.files import atomic_write_text

    if not 0 <= args.min_step < 1:
        raise ValueError(f"bad --min-step {args.min_step}: expected a fraction from 0 to 1, e.g. 0.05")
    if not 0 < args.confidence < 1:
        raise ValueError(f"bad --confidence {args.confidence}: expected a fraction between 0 and 1, e.g. 0.95")
    command = shlex.join(["python", "-m", "bench", *getattr(args, "argv", ["history"])])
    sources = list(args.sources)
    if sources[0] == "backfill":
        from bench.history.backfill import backfill

        if len(sources) != 2:
            raise ValueError("history backfill: expected one range, e.g. `history backfill HEAD~8..HEAD --matrix smoke "
                             "--out DIR`")
        if args.commit_timeout <= 0:
            raise ValueError(f"bad --commit-timeout {args.commit_timeout}: expected seconds > 0")
        repo = _repo(args, required=True)
        args.out.mkdir(parents=True, exist_ok=True)
        backfill(repo, sources[1], args.out, _bench_args(args), args.commit_timeout)
        sources = [args.out / "runs"]
    repo = _repo(args, required=False)
    runs, skipped = load_sources(sources)
    if not runs:
        raise ValueError(f"history: no saved run under {', '.join(map(str, sources))}")
    machines = build(runs, skipped, git_order(repo), min_step=args.min_step, confidence=args.confidence,
                     normalize=args.normalize)
    args.out.mkdir(parents=True, exist_ok=True)
    for m in machines:
        page = machine_page(m, command, args.min_step, args.confidence)
        atomic_write_text(args.out / file_name(m.machine), page)
        atomic_write_text(args.out / file_name(m.machine).replace(".html", ".steps.json"), steps_json(m))
        size = len(page.encode())
        if size > MAX_PAGE_BYTES:
            print(f"ae-bench: history: {file_name(m.machine)} is {size / 2 ** 20:.1f} MiB (over "
                  f"{MAX_PAGE_BYTES / 2 ** 20:.0f} MiB): narrow the sources", file=sys.stderr)
        steps = m.steps()
        print(f"{m.machine}: {len(m.runs)} run(s) in {m.order} order, {len(m.cases)} case(s), {len(steps)} step(s)")
        for key, s in steps:
            print(f"  {s.percent:+6.1f}% [{(s.low - 1) * 100:+.1f}%, {(s.high - 1) * 100:+.1f}%] {m.case_ids[key]} "
                  f"after {s.commit_before[:10]}, by {s.commit_after[:10]}")
    atomic_write_text(args.out / "index.html", index_page(machines, command))
    print(f"pages: {args.out / 'index.html'}")
    return EXIT_OK


COMMANDS = [Command("history", "speed of every case over commits, its steps, and static pages (or backfill A..B first)",
                    _args, _history)]
