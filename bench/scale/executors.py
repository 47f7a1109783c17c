"""Where a sweep's shards run: one child per GPU of this host (``--gpus``), or submitit jobs
(``--executor local``, ``--executor slurm``: one job-array element per shard).

Every shard is the same command, ``python -m bench run ... --shard K/N``, started as a child
process of the job (so a job's own signal handling never touches the sweep's), which dies with
its parent on Linux. The outcome of a shard is the child's exit status and the tail of its log:
0 or 1 mean the shard ran to its end (1: some case failed, which its rows say); anything else,
or a job that ended without a status, leaves cases unmeasured, which the merge records as
``error`` rows with that log tail. submitit is imported only here, only when asked for.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from bench.core.commandline import child_env

LOCAL_TIMEOUT_MIN = 14 * 24 * 60  # submitit's local executor kills a job after 2 minutes unless told otherwise
TAIL_LINES, TAIL_CHARS = 20, 1500
EXIT_MEANINGS = {2: "bad input", 3: "an I/O or internal error", 130: "interrupted"}
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds bench/: on the jobs' PYTHONPATH


@dataclass
class Outcome:
    """How one shard's child or job ended."""

    rc: Optional[int]   # the child's exit status (negative: the signal that killed it); None: the job gave none
    job: str            # "pid 1234", "job 5678_1"
    what: str           # "exited with status 0", "killed by SIGKILL", "ended TIMEOUT without an exit status: ..."
    log_tail: str


def child_command(argv: list[str], k: int) -> list[str]:
    """The command line of shard K's child: ``python -m bench ARGV`` with this interpreter."""
    return [sys.executable, "-m", "bench", *argv]


def visible_gpus() -> list[int]:
    """The CUDA devices of this host (none without a CUDA build of torch and a driver)."""
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def gpu_device(index: int) -> str:
    """The ``--device`` of the child on GPU ``index``."""
    return f"cuda:{index}"


def describe(rc: Optional[int]) -> str:
    if rc is None:
        return "ended without an exit status"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}" + (f" ({EXIT_MEANINGS[rc]})" if rc in EXIT_MEANINGS else "")


def log_tail(*texts: Optional[str]) -> str:
    """The last lines of a job's output, on one line (a row's reason is one line)."""
    lines = [line.strip() for text in texts if text for line in text.splitlines()
             if line.strip() and not line.startswith("submitit INFO")]  # submitit's own bookkeeping says nothing here
    tail = " | ".join(lines[-TAIL_LINES:])
    return tail[-TAIL_CHARS:] if tail else "(no output)"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM (a clean stop, its rows kept) when the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux, or no prctl: the child then outlives a killed parent
        pass


def _start(command: list[str], **kwargs: Any) -> subprocess.Popen:
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    kwargs.setdefault("env", child_env())  # this bench first on PYTHONPATH (bench/core/commandline.py)
    return subprocess.Popen(command, preexec_fn=preexec, **kwargs)  # noqa: PLW1509 - prctl only, no locks taken


