"""``python -m bench downstream``: the LSTM on each family's frozen embeddings, against repeat-last."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.core.commandline import EXIT_OK, Command

# the defaults of bench/downstream/downstream.py, repeated here so that --help needs no torch
WINDOW, STEP, CONTEXT, AE_STEPS, LSTM_STEPS, SEEDS = "640x152", 64, 4, 200, 300, "0,1,2"


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--families", default="transformer,cnn", help="families, comma-separated [default: transformer,cnn]")
    parser.add_argument("--preset", default="tiny", help="one preset for every family [default: tiny]")
    parser.add_argument("--latents", default="128,8192", help="latent sizes 128..8192, comma-separated [default: 128,8192]")
    parser.add_argument("--window", default=WINDOW, help=f"window size WxH [default: {WINDOW}]")
    parser.add_argument("--step", type=int, default=STEP, help=f"px between consecutive windows [default: {STEP}]")
    parser.add_argument("--context", type=int, default=CONTEXT, help=f"windows the LSTM reads before predicting [default: {CONTEXT}]")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--ae-steps", type=int, default=None,
                        help=f"autoencoder optimizer steps per family, latent and seed [default: {AE_STEPS} when no budget is given]")
    budget.add_argument("--ae-seconds", type=float, default=None,
                        help="instead of steps: autoencoder training clock per family, latent and seed, seconds (each row "
                             "records the steps it gave; the report warns when compared rows differ)")
    parser.add_argument("--lstm-steps", type=int, default=LSTM_STEPS, help=f"LSTM training steps [default: {LSTM_STEPS}]")
    parser.add_argument("--train-rows", type=int, default=16, help="training rows per image [default: 16]")
    parser.add_argument("--heldout-rows", type=int, default=8, help="held-out rows per image [default: 8]")
    parser.add_argument("--images", default=None, metavar="DIR", help="png/jpg/tif images instead of scikit-image's photographs")
    parser.add_argument("--seeds", default=SEEDS,
                        help=f"training seeds (rows, weights and batches), comma-separated; the verdict needs the "
                             f"difference above their spread [default: {SEEDS}]")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N [default: cpu]")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder [default: results/<run-id>-downstream]")


def _positive(name: str, value: float) -> None:
    limit = 7 * 24 * 3600 if name.endswith("seconds") else float("inf")  # 1e300 s: not a budget any run spends
    if not 0 < value < float("inf") or not value <= limit:  # also nan
        raise ValueError(f"{name}: expected a positive number{' of seconds, at most 604800 (a week)' if limit < float('inf') else ''}"
                         f", got {value}")


def _run(args: argparse.Namespace) -> int:
    from bench.core.cases import parse_axis_values
    from ae_models.sizes import parse_size

    families = parse_axis_values("families", args.families)
    latents = parse_axis_values("latents", args.latents)
    bad = [v for v in latents if not 128 <= v <= 8192]
    if bad:
        raise ValueError(f"--latents: {bad[0]} is outside 128..8192")
    window = parse_size(args.window)
    if args.ae_steps is None and args.ae_seconds is None:
        args.ae_steps = AE_STEPS
    for name in ("step", "context", "ae_steps", "ae_seconds", "lstm_steps", "train_rows", "heldout_rows"):
        if getattr(args, name) is not None:
            _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    from bench.quality.evidence import parse_seeds

    seeds = parse_seeds(args.seeds)

    from bench.quality.dataset import load_sources
    from bench.runs.provenance import bench_command, new_run_id, provenance
    from bench.downstream.downstream import prepare_images, run_downstream
    from bench.downstream.output import write_outputs
    from bench.trackers.device import device_facts, resolve_device

    device = resolve_device(args.device)
    facts = device_facts(device)
    out = Path(args.out) if args.out else Path("results") / f"{new_run_id(facts.slug)}-downstream"
    started = time.perf_counter()
    source = provenance(bench_command(getattr(args, "argv", None) or sys.argv[1:]))  # the code as it was when the run started
    sources, failed, data = load_sources(args.images)
    images, dropped = prepare_images(sources, window, args.step, args.context, seeds[0])
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results = []
    for family in families:
        for latent in latents:
            log(f"{family} {args.preset} latent {latent}:")
            results.append(run_downstream(family, args.preset, latent, images, device, seeds, window, args.step,
                                          args.context, args.ae_steps, args.ae_seconds, args.lstm_steps,
                                          args.train_rows, args.heldout_rows, log))
            md = write_outputs(out, results, meta(args, facts, started, source, data, failed, dropped, seeds, images))  # a stop keeps these
    print(md.read_text())
    print(f"downstream: {md}")
    return EXIT_OK


def meta(args: argparse.Namespace, facts, started: float, source: dict, data: str, failed: dict, dropped: dict, seeds: list,
         images) -> dict:
    """What downstream.md says about its run: the command, the machine, the code, the data and the budget."""
    import torch

    return dict(device=f"{facts.name} ({torch.get_num_threads()} threads)",
                torch=torch.__version__, **source, seconds=time.perf_counter() - started, data=data,
                dropped="; ".join(f"{k}: {v}" for k, v in {**failed, **dropped}.items()), ae_steps=args.ae_steps,
                ae_seconds=args.ae_seconds, seeds=seeds,
                heldout_images=", ".join(im.name for im in images if im.heldout),
                train_images=", ".join(im.name for im in images if not im.heldout))


COMMANDS = [
    Command("downstream", "train an LSTM on each family's frozen embeddings of consecutive windows to predict the next "
                          "window's embedding; score it on held-out images against repeat-last and a ridge one-step predictor", _args, _run),
]
