"""``python -m bench merge`` and the sweep face of ``run`` (``--gpus``, ``--executor``, ``--resume SWEEP``).

Nothing here imports torch at module level: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.core.commandline import AXIS_HELP, EXIT_FAILED, EXIT_OK, Command, rerun_command


def _merge_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN_DIR", nargs="+", help="the shards' run folders (results.csv, meta.json, ...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the merged run folder to write (new, or empty)")
    parser.add_argument("--allow-mixed-devices", action="store_true",
                        help="merge runs measured on different devices (the report then has a section per device) "
                             "instead of refusing")
    parser.add_argument("--allow-partial", action="store_true",
                        help="merge a set that lacks shards or cases (a shard not given, or stopped early) instead of "
                             "refusing: each case no shard measured becomes a `missing` row, the report's first screen "
                             "says 'partial: K of N shards', and the command exits 1")
    parser.add_argument("--no-report", action="store_true", help="write the merged folder only, not its report")


def _merge(args: argparse.Namespace) -> int:
    from bench.scale.merge import is_partial, merge_runs

    out = merge_runs([Path(r) for r in args.runs], Path(args.out), args.allow_mixed_devices,
                     command=["python", "-m", "bench"] + list(getattr(args, "argv", None) or sys.argv[1:]),
                     allow_partial=args.allow_partial)
    print(f"merged {len(args.runs)} runs -> {out}")
    if not args.no_report:
        print(_report_line(out))
    partial = is_partial(out)
    if partial:
        print(f"ae-bench: {partial}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _report_line(folder: Path) -> str:
    from bench.report.build import write_report

    try:
        return f"report: {write_report(folder)}"
    except Exception as err:  # noqa: BLE001 - the merged rows are on disk whatever the report says
        return (f"report not written: {type(err).__name__}: {err}; retry with "
                f"`{rerun_command(['report', str(folder)])}`")


COMMANDS = [Command("merge", "merge the runs of a matrix's shards (--shard K/N) into one run folder, and report it",
                    _merge_args, _merge)]


# -- run --gpus / --executor / --resume SWEEP ------------------------------------------------------

def child_args(args: argparse.Namespace) -> list[str]:
    """The options of ``run`` that every shard gets: the selection (less the matrix), timing, launcher."""
    out: list[str] = []
    for axis in AXIS_HELP:
        if getattr(args, axis, None):
            out += [f"--{axis}", str(getattr(args, axis))]
    if getattr(args, "min_time", None) is not None:
        out += ["--min-time", repr(args.min_time)]
    if getattr(args, "keyword", None):
        out += ["-k", args.keyword]
    if getattr(args, "launcher", "auto") != "auto":
        out += ["--launcher", args.launcher]
    if getattr(args, "case_timeout", None) is not None:
        out += ["--case-timeout", repr(args.case_timeout)]
    return out


def run_sweep(args: argparse.Namespace) -> int:
    """Start a sweep (``--gpus`` or ``--executor``), or continue one (``--resume SWEEP``)."""
    from bench.scale.options import is_sweep
    from bench.scale.sweep import Sweep

    if args.shard:
        raise ValueError("--shard: a sweep (--gpus, --executor, --resume SWEEP) gives each child its own shard; "
                         "use --shard alone to run one part here")
    argv = ["python", "-m", "bench"] + list(getattr(args, "argv", None) or sys.argv[1:])
    if args.resume and is_sweep(args.resume):
        sweep = Sweep.load(Path(args.resume))
        _check_resume(sweep, args)
    else:
        if args.resume:
            raise ValueError(f"--resume {args.resume}: not a sweep folder (no sweep.json); resume one shard's run without "
                             "--gpus/--executor, or give the sweep's folder")
        sweep = _new_sweep(args, argv)
    if args.list:
        print(sweep.listing())
        return EXIT_OK
    if sweep.executor != "gpus":
        from bench.scale.executors import check_available

        check_available(sweep.executor)  # refused before any folder is made
    if not args.resume:
        from bench.runs.provenance import claim_run_dir

        sweep.folder = claim_run_dir(Path(args.results), f"sweep-{sweep.count}x-{sweep.executor}")
        sweep.save()
    return _attempt(sweep, argv)


def _new_sweep(args: argparse.Namespace, argv: list[str]):
    from bench.runs.provenance import utc_now
    from bench.scale.sweep import Sweep

    if args.gpus and args.executor:
        raise ValueError("--gpus runs one child per GPU of this host itself; --executor runs jobs (give --shards N)")
    slurm: dict = {}
    if args.gpus:
        gpus = _parse_gpus(args.gpus)
        if args.shards is not None:
            raise ValueError("--shards: --gpus makes one shard per GPU")
        if args.device != "auto":
            raise ValueError(f"--device {args.device}: --gpus gives each child its own device (cuda:I)")
        count, executor, device_type = len(gpus), "gpus", "cuda"
    else:
        gpus, executor = [], args.executor
        if args.shards is None or not 1 <= args.shards <= 4096:
            raise ValueError(f"--executor {executor}: give the number of shards, --shards N (1..4096), one job each")
        count = args.shards
        slurm = _slurm_options(args)
        device_type = _expected_device_type(args, slurm)
    matrix = args.matrix
    if matrix == "auto":
        matrix = "default" if device_type == "cuda" else "quick"
    elif Path(matrix).suffix == ".toml" and Path(matrix).is_file():
        matrix = str(Path(matrix).resolve())  # a job may start in another folder
    axes = {axis: str(getattr(args, axis)) for axis in AXIS_HELP if getattr(args, axis, None)}
    forwarded = child_args(args) + (["--device", args.device] if executor != "gpus" and args.device != "auto" else [])
    sweep = Sweep(Path(args.results), executor, matrix, axes, args.keyword, forwarded, count, gpus, slurm,
                  args.allow_mixed_devices, shlex.join(argv), utc_now())
    sweep.parts  # expand now: a bad selection is refused before any folder exists
    return sweep


SLURM_OPTIONS = ("slurm_partition", "slurm_time", "slurm_gpus_per_task", "slurm_cpus_per_task", "slurm_mem",
                 "slurm_option")


def _slurm_options(args: argparse.Namespace) -> dict:
    from bench.scale.executors import parse_slurm_options, parse_slurm_time

    given = [o for o in SLURM_OPTIONS if getattr(args, o) is not None]
    if args.executor != "slurm":
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')}: only with --executor slurm")
        return {}
    if args.slurm_time is None:
        raise ValueError("--executor slurm: give each job's time limit, --slurm-time (minutes or HH:MM:SS); a shard that "
                         "runs past it is stopped, its missing cases recorded as errors, and --resume continues it")
    if args.slurm_gpus_per_task is not None and args.slurm_gpus_per_task < 0:
        raise ValueError(f"--slurm-gpus-per-task: bad count {args.slurm_gpus_per_task}: expected 0 or more")
    from bench.scale.resources import job_resources

    slurm = {"partition": args.slurm_partition, "time": parse_slurm_time(args.slurm_time),
             "gpus_per_task": args.slurm_gpus_per_task, "options": parse_slurm_options(args.slurm_option)}
    slurm.update(job_resources(slurm, args.slurm_cpus_per_task, args.slurm_mem))  # refuses more than one GPU a shard
    return slurm


def _expected_device_type(args: argparse.Namespace, slurm: dict) -> str:
    """The device type the shards will measure on, for ``--matrix auto`` (the children must agree)."""
    if args.device != "auto":
        return "cuda" if args.device.startswith("cuda") else args.device
    if args.executor == "slurm":
        from bench.scale.resources import gpus_asked

        return "cuda" if gpus_asked(slurm) else "cpu"  # --slurm-gpus-per-task 1, or a gres=gpu:1 option
    from bench.scale.executors import visible_gpus

    return "cuda" if visible_gpus() else "cpu"


def _parse_gpus(text: str) -> list[int]:
    from bench.scale import executors

    visible = executors.visible_gpus()
    if not visible:
        import torch

        raise ValueError(f"--gpus: CUDA is not available here (torch {torch.__version__}): several GPUs need a CUDA build "
                         "of torch and a driver; on a CPU split the matrix with --shard K/N instead")
    if text.strip() == "all":
        return list(visible)
    try:
        gpus = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise ValueError(f"--gpus: bad list {text!r}: expected GPU indices, e.g. 0,1,2,3, or all") from None
    if not gpus or len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus: bad list {text!r}: expected distinct GPU indices, e.g. 0,1,2,3")
    absent = [g for g in gpus if g not in visible]
    if absent:
        raise ValueError(f"--gpus: GPU {absent[0]} is not on this host (it has {len(visible)}: "
                         f"{','.join(map(str, visible))})")
    return gpus


def _check_resume(sweep, args: argparse.Namespace) -> None:
    """A sweep continues with its own selection; the executor and its SLURM options may change."""
    given = child_args(args) + (["--device", args.device] if args.device != "auto" and sweep.executor != "gpus" else [])
    if given and given != sweep.child_args or args.matrix not in ("auto", sweep.matrix):
        raise ValueError(f"--resume {sweep.folder}: a sweep continues with its own selection "
                         f"({' '.join(['--matrix', sweep.matrix, *sweep.child_args])}); give only --resume (and, if "
                         "need be, --executor and --slurm-* options)")
    if args.gpus:
        gpus = _parse_gpus(args.gpus)
        if sweep.executor != "gpus" or len(gpus) != sweep.count:
            raise ValueError(f"--gpus: the sweep has {sweep.count} shards ({sweep.executor}); give {sweep.count} GPUs")
        sweep.gpus = gpus
    if args.executor:
        if sweep.executor == "gpus":
            raise ValueError("--executor: this sweep ran on this host's GPUs (--gpus); resume it with --gpus")
        sweep.executor = args.executor
    slurm_given = [o for o in SLURM_OPTIONS if getattr(args, o) is not None]
    if sweep.executor == "slurm" and (args.executor or slurm_given):
        args.executor = "slurm"
        args.slurm_time = args.slurm_time or str(sweep.slurm.get("time") or "") or None
        sweep.slurm = _slurm_options(args)
    elif slurm_given:
        raise ValueError(f"--{slurm_given[0].replace('_', '-')}: only with --executor slurm")
    if args.shards is not None and args.shards != sweep.count:
        raise ValueError(f"--shards: the sweep has {sweep.count} shards; a resume keeps them")
    sweep.allow_mixed_devices = sweep.allow_mixed_devices or args.allow_mixed_devices  # after a merge refused them


def _attempt(sweep, argv: list[str]) -> int:
    """Run the sweep's incomplete shards, then merge every shard (and the failed jobs' error rows)."""
    from bench.runs.files import FolderLock
    from bench.runs.provenance import utc_now
    from bench.scale import executors
    from bench.scale.merge import merge_runs
    from bench.scale.sweep import MERGED_DIR, failure_rows

    todo: dict[int, list[str]] = {}
    for k in range(1, sweep.count + 1):
        if not sweep.missing(k):
            continue
        run_dir = sweep.run_dir(k)
        if run_dir is not None:  # refused at once if a job of an earlier attempt still writes it
            FolderLock(run_dir).acquire(f"--resume of shard {sweep.label(k)}").release()
        sweep.shard_dir(k).mkdir(parents=True, exist_ok=True)
        device = executors.gpu_device(sweep.gpus[k - 1]) if sweep.executor == "gpus" else None
        todo[k] = executors.child_command(sweep.shard_argv(k, device), k)
    done = sweep.count - len(todo)
    print(f"ae-bench: sweep {sweep.folder}: {len(todo)} of {sweep.count} shards to run"
          + (f" ({done} complete, kept)" if done else "") + f", {sweep.executor}", file=sys.stderr)
    attempt: dict = {"started": utc_now(), "executor": sweep.executor, "shards": {}}
    sweep.attempts.append(attempt)

    def submitted(ids: dict[int, str]) -> None:  # on disk at once: a login node that dies keeps the job ids
        attempt["shards"] = {sweep.label(k): {"job": f"job {job_id}", "state": "submitted"} for k, job_id in ids.items()}
        sweep.save()

    outcomes = {}
    try:
        if todo and sweep.executor == "gpus":
            outcomes = executors.run_gpu_children(todo, {k: sweep.shard_dir(k) / "job.log" for k in todo})
        elif todo:
            outcomes = executors.run_submitit_jobs(sweep.executor, sweep.folder / "jobs", todo, sweep.slurm,
                                                   f"ae-bench-{sweep.folder.name}", on_submit=submitted)
    except KeyboardInterrupt:
        print(f"ae-bench: sweep interrupted; resume with: {rerun_command(['run', '--resume', str(sweep.folder)])}",
              file=sys.stderr)
        raise
    extra, failed = [], []
    for k, outcome in sorted(outcomes.items()):
        left = len(sweep.missing(k))
        attempt["shards"][sweep.label(k)] = {"job": outcome.job, "rc": outcome.rc, "what": outcome.what, "unmeasured": left}
        print(f"ae-bench: shard {sweep.label(k)} ({outcome.job}) {outcome.what}"
              + (f"; {left} case(s) not measured" if left else ""), file=sys.stderr)
        if left:
            reason = (f"shard {sweep.label(k)} ({outcome.job}) {outcome.what} before measuring this case; resume the "
                      f"sweep to measure it. Log tail: {outcome.log_tail}")
            extra += failure_rows(sweep, k, reason)
            failed.append({"shard": sweep.label(k), "job": outcome.job, "what": outcome.what, "cases": left})
    attempt["ended"] = utc_now()
    sweep.save()
    folders = [d for d in (sweep.run_dir(k) for k in range(1, sweep.count + 1)) if d is not None]
    if not folders:  # no shard got as far as its run folder: nothing to merge
        print(f"ae-bench: no shard wrote a run folder; the first job's log: {next(iter(outcomes.values())).log_tail if outcomes else '(none)'}\n"
              f"resume with: {rerun_command(['run', '--resume', str(sweep.folder)])}", file=sys.stderr)
        return EXIT_FAILED
    merged = merge_runs(folders, sweep.folder / MERGED_DIR, sweep.allow_mixed_devices, extra, argv.copy(),
                        replace=True, notes=failed, allow_partial=True)  # a failed shard's cases are error rows
    print(f"merged {len(folders)} shard run(s) -> {merged}" + (f" ({len(extra)} error row(s) for failed jobs)" if extra else ""))
    print(_report_line(merged))
    if failed:
        print(f"ae-bench: {len(failed)} shard(s) failed; resume with: {rerun_command(['run', '--resume', str(sweep.folder)])}",
              file=sys.stderr)
        return EXIT_FAILED
    from bench.runs.schema import COLUMN_NAMES
    from bench.scale.merge import read_shard_run

    status = COLUMN_NAMES.index("status")
    return EXIT_FAILED if any(r[status] in ("error", "timeout") for r in read_shard_run(merged).records) else EXIT_OK
