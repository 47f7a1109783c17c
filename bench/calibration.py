"""A short, fixed calibration recorded with every run: a GEMM and a device copy.

Two runs of the same code on a runner whose clocks drifted differ in these too; the regression
check can divide by them (``--normalize``) so drift does not read as a code change.
"""

from __future__ import annotations

import statistics
import time

import torch

GEMM_N = 1024        # fp32 square GEMM: compute-bound on any device
COPY_MIB = 64        # device-to-device copy: bandwidth-bound
REPEATS = 7


def calibrate(device: torch.device) -> dict[str, float]:
    """Median milliseconds of the fixed GEMM and copy on ``device``."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(GEMM_N, GEMM_N, generator=gen).to(device)
    b = torch.randn(GEMM_N, GEMM_N, generator=gen).to(device)
    src = torch.ones(COPY_MIB * 2**20 // 4, device=device)
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
            "gemm_n": GEMM_N, "copy_mib": COPY_MIB}
