"""What one SLURM job of a sweep asks for: GPUs, CPU cores and host memory, from what its shard runs.

A partition's defaults are often one core and a few GB, while a shard is several processes:

- on a GPU, up to three torch processes at once: the run itself, the child that measures each case
  (the subprocess launcher, ``bench/core/launchers.py``) and a calibration child; each loads the
  CUDA libraries and makes a context in host memory, and each keeps a core busy launching kernels;
- on a CPU, one process measures in-process with as many torch threads as the job has cores, and
  the tensors of a step live in host memory.

Defaults (each overridable with ``--slurm-cpus-per-task`` / ``--slurm-mem``):

- GPU shard: :data:`CORES_PER_PROCESS` x 3 processes = 6 cores, :data:`HOST_MIB_PER_CUDA_PROCESS`
  x 3 = 12 GiB;
- CPU shard: :data:`CPU_SHARD_CORES` cores (a fixed count, so every shard times on the same
  threads) and :data:`CPU_SHARD_MIB`.

These are allowances, not measurements (no cluster measured them): round figures with room to
spare, because a job over its memory is killed and its cases lost, while a job that asks for a
little too much only waits a little longer in the queue. Measure yours (``sacct -j JOB -o
MaxRSS,TotalCPU``) and pass the options.

A shard measures on one GPU (``cuda:0`` of its job): a job asking for more would leave the others
idle, so more than one GPU per shard is refused; give more shards instead.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from bench.units import MIB, parse_bytes

GPU_PROCESSES = 3               # the run, a case's child, a calibration child
CORES_PER_PROCESS = 2           # one launching kernels, one for the NVML sampler thread and host copies
HOST_MIB_PER_CUDA_PROCESS = 4096  # an allowance per CUDA torch process (libraries, context, host tensors)
CPU_SHARD_CORES = 8
CPU_SHARD_MIB = 16384


def gpus_asked(slurm: dict[str, Any]) -> int:
    """The GPUs a job asks for: ``--slurm-gpus-per-task``, or a ``gres=gpu[:TYPE]:N`` / ``gpus[-per-task]=N``
    given with ``--slurm-option`` (a cluster that schedules GPUs by gres alone)."""
    if slurm.get("gpus_per_task") is not None:
        return int(slurm["gpus_per_task"])
    options = slurm.get("options") or {}
    for key in ("gpus-per-task", "gpus", "gpus-per-node"):
        if key in options:
            match = re.search(r"(\d+)\s*$", str(options[key]))
            return int(match.group(1)) if match else 1
    gres = str(options.get("gres") or "")
    match = re.search(r"(?:^|,)gpu(?::[\w.-]+)?(?::(\d+))?(?:,|$)", gres)
    if match:
        return int(match.group(1) or 1)
    return 0


def check_gpus(slurm: dict[str, Any]) -> int:
    """The GPUs per shard (0 or 1); ValueError in one line for more."""
    gpus = gpus_asked(slurm)
    if gpus > 1:
        raise ValueError(f"--slurm-gpus-per-task: {gpus} GPUs per job: a shard measures on one GPU (cuda:0 of its job), "
                         "so the others would sit idle; ask for 1 and give more --shards (one job each)")
    return gpus


def default_resources(gpus: int) -> tuple[int, int]:
    """(cores, MiB of host memory) a job of a shard on ``gpus`` GPUs (0: a CPU) asks for by default."""
    if gpus:
        return CORES_PER_PROCESS * GPU_PROCESSES, HOST_MIB_PER_CUDA_PROCESS * GPU_PROCESSES
    return CPU_SHARD_CORES, CPU_SHARD_MIB


def job_resources(slurm: dict[str, Any], cpus: Optional[int], mem: Optional[str]) -> dict[str, Any]:
    """``{"cpus_per_task", "mem_mib"}``: the options given, else :func:`default_resources`. ValueError on bad input."""
    cores, mib = default_resources(check_gpus(slurm))
    if cpus is not None:
        if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
            raise ValueError(f"--slurm-cpus-per-task: bad count {cpus!r}: expected a whole number >= 1")
        cores = cpus
    if mem is not None:
        mib = -(-parse_bytes(mem, "--slurm-mem") // MIB)
        if mib < 1:
            raise ValueError(f"--slurm-mem: bad memory size {mem!r}: a job needs some memory, e.g. 16GiB")
    return {"cpus_per_task": cores, "mem_mib": int(mib)}
