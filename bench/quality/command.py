"""``python -m bench quality``: train cases on real images for a budget and score held-out reconstructions."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from bench.core.commandline import EXIT_FAILED, EXIT_OK, Command, add_matrix_args
from bench.quality.defaults import DEFAULT_LR, DEFAULT_MATRIX, DEFAULT_SEEDS, DEFAULT_STEPS, DEFAULT_WARMUP_STEPS


def add_quality_args(parser: argparse.ArgumentParser) -> None:
    add_matrix_args(parser)
    parser.set_defaults(matrix=DEFAULT_MATRIX)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-steps", type=int, default=None,
                        help=f"train every case for this many optimizer steps [default: {DEFAULT_STEPS} when no budget is given]")
    budget.add_argument("--budget-seconds", type=float, default=None,
                        help="train every case for this many seconds of training clock (evaluations excluded)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="evaluate the held-out loss every N steps [default: 8 points spread over the budget]")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="train and score on the png/jpg/tif images in DIR instead of scikit-image's bundled photographs")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run folder for quality.csv, quality.md and the plots [default: results/<run-id>-quality]")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS,
                        help=f"training seeds (weights and batch order), comma-separated; at least 3 give a seed spread, "
                             f"and every verdict needs one [default: {DEFAULT_SEEDS}]")
    parser.add_argument("--data-seed", type=int, default=0, help="seed for the training crops' positions [default: 0]")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"AdamW peak learning rate, every family [default: {DEFAULT_LR:g}]")
    parser.add_argument("--warmup-steps", type=int, default=DEFAULT_WARMUP_STEPS,
                        help=f"linear warm-up steps, at most a fifth of a step budget [default: {DEFAULT_WARMUP_STEPS}]")
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                        help="learning rate after the warm-up: cosine decay over the budget, or constant [default: cosine]")
    parser.add_argument("--list", action="store_true", help="list the quality cases without training")
    parser.add_argument("--report", metavar="RUN_DIR", default=None,
                        help="only redraw quality.md and the plots of an existing quality run folder")


def run_quality_command(args: argparse.Namespace) -> int:
    from bench.core.loop import Progress
    from bench.core.selection import make_selection, narrow_cases
    from bench.quality.report import QUALITY_CSV, QualityWriter, summary_lines, write_quality_report
    from bench.quality.run import QualityData, quality_case_id, quality_cases, run_quality_case
    from bench.quality.training import Budget, Schedule
    from bench.runs.provenance import bench_command, new_run_id, provenance

    if args.report:
        print(f"report: {write_quality_report(Path(args.report))}")
        return EXIT_OK
    from bench.quality.evidence import parse_seeds

    seeds = parse_seeds(args.seeds)
    plan = make_selection(args.matrix, lambda axis: None, args.device)  # the whole matrix, then narrowed (never widened)
    cases = quality_cases(narrow_cases(plan.cases, lambda axis: getattr(args, axis), f"matrix {plan.matrix.name!r}"))
    if not cases:
        raise ValueError(f"no case of matrix {plan.matrix.name!r} matches the selection")
    if args.list:
        for case in cases:
            print(quality_case_id(case) + (f"    [skip: {case.skip}]" if case.skip else ""))
        print(f"{len(cases)} quality cases")
        return EXIT_OK
    if args.budget_seconds is not None and not 0 < args.budget_seconds <= 7 * 24 * 3600:
        raise ValueError(f"--budget-seconds: bad value {args.budget_seconds}: expected seconds above 0 and at most 604800 "
                         "(a week)")
    if not 0 < args.lr <= 10:  # 1e300 trained into error rows; nan or inf never trains
        raise ValueError(f"--lr: bad learning rate {args.lr}: expected a number above 0 and at most 10, e.g. 0.001")
    steps = DEFAULT_STEPS if args.budget_steps is None and args.budget_seconds is None else args.budget_steps
    budget = Budget(steps, args.budget_seconds, args.eval_every)
    schedule = Schedule(args.lr, args.warmup_steps, args.schedule)  # ValueError names a bad rate or warm-up
    data = QualityData(Path(args.images) if args.images else None, args.data_seed)
    for hw in dict.fromkeys(c.hw for c in cases if not c.skip):
        data.split(hw)  # every size's crops before any training: a size no image fits fails now, not mid-run
    run_id = new_run_id(plan.facts.slug) + "-quality"
    run_dir = Path(args.out) if args.out else Path("results") / run_id
    # the thread count changes speed, never results: an OMP_NUM_THREADS given to the run belongs to its command
    meta = {**provenance(bench_command(sys.argv[1:], env=("OMP_NUM_THREADS",))), "seeds": seeds,
            "entry": "cli", "matrix": plan.matrix.name, "budget": dataclasses.asdict(budget), "lr": args.lr,
            "warmup_steps": args.warmup_steps, "schedule": schedule.describe(),
            "device": plan.facts.as_dict()}
    from bench.runs.lock import FolderLock

    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} exists and is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(run_dir).acquire("this quality run")  # one writer at a time (refused: one line); the process's end frees it
    if (run_dir / QUALITY_CSV).is_file():  # an earlier run's rows (whole or stopped): never replaced by this one's
        lock.release()
        raise ValueError(f"--out {run_dir} already holds a quality run ({QUALITY_CSV}): its rows would be replaced; give "
                         "another --out, or move that folder away")
    writer = QualityWriter(run_dir, meta)
    print(f"ae-bench quality: {len(cases)} cases x {len(seeds)} seeds, {budget.describe()} each, on {plan.facts.name} ({plan.facts.type}); "
          f"{data.description}; -> {run_dir}", file=sys.stderr)
    failed = False
    meter = Progress(len(cases) * len(seeds))
    for seed, case in ((seed, case) for seed in seeds for case in cases):  # seed by seed: a stopped run has whole seeds
        split = data.split(case.hw)
        writer.set_data(data.describe())
        start = time.perf_counter()
        result = run_quality_case(case, split, budget, plan.device, plan.facts, run_id, seed, args.lr, schedule=schedule)
        writer.add(result)
        row = result.row
        failed |= row["status"] in ("error",)
        detail = (f"{row['steps']} steps, {row['images_per_s']:.1f} img/s, PSNR {row['psnr_db']:.2f} dB "
                  f"({row['margin_crop_mean_db']:+.2f} dB vs crop mean, {row['margin_latent_db']:+.2f} dB vs latent baseline"
                  f"{'' if row['learned'] else ', NOT LEARNED'}), SSIM {row['ssim']:.3f}"
                  if row["status"] == "ok" else f"{row['status']}: {row['reason']}")
        print(meter.step(f"{row['case_id']} seed {seed}: {detail} ({time.perf_counter() - start:.0f} s)"), file=sys.stderr)
    report = writer.finish()
    lock.release()
    print("\n".join(summary_lines(writer.rows)))
    print(f"results: {writer.csv_path}\nreport: {report}")
    return EXIT_FAILED if failed else EXIT_OK


COMMANDS = [Command("quality", "train cases on real images for a budget and score held-out reconstructions (MSE, PSNR, SSIM)",
                    add_quality_args, run_quality_command)]
