"""The device's GEMM and copy micro-benchmarks: a fixed calibration recorded with every run, and
the measured peaks (compute, bandwidth) of a device that the GPU table does not list.

Both time the same two operations, a square GEMM (compute-bound) and a device-to-device copy
(bandwidth-bound), with :func:`time_op`:

- :func:`calibrate`: the median of a few runs at fixed sizes. Two runs of the same code on a
  runner whose clocks drifted differ in these too; the regression check can divide by them
  (``--normalize``) so drift does not read as a code change.
- :func:`measured_gemm_tflops` / :func:`measured_copy_gbs`: the best of a few runs at large
  sizes, the practical peak a roofline or an MFU is taken against (``bench.trackers.device``).
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Callable

import torch

# fp32 square GEMM, compute-bound: big enough on a GPU that launch overhead is noise (4096^3 is
# about 2 ms on an H200), small enough on a CPU to take well under a second
GEMM_N = {"cuda": 4096, "cpu": 1024}
COPY_MIB = {"cuda": 1024, "cpu": 64}  # device-to-device copy, bandwidth-bound
REPEATS = 7
# the peaks: large enough to reach the device's rate, best of PEAK_REPEATS
PEAK_GEMM_N = {"cuda": 8192, "cpu": 1024}
PEAK_COPY_MIB = 256
PEAK_REPEATS = 4

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def time_op(fn: Callable[[], object], device: torch.device, repeats: int, warmup: bool = True) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, synchronised on ``device`` around each."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def gemm(n: int, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0) -> Callable[[], torch.Tensor]:
    """A square ``n x n`` GEMM on ``device`` (operands drawn from ``seed``): 2 n^3 FLOPs a call."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    return lambda: torch.mm(a, b)


def copy(mib: int, device: torch.device) -> Callable[[], torch.Tensor]:
    """A device-to-device copy of ``mib`` MiB of fp32: 2 x ``mib`` MiB read and written a call."""
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def calibrate(device: torch.device) -> dict[str, float]:
    """Median milliseconds of the fixed GEMM and copy on ``device``."""
    n, mib = GEMM_N.get(device.type, 1024), COPY_MIB.get(device.type, 64)
    gemm_s = time_op(gemm(n, device), device, REPEATS)
    copy_s = time_op(copy(mib, device), device, REPEATS)
    return {"gemm_ms": statistics.median(gemm_s) * 1e3, "copy_ms": statistics.median(copy_s) * 1e3,
            "gemm_n": n, "copy_mib": mib}


@functools.lru_cache(maxsize=None)
def measured_gemm_tflops(device_type: str, dtype: str, n: int = 0) -> float:
    """Best of a few square GEMMs: the practical compute peak of this device for ``dtype``."""
    device = torch.device("cuda" if device_type == "cuda" else "cpu")
    if device_type == "cpu" and dtype == "tf32":
        dtype = "fp32"  # no TF32 on a CPU: an fp32 GEMM is what a tf32 case runs
    n = n or PEAK_GEMM_N.get(device_type, 1024)
    if device_type == "cpu" and dtype == "fp16":
        n = 256  # CPU fp16 GEMM is very slow; a small one still tells its rate
    step = gemm(n, device, DTYPES[dtype])
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        best = min(time_op(step, device, PEAK_REPEATS, warmup=False))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return 2 * n**3 / best / 1e12


@functools.lru_cache(maxsize=None)
def measured_copy_gbs(device_type: str, mib: int = PEAK_COPY_MIB) -> float:
    """Best of a few large device-to-device copies, bytes read + written per second (GB/s)."""
    device = torch.device("cuda" if device_type == "cuda" else "cpu")
    best = min(time_op(copy(mib, device), device, PEAK_REPEATS, warmup=False))
    return 2 * mib * 2**20 / best / 1e9
