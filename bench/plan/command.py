"""``python -m bench plan`` (the batch-size plan for a card) and ``plan-check`` (the memory model
against real CPU steps)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from bench.core.commandline import EXIT_FAILED, EXIT_OK, Command, add_matrix_args
from bench.plan.defaults import (
    ACCURACY_ATTENTION, ACCURACY_PRECISIONS, ACCURACY_SIZES, BUDGET_HELP, CHECK_BATCH_CAP, CHECK_MEMORY, DEFAULT_CONTEXT_MIB,
    DEFAULT_DISPLAY_RESERVE, DEFAULT_MARGIN, DEFAULT_MAX_BATCH,
)
from bench.runs.contract import PLAN_MODES


def _plan_args(parser: argparse.ArgumentParser) -> None:
    add_matrix_args(parser)
    parser.add_argument("--budget", default=None, help=BUDGET_HELP)
    parser.add_argument("--gpu", default=None, help="the card planned for, from bench/data/gpus.toml: rtx4060, rtx4060ti-8gb, rtx4060ti-16gb, "
                                                    "rtx4070laptop (the 8 GB 4070), rtx4070 (12 GB), ...; names the target and "
                                                    "gives the budget when --budget is not given")
    parser.add_argument("--display-reserve", default=DEFAULT_DISPLAY_RESERVE,
                        help="memory a desktop takes on a card that drives the monitor [default: 256MiB; 0 for a headless card; "
                             "planned on the card itself, the default is replaced by what NVML measures in use before the plan "
                             "starts]")
    parser.add_argument("--context", default=None,
                        help=f"CUDA context and library workspaces to assume [default: measured with NVML on a GPU, "
                             f"{DEFAULT_CONTEXT_MIB}MiB when predicting]")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="safety margin, a fraction of what the allocator may reserve [default: 0.05]")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="largest batch searched [default: 16384]")
    parser.add_argument("--predict", action="store_true", help="on a GPU too, only predict (skip the measured search)")
    parser.add_argument("--results", default="results", help="folder that receives <run-id>-plan/plan.csv and plan.md")


def _plan(args: argparse.Namespace) -> int:
    from bench.core.selection import check_args

    check_args(args)  # a mistyped selection is refused before the imports below load torch
    from bench.plan.budget import make_env
    from bench.plan.output import load_seed_batch_claims, write_plan
    from bench.plan.planner import configurations, run_plan
    from bench.core.cases import expand_modes, parse_axis_values
    from bench.core.selection import make_selection
    from bench.runs.provenance import bench_command, new_run_id, write_provenance

    plan = make_selection(args.matrix, lambda axis: getattr(args, axis), args.device)
    modes = expand_modes(parse_axis_values("modes", args.modes)) if args.modes else list(PLAN_MODES)
    if not args.modes and plan.cases and all(c.seq_len for c in plan.cases):  # a sequence matrix: plan its own modes
        modes = list(dict.fromkeys(c.mode for c in plan.cases))
    cases = configurations(plan.cases, modes)
    env = make_env(plan.device, plan.facts, args.budget, args.gpu, args.display_reserve, args.margin, args.context,
                   args.predict, args.max_batch)
    env.log(f"ae-bench plan: {len(cases)} configurations x modes for {env.target}, {env.source} ({env.device_label})")
    result = run_plan(cases, env)
    csv_path, md_path = write_plan(result, Path(args.results) / f"{new_run_id(plan.facts.slug)}-plan", load_seed_batch_claims())
    write_provenance(csv_path.parent, bench_command(getattr(args, "argv", None) or sys.argv[1:]))
    print(md_path.read_text())
    print(f"plan: {csv_path}\n      {md_path}")
    return EXIT_OK


def _check_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", default=None, help="presets [default: all]")
    parser.add_argument("--sizes", default=",".join(ACCURACY_SIZES), help="sizes WxH [default: 201x201,1280x152]")
    parser.add_argument("--precisions", default=",".join(ACCURACY_PRECISIONS), help="fp32, amp-bf16 [default: both]")
    parser.add_argument("--attention", default=",".join(ACCURACY_ATTENTION), help="flash, eager, math [default: flash,eager]")
    parser.add_argument("--checkpointing", default="off,on", help="on, off [default: both]")
    parser.add_argument("--families", default="transformer", help="transformer, transformer-flat, cnn [default: transformer]")
    parser.add_argument("--modes", default="train", help="train, infer, embed [default: train]")
    parser.add_argument("--budget", default="8GiB", help="the card whose fit decides what is checked [default: 8GiB]; " + BUDGET_HELP)
    parser.add_argument("--batch-cap", type=int, default=CHECK_BATCH_CAP, help="largest batch run for real [default: 64]")
    parser.add_argument("--memory-cap", default=CHECK_MEMORY, help="largest live peak run for real [default: 3GiB]")
    parser.add_argument("--tolerance", type=float, default=0.10, help="exit 1 when an error exceeds this [default: 0.10]")


def _check(args: argparse.Namespace) -> int:
    from bench.plan.budget import Budget
    from bench.plan.check import accuracy_grid, check_table, run_checks
    from bench.units import parse_bytes
    from bench.core.cases import parse_axis_values

    from ae_models import PRESETS

    if not 0 < args.tolerance <= 10:  # nan, inf, 1e300: no error would ever exceed it, the check would always pass
        raise ValueError(f"--tolerance: bad value {args.tolerance}: expected a relative error above 0 and at most 10, e.g. 0.10")
    budget = Budget(parse_bytes(args.budget, "--budget"))
    families = parse_axis_values("families", args.families)
    cases = [c for family in families for c in accuracy_grid(
        parse_axis_values("presets", args.presets or ",".join(PRESETS)), parse_axis_values("sizes", args.sizes),
        parse_axis_values("precisions", args.precisions), parse_axis_values("attention", args.attention),
        parse_axis_values("checkpointing", args.checkpointing), family, parse_axis_values("modes", args.modes))]
    if "cnn" in families:
        cases = list({c.key: c for c in (dataclasses.replace(c, attention="none", checkpointing=False) if c.family == "cnn" else c
                                         for c in cases)}.values())
    rows = run_checks(cases, budget, args.batch_cap, parse_bytes(args.memory_cap, "--memory-cap"), log=lambda line: print(line, file=sys.stderr))
    print(check_table(rows))
    bad = [r for r in rows if r.error is not None and abs(r.error) > args.tolerance]
    return EXIT_FAILED if bad else EXIT_OK


COMMANDS = [
    Command("plan", "the largest and the recommended batch per configuration for a GPU memory budget "
                    "(measured on a GPU, emulated on a larger one, predicted without one)", _plan_args, _plan),
    Command("plan-check", "the memory model's predicted training-step peak against the live-tensor peak of real CPU steps "
                          "(torch.profiler allocator events), one row per configuration", _check_args, _check),
]
