"""The scale-out options of ``python -m bench run`` (and ``--ae-shard`` of ``pytest bench``), without torch.

``--shard K/N`` runs one part of the selection here; ``--gpus``, ``--executor`` (with ``--shards``
and the ``--slurm-*`` options) run every part as a child or a job and merge them (a *sweep*,
bench/scale/command.py); ``--resume SWEEP_DIR`` continues a sweep.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.core.shard import SHARD_HELP

SWEEP_JSON = "sweep.json"
EXECUTORS = ("local", "slurm")


def add_shard_option(add_option, prefix: str = "--") -> None:
    """``--shard K/N`` on ``run``, ``--ae-shard K/N`` under pytest."""
    add_option(f"{prefix}shard", metavar="K/N", default=None, help=SHARD_HELP)


def add_scale_args(parser: argparse.ArgumentParser) -> None:
    """``run``'s options for many machines: one shard here, or a sweep of all shards."""
    group = parser.add_argument_group("many machines (see the README's \"Running on many machines\")")
    add_shard_option(group.add_argument)
    group.add_argument("--gpus", metavar="LIST", default=None,
                       help="several GPUs of this host, e.g. 0,1,2,3 (or all): one child per GPU in parallel, each with "
                            "--device cuda:I and its own shard, merged at the end into SWEEP/merged")
    group.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="run the shards as jobs through submitit (pip install 'ae-bench[cluster]'): slurm (one "
                            "job-array element per shard) or local (submitit's local executor, to try it on a laptop: "
                            "the shards run side by side, so their timings disturb each other)")
    group.add_argument("--shards", type=int, metavar="N", default=None, help="with --executor: how many shards (jobs)")
    group.add_argument("--slurm-partition", metavar="NAME", default=None, help="with --executor slurm: the partition")
    group.add_argument("--slurm-time", metavar="TIME", default=None,
                       help="with --executor slurm (required): each job's time limit, minutes or [D-]HH:MM[:SS]")
    group.add_argument("--slurm-gpus-per-task", type=int, metavar="N", default=None,
                       help="with --executor slurm: GPUs per job: 1 to measure on a GPU (a shard uses one; more is "
                            "refused), 0 on a CPU; a gres=gpu:1 --slurm-option counts too")
    group.add_argument("--slurm-cpus-per-task", type=int, metavar="N", default=None,
                       help="with --executor slurm: CPU cores per job (default: 6 for a GPU shard, its 3 torch processes "
                            "x 2; 8 for a CPU shard; bench/scale/resources.py)")
    group.add_argument("--slurm-mem", metavar="SIZE", default=None,
                       help="with --executor slurm: host memory per job, e.g. 24GiB (default: 12 GiB for a GPU shard, "
                            "4 GiB per torch process; 16 GiB for a CPU shard)")
    group.add_argument("--slurm-option", metavar="KEY=VALUE", action="append", default=None,
                       help="with --executor slurm: any other sbatch option, e.g. account=proj or constraint=a100 "
                            "(repeatable; KEY alone for a flag)")
    group.add_argument("--allow-mixed-devices", action="store_true",
                       help="with --gpus/--executor: merge shards measured on different devices (a section per device "
                            "in the report) instead of refusing")


def is_sweep(path: object) -> bool:
    """Whether ``path`` is a sweep folder (what ``--gpus``/``--executor`` made), not a run folder."""
    return bool(path) and (Path(str(path)) / SWEEP_JSON).is_file()


SWEEP_ONLY = ("shards", "slurm_partition", "slurm_time", "slurm_gpus_per_task", "slurm_cpus_per_task", "slurm_mem",
              "slurm_option")


def orchestrated(args: argparse.Namespace) -> bool:
    """Whether ``run`` starts or continues a sweep (children or jobs) instead of measuring here; a
    sweep's option on a plain run is refused (ValueError) rather than ignored."""
    sweep = bool(getattr(args, "gpus", None) or getattr(args, "executor", None) or is_sweep(getattr(args, "resume", None)))
    if not sweep:
        stray = [o for o in SWEEP_ONLY if getattr(args, o, None) is not None] + (
            ["allow_mixed_devices"] if getattr(args, "allow_mixed_devices", False) else [])
        if stray:
            raise ValueError(f"--{stray[0].replace('_', '-')}: only for a sweep (with --gpus or --executor)")
    return sweep
