"""The device under test: its facts, and its peak compute and bandwidth per precision.

Peaks come from ``data/gpus.toml`` (datasheet or derived figures, each with its source) for known
GPUs; for a CPU or an unlisted GPU they are measured with a large GEMM and a large copy
(``bench.trackers.calibration``), and the row says so (``peak_source``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from bench.trackers.calibration import measured_copy_gbs, measured_gemm_tflops
from bench.trackers.gpu_table import GPU_TABLE, PEAK_DTYPE, gpu_table, lookup_gpu  # noqa: F401 (re-exported)
from bench.trackers.nvml import NVML



@dataclass
class DeviceFacts:
    type: str                       # "cuda" or "cpu"
    name: str                       # "NVIDIA H200", or the CPU model
    index: int = 0
    total_memory_mib: float = 0.0   # device memory (GPU) or system memory (CPU)
    capability: str = ""            # CUDA compute capability, "9.0"
    driver: str = ""
    cuda: str = ""
    cudnn: str = ""
    torch: str = torch.__version__
    python: str = platform.python_version()
    threads: int = 0                # torch intra-op threads (CPU)
    nvml: str = ""                  # "ok" or why NVML is unavailable
    extra: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """Folder-safe name, e.g. ``nvidia-h200`` or ``cpu-2c-intel-xeon``."""
        if self.type == "cuda":
            base = self.name
        else:
            base = f"cpu {os.cpu_count()}c {' '.join(self.name.split()[:3])}"
        return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["slug"] = self.slug
        return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _system_memory_mib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        return 0.0


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(f"bad device {requested!r}: expected auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device type {device.type!r}: expected cpu or cuda")
    return device


def cuda_scope(device: torch.device) -> contextlib.AbstractContextManager:
    """Make ``device`` the current CUDA device while a case runs, so that CUDA events, the current
    stream, capability queries and library handles are those of ``cuda:N``, not of ``cuda:0``;
    nothing on a CPU. (Entered in the process that measures, never in a parent that only launches.)"""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def device_facts(device: torch.device) -> DeviceFacts:
    if device.type == "cuda":
        index = device.index or 0
        NVML.get().record_baseline(index)  # before torch initialises CUDA here: what the GPU held without this process
        props = torch.cuda.get_device_properties(index)
        facts = DeviceFacts(
            type="cuda", name=props.name, index=index, total_memory_mib=props.total_memory / 2**20,
            capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda or "",
            cudnn=str(torch.backends.cudnn.version() or ""), threads=torch.get_num_threads(),
        )
        nvml = NVML.get()
        facts.nvml = "ok" if nvml.available else nvml.reason
        if nvml.available:
            facts.driver = nvml.driver_version()
        return facts
    return DeviceFacts(type="cpu", name=cpu_model(), total_memory_mib=_system_memory_mib(), threads=torch.get_num_threads(),
                       nvml=NVML.get().reason or "no GPU")


def _cpu_idle_total() -> tuple[int, int]:
    """The machine's idle and total CPU time so far (clock ticks, all cores), from ``/proc/stat``."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[3] + ticks[4], sum(ticks)


def cpu_load(window_s: float = 0.25) -> dict:
    """How busy the machine is as a CPU run starts: the cores other processes keep busy, sampled over
    ``window_s`` while this process sleeps (``/proc/stat``: the 1-minute load average lags a minute
    behind and counts this run's own start), the 1-minute load average for the record, the cores this
    process may run on, and torch's thread count. Empty where the system reports neither."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load: dict = {}
    try:
        load["load_1min"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    try:
        idle0, total0 = _cpu_idle_total()
        time.sleep(window_s)
        idle1, total1 = _cpu_idle_total()
        if total1 > total0:
            load["busy_cores"] = round((os.cpu_count() or cores) * (1 - (idle1 - idle0) / (total1 - total0)), 2)
    except (OSError, ValueError, IndexError):
        pass
    return {**load, "cores": cores, "threads": torch.get_num_threads()} if load else {}


def oversubscribed(load: dict) -> str:
    """A warning when torch's threads cannot each have a free core (``load`` from :func:`cpu_load`: the
    cores other processes kept busy, else the load average), else "". OpenMP threads wait for each other
    at every parallel loop, so one thread without a core slows every step many times over (measured on
    2 cores with one kept busy: a tiny CNN step 760 ms with 2 threads, 16 ms with 1), and the figures
    then describe the other work, not the model."""
    busy = load.get("busy_cores", load.get("load_1min")) if load else None
    if busy is None or load["threads"] <= 1:
        return ""
    free = load["cores"] - busy
    if free >= load["threads"] - 0.5:
        return ""
    fits = max(1, int(free + 0.5))
    return (f"warning: other processes keep {busy:.1f} of this machine's {load['cores']} cores busy, so torch's "
            f"{load['threads']} threads will not each have a core; they wait for each other at every operation "
            f"and steps can be many times slower. Run on a quiet machine, or set OMP_NUM_THREADS={fits} "
            "(and the same for any run compared with this one)")


@dataclass
class Peak:
    tflops: float
    source: str
    bandwidth_gbs: float = 0.0


def peak_for(facts: DeviceFacts, precision: str) -> Peak:
    """Peak TFLOP/s for ``precision`` on this device, and where the figure comes from."""
    dtype = PEAK_DTYPE[precision]
    unlisted = ""
    if facts.type == "cuda":
        entry = lookup_gpu(facts.name)
        if entry is not None:
            return Peak(float(entry[dtype]), f"table: {entry['name']} ({entry['source']})", float(entry["bandwidth_gbs"]))
        unlisted = f" ({facts.name!r} is not in {GPU_TABLE.parent.name}/{GPU_TABLE.name})"
    tflops = measured_gemm_tflops(facts.type, dtype)
    return Peak(tflops, f"measured: {dtype} GEMM on this {facts.type}{unlisted}", measured_copy_gbs(facts.type))
