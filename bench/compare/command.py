"""``python -m bench compare`` (a run against a baseline: exit 1 on a regression) and ``baseline``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.compare import stats as st
from bench.core.commandline import (
    DEFAULT_CASE_TIMEOUT_S, EXIT_INCONCLUSIVE, EXIT_OK, KEYWORD_HELP, MIN_TIME_HELP, Command, add_matrix_args,
    check_case_timeout,
)


def _percent(fraction: float) -> str:
    """0.1 -> '10%%': a percentage inside an argparse help string (which %-formats it)."""
    return f"{fraction:.0%}".replace("%", "%%")


def _inconclusive_args(parser: argparse.ArgumentParser) -> None:
    """``--min-judged`` and ``--allow-inconclusive``, the same for ``compare`` and ``ab``."""
    parser.add_argument("--min-judged", default=None,
                        help=f"the share of the cases ok on both sides that must get a time verdict (same, faster, slower; "
                             f"not noisy or bimodal), else the result is INCONCLUSIVE, exit {EXIT_INCONCLUSIVE} "
                             f"(0.5 or 50%%) [default: {_percent(st.MIN_JUDGED)}]")
    parser.add_argument("--allow-inconclusive", action="store_true",
                        help=f"exit 0 instead of {EXIT_INCONCLUSIVE} when too few cases could be judged (the headline "
                             "still says INCONCLUSIVE)")


def min_judged(value: object) -> float:
    """``--min-judged``: a share in (0, 1], as a fraction or a percentage; ValueError in one line otherwise."""
    from bench.compare.rules import parse_fraction

    if value is None:
        return st.MIN_JUDGED
    share = parse_fraction(value, "--min-judged")
    if share > 1:
        raise ValueError(f"bad --min-judged {value!r}: expected a share of the cases up to 1 (100%), e.g. 0.5 or 50%")
    return share


def _compare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", type=Path,
                        help="a saved run: pytest-benchmark .json, a results folder, a folder of runs (the latest is "
                             "used), or a baseline store such as baselines/ (the candidate machine's sub-folder is used)")
    parser.add_argument("candidate", type=Path, help="the run to check, in any of the same forms")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML thresholds: [defaults] time/memory/memory_floor_mib/max_spread, and [[group]] tables "
                             "with match = pattern(s) on case ids or keys, the same keys, and ignore = true")
    parser.add_argument("--time-threshold", default=None,
                        help=f"fail when the median is slower by more than this (0.1 or 10%%) [default: {_percent(st.TIME_THRESHOLD)}]")
    parser.add_argument("--memory-threshold", default=None,
                        help=f"fail when peak memory grows by more than this [default: {_percent(st.MEMORY_THRESHOLD)}]")
    parser.add_argument("--memory-floor-mib", type=float, default=None,
                        help=f"... and by more than this many MiB [default: {st.MEMORY_FLOOR_MIB:g}]")
    parser.add_argument("--max-spread", default=None,
                        help=f"a run whose IQR / median exceeds this cannot fail a case [default: {_percent(st.MAX_SPREAD)}]")
    parser.add_argument("--confidence", type=float, default=st.CONFIDENCE, help="bootstrap interval level [default: 0.95]")
    parser.add_argument("--resamples", type=int, default=st.RESAMPLES, help="bootstrap resamples [default: 2000]")
    parser.add_argument("--seed", type=int, default=st.SEED, help="bootstrap seed [default: 0]")
    parser.add_argument("--normalize", action="store_true",
                        help="divide candidate times by the ratio of the runs' calibration GEMM times (clock drift)")
    parser.add_argument("--allow-different-machines", action="store_true",
                        help="compare runs from different GPU models or torch versions anyway")
    parser.add_argument("--allow-different-timers", action="store_true",
                        help="compare runs whose timer column differs (CUDA events vs synchronised wall clock) anyway")
    parser.add_argument("--check-rss", action="store_true",
                        help="judge peak RSS too where no GPU memory figure exists (whole-process, order-dependent)")
    parser.add_argument("--fail-on-noisy", action="store_true", help="treat a noisy case as a failure")
    parser.add_argument("--allow-missing", action="store_true",
                        help="pass although a case of the baseline is missing from the candidate (a narrowed matrix); "
                             "by default a missing case fails, as a dropped or renamed case would escape the check")
    _inconclusive_args(parser)
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown summary here (a PR comment)")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the headline")


def _compare(args: argparse.Namespace) -> int:
    from bench.compare.rules import load_rules, non_negative, parse_fraction
    from bench.compare.sides import open_run
    from bench.compare.verdicts import compare_runs

    cli = {"time": parse_fraction(args.time_threshold, "--time-threshold") if args.time_threshold is not None else None,
           "memory": parse_fraction(args.memory_threshold, "--memory-threshold") if args.memory_threshold is not None else None,
           "memory_floor_mib": non_negative(args.memory_floor_mib, "--memory-floor-mib") if args.memory_floor_mib is not None else None,
           "max_spread": parse_fraction(args.max_spread, "--max-spread") if args.max_spread is not None else None}
    if not 0 < args.confidence < 1:
        raise ValueError(f"bad --confidence {args.confidence}: expected a fraction between 0 and 1, e.g. 0.95")
    if not 0 <= args.seed < 2 ** 32:
        raise ValueError(f"--seed: bad seed {args.seed}: expected 0 to {2 ** 32 - 1}")
    if args.resamples < 100:
        raise ValueError(f"bad --resamples {args.resamples}: expected at least 100")
    share = min_judged(args.min_judged)
    rules = load_rules(args.config, cli)
    for path, role in ((args.baseline, "baseline"), (args.candidate, "candidate")):
        if not path.exists():  # before reading either, so a missing baseline is named as such
            raise ValueError(f"{role} {path} does not exist")
    candidate = open_run(args.candidate, "candidate")
    baseline = open_run(args.baseline, "baseline", prefer=candidate.machine_key)
    result = compare_runs(baseline, candidate, rules, normalize=args.normalize,
                          allow_different_machines=args.allow_different_machines, check_rss=args.check_rss,
                          allow_different_timers=args.allow_different_timers, allow_missing=args.allow_missing,
                          fail_on_noisy=args.fail_on_noisy, confidence=args.confidence, resamples=args.resamples,
                          seed=args.seed, min_judged=share, allow_inconclusive=args.allow_inconclusive)
    return _emit(result, args)


def _emit(result, args: argparse.Namespace) -> int:
    """A comparison's outputs, the same for ``compare`` and ``ab``: --markdown, --json, the summary (or
    headline with -q) on stdout; returns its exit status."""
    from bench.compare.verdicts import finite_json
    from bench.runs.files import atomic_write_text

    text = result.markdown()
    print(result.headline() if args.quiet else text, flush=True)  # the verdict first: an unwritable --json cannot hide it
    if args.markdown:
        atomic_write_text(args.markdown, text)
    if args.json:
        atomic_write_text(args.json, json.dumps(finite_json(result.as_json()), indent=2, default=str, allow_nan=False) + "\n")
    return result.exit_status


def _baseline_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, nargs="?",
                        help="the run to keep as this machine's baseline (a results folder or pytest-benchmark .json)")
    parser.add_argument("--store", type=Path, default=Path("baselines"), help="where baselines live [default: baselines]")
    parser.add_argument("--key", action="store_true",
                        help="print this machine's baseline folder name (<device-slug>-torch<version>) and exit")
    parser.add_argument("--device", default="auto", help="the device --key describes [default: auto]")


def _baseline(args: argparse.Namespace) -> int:
    from bench.compare.baseline import save_baseline
    from bench.compare.sides import machine_key

    if args.key:
        import torch

        from bench.trackers.device import device_facts, resolve_device

        print(machine_key(device_facts(resolve_device(args.device)).slug, torch.__version__))
        return EXIT_OK
    if args.run is None:
        raise ValueError("give the run to keep as the baseline (or --key to print this machine's baseline folder name)")
    dest = save_baseline(args.run, args.store)
    print(dest)
    return EXIT_OK


def _ab_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base_ref", metavar="BASE_REF", help="the git ref measured as A (main, a tag, a commit)")
    parser.add_argument("head_ref", metavar="HEAD_REF", nargs="?", default=None,
                        help="the git ref measured as B [default: the working tree as it is, uncommitted changes included]")
    add_matrix_args(parser)
    parser.add_argument("-k", dest="keyword", default=None, help=KEYWORD_HELP)
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds of A and B per case, alternated A B, B A, ... (each measurement a fresh process); the "
                             "verdict's interval is the paired ratios' order statistics, which need at least 6 rounds at 95%% "
                             "[default: 6]")
    parser.add_argument("--min-time", type=float, default=None, help=MIN_TIME_HELP + " (seconds)")
    parser.add_argument("--time-threshold", default=None,
                        help=f"fail when B's paired median is slower by more than this (0.1 or 10%%) [default: {_percent(st.TIME_THRESHOLD)}]")
    parser.add_argument("--config", type=Path, default=None, help="TOML thresholds, as for compare")
    parser.add_argument("--case-timeout", type=float, default=DEFAULT_CASE_TIMEOUT_S,
                        help=f"seconds one measurement may take before its child is killed [default: {DEFAULT_CASE_TIMEOUT_S:g}]")
    _inconclusive_args(parser)
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown summary here (a PR comment)")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the headline")


def _ab(args: argparse.Namespace) -> int:
    import sys

    from bench.compare.ab import check_rounds, repo_root, run_ab, worktree
    from bench.compare.rules import load_rules, parse_fraction
    from bench.core.selection import selection_from_args

    cli = {"time": parse_fraction(args.time_threshold, "--time-threshold") if args.time_threshold is not None else None}
    rules = load_rules(args.config, cli)
    share = min_judged(args.min_judged)
    check_rounds(args.rounds)  # before any worktree is made
    check_case_timeout(args.case_timeout)  # 0, -1, nan, inf: every measurement a timeout, a comparison of nothing
    selection = selection_from_args(args)
    selection.settings.predict_memory = False  # the memory model's fit: nothing to compare, a second per measurement
    if selection.device.type == "cpu":  # both sides suffer alike, but every measurement takes many times longer
        from bench.trackers.device import cpu_load, oversubscribed

        warning = oversubscribed(cpu_load())
        if warning:
            print(f"ae-bench ab: {warning}", file=sys.stderr)
    repo = repo_root()
    with worktree(repo, args.base_ref) as (root_a, label_a), worktree(repo, args.head_ref) as (root_b, label_b):
        print(f"ae-bench ab: A = {label_a}, B = {label_b}; {len(selection.cases)} cases x {args.rounds} rounds x 2 on "
              f"{selection.facts.name}", file=sys.stderr)
        result = run_ab(selection.cases, selection, (root_a, root_b), (label_a, label_b), args.rounds, rules,
                        args.case_timeout, log=lambda line: print(line, file=sys.stderr, flush=True),
                        min_judged=share, allow_inconclusive=args.allow_inconclusive)
    return _emit(result, args)


COMMANDS = [
    Command("ab", "A/B in one job: two git refs measured alternately on this machine (ABBA, a fresh process each); "
                  f"a slower B beyond the threshold -> exit 1; too few cases judged -> exit {EXIT_INCONCLUSIVE}", _ab_args, _ab),
    Command("compare", "check a run against a baseline: slower or hungrier beyond thresholds -> exit 1; too few cases "
                       f"judged -> exit {EXIT_INCONCLUSIVE}", _compare_args, _compare),
    Command("baseline", "keep a run as the baseline for its GPU model and torch version (baselines/<device>-torch<ver>/)",
            _baseline_args, _baseline),
]