def _stop(process: subprocess.Popen, wait_s: float = 30.0) -> None:
    """Stop a child this module started: SIGINT (it keeps its rows and exits 130), then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_shard_job(command: list[str], env: Optional[dict[str, Optional[str]]] = None) -> int:
    """The body of a submitit job: run the shard's command as a child (``env``: variables to set, or
    to remove where None), return its exit status."""
    environment = child_env()  # this bench first on PYTHONPATH (bench/core/commandline.py)
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    process = _start(command, env=environment)
    if hasattr(signal, "SIGUSR2"):  # the time-limit warning (submitit's --signal=USR2@90): the shard ends cleanly
        signal.signal(signal.SIGUSR2, lambda signum, frame: process.send_signal(signal.SIGUSR2))
    try:
        return process.wait()
    except BaseException:  # the job is being stopped (a cancel, a time limit): stop the shard cleanly
        _stop(process, 20.0)
        raise


# -- several GPUs of this host ----------------------------------------------------------------------

def run_gpu_children(todo: dict[int, list[str]], logs: dict[int, Path],
                     on_poll: Optional[Callable[[], None]] = None, poll_s: float = 0.5) -> dict[int, Outcome]:
    """Start every shard's child at once (its output to ``logs[k]``), wait for all, return their outcomes."""
    children: dict[int, subprocess.Popen] = {}
    try:
        for k, command in todo.items():
            with open(logs[k], "ab") as log:
                log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n".encode())
                log.flush()
                children[k] = _start(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        print(f"ae-bench: started {len(children)} children (pids {', '.join(str(p.pid) for p in children.values())}); "
              f"their output: {', '.join(str(logs[k]) for k in children)}", file=sys.stderr)
        while any(p.poll() is None for p in children.values()):
            if on_poll is not None:
                on_poll()
            time.sleep(poll_s)
    except BaseException:
        for process in children.values():
            _stop(process)
        raise
    return {k: Outcome(p.returncode, f"pid {p.pid}", describe(p.returncode), log_tail(_read_tail(logs[k])))
            for k, p in children.items()}


def _read_tail(path: Path, limit: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


# -- submitit --------------------------------------------------------------------------------------

def import_submitit():
    try:
        import submitit
    except ImportError:
        raise ValueError("--executor needs submitit, which is not installed: pip install 'ae-bench[cluster]' "
                         "(or pip install submitit)") from None
    return submitit


def check_available(kind: str) -> None:
    """Refuse in one line, before anything is made, an executor that cannot run here."""
    import_submitit()
    if kind == "slurm" and shutil.which("srun") is None:
        raise ValueError("--executor slurm: no `srun` on this host's PATH: start the sweep on the cluster's login node "
                         "(or try it here with --executor local)")


def parse_slurm_time(text: str) -> int:
    """``--slurm-time``: minutes, or ``[D-]HH:MM[:SS]`` -> whole minutes (rounded up)."""
    value = str(text).strip()
    try:
        if value.isdigit():
            minutes = int(value)
        else:
            days, _, clock = value.rpartition("-")
            parts = [int(p) for p in clock.split(":")]
            if not 2 <= len(parts) <= 3 or any(p < 0 for p in parts):
                raise ValueError
            h, m, s = (parts + [0])[:3]
            minutes = (int(days) if days else 0) * 1440 + h * 60 + m + (1 if s else 0)
    except ValueError:
        raise ValueError(f"--slurm-time: bad time {text!r}: expected minutes (e.g. 90) or [D-]HH:MM[:SS] (e.g. 02:00:00)") from None
    if minutes < 1:
        raise ValueError(f"--slurm-time: bad time {text!r}: a job needs at least 1 minute")
    return minutes


def parse_slurm_options(items: Optional[list[str]]) -> dict[str, Any]:
    """``--slurm-option KEY=VALUE`` (repeatable; ``KEY`` alone is a flag) -> sbatch's extra parameters."""
    import re

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise ValueError(f"--slurm-option: bad option {item!r}: expected KEY=VALUE, e.g. account=myproject")
        out[key.replace("_", "-")] = value if sep else True
    return out


def slurm_parameters(slurm: dict[str, Any], count: int, name: str) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters from a sweep's recorded ``--slurm-*`` options."""
    params: dict[str, Any] = {"job_name": name, "time": int(slurm["time"]), "array_parallelism": count,
                              "ntasks_per_node": 1, "nodes": 1}
    if slurm.get("partition"):
        params["partition"] = slurm["partition"]
    if slurm.get("gpus_per_task") is not None:
        params["gpus_per_task"] = int(slurm["gpus_per_task"])
    if slurm.get("cpus_per_task"):  # bench/scale/resources.py: the shard's processes, not the partition's default
        params["cpus_per_task"] = int(slurm["cpus_per_task"])
    if slurm.get("mem_mib"):
        params["mem"] = f"{int(slurm['mem_mib'])}M"
    if slurm.get("options"):
        params["additional_parameters"] = dict(slurm["options"])
    return params


@contextmanager
def _bench_importable():
    """The jobs unpickle run_shard_job from bench: put bench's folder on the PYTHONPATH they inherit."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), before]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def make_executor(kind: str, folder: Path, slurm: dict[str, Any], count: int, name: str):
    submitit = import_submitit()
    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as err:  # no srun: not a SLURM host
        raise ValueError(f"--executor slurm: {err}; run the sweep on the cluster's login node (or try --executor local)") from None
    executor.update_parameters(**slurm_parameters(slurm, count, name))
    return executor


def run_submitit_jobs(kind: str, folder: Path, todo: dict[int, list[str]], slurm: dict[str, Any], name: str,
                      on_poll: Optional[Callable[[dict], None]] = None,
                      on_submit: Optional[Callable[[dict[int, str]], None]] = None) -> dict[int, Outcome]:
    """Submit one job per shard (a SLURM job array), wait for them all, return their outcomes.
    ``on_submit`` gets ``{K: job id}`` as soon as the jobs are submitted (the sweep records them then:
    if this waiting process dies, the ids are on disk)."""
    executor = make_executor(kind, folder, slurm, len(todo), name)
    order = sorted(todo)
    # submitit's local executor hides every GPU from its jobs (CUDA_VISIBLE_DEVICES=""): give them the sweep's own view
    env = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")} if kind == "local" else {}
    with _bench_importable():
        jobs = dict(zip(order, executor.map_array(run_shard_job, [todo[k] for k in order], [env] * len(order))))
    if on_submit is not None:
        on_submit({k: str(job.job_id) for k, job in jobs.items()})
    print(f"ae-bench: submitted {len(jobs)} {kind} job(s): {', '.join(str(j.job_id) for j in jobs.values())}; "
          f"their logs: {folder}", file=sys.stderr)
    poll_s = 0.5 if kind == "local" else 15.0
    try:
        while not all(job.done() for job in jobs.values()):
            if on_poll is not None:
                on_poll(jobs)
            time.sleep(poll_s)
    except BaseException:
        if kind == "local":
            for job in jobs.values():
                job.cancel()
        else:
            print("ae-bench: the SLURM jobs keep running (squeue); when they have ended, collect and merge them with "
                  "--resume on the sweep folder", file=sys.stderr)
        raise
    return {k: _outcome(job) for k, job in jobs.items()}


def _outcome(job) -> Outcome:
    try:
        rc = job.result()
        what = describe(rc)
    except Exception as err:  # noqa: BLE001 - submitit's UncompletedJobError/FailedJobError, or a reader error
        rc = None
        what = f"ended without an exit status (the job's process died or was stopped; submitit: {job.state}, " \
               f"{type(err).__name__})"
    return Outcome(rc if isinstance(rc, int) else None, f"job {job.job_id}", what, log_tail(job.stderr(), job.stdout()))
