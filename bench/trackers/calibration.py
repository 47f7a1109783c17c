"""A short, fixed calibration recorded with every run: a GEMM and a device copy.

Two runs of the same code on a runner whose clocks drifted differ in these too; the regression
check can divide by them (``--normalize``) so drift does not read as a code change.
"""

from __future__ import annotations

import statistics
import time

import torch

# fp32 square GEMM, compute-bound: big enough on a GPU that launch overhead is noise (4096^3 is
# about 2 ms on an H200), small enough on a CPU to take well under a second
GEMM_N = {"cuda": 4096, "cpu": 1024}
COPY_MIB = {"cuda": 1024, "cpu": 64}  # device-to-device copy, bandwidth-bound
REPEATS = 7


def calibrate(device: torch.device) -> dict[str, float]:
    """Median milliseconds of the fixed GEMM and copy on ``device``."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    n, mib = GEMM_N.get(device.type, 1024), COPY_MIB.get(device.type, 64)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)

    def median_ms(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(REPEATS):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return {"gemm_ms": median_ms(lambda: torch.mm(a, b)), "copy_ms": median_ms(lambda: dst.copy_(src)),
            "gemm_n": n, "copy_mib": mib}
