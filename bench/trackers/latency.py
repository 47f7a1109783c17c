"""Timing: per-iteration samples and their statistics.

On CUDA each iteration is bracketed by CUDA events, so the asynchronous work is what gets timed;
on CPU a monotonic clock. Warm-up is run before and never enters the samples.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

NOISE_THRESHOLD = 0.10  # IQR / median above this: the spread is too wide to trust small differences


@dataclass
class LatencyStats:
    iters: int
    median_ms: float
    mean_ms: float
    iqr_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    cv: float
    noisy: bool

    def as_dict(self) -> dict:
        return asdict(self)


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_s: list[float], noise_threshold: float = NOISE_THRESHOLD) -> LatencyStats:
    """Statistics of per-iteration times given in seconds; results in ms."""
    if not samples_s:
        raise ValueError("no timing samples to summarise")
    ms = sorted(s * 1e3 for s in samples_s)
    median = quantile(ms, 0.5)
    mean = statistics.fmean(ms)
    iqr = quantile(ms, 0.75) - quantile(ms, 0.25)
    std = statistics.stdev(ms) if len(ms) > 1 else 0.0
    return LatencyStats(
        iters=len(ms), median_ms=median, mean_ms=mean, iqr_ms=iqr, p10_ms=quantile(ms, 0.10), p90_ms=quantile(ms, 0.90),
        min_ms=ms[0], cv=std / mean if mean else 0.0, noisy=bool(median and iqr / median > noise_threshold),
    )


def plan_iterations(step_s: float, min_iters: int, max_iters: int, min_time_s: float) -> int:
    """Enough iterations to fill ``min_time_s``, within ``[min_iters, max_iters]``."""
    wanted = math.ceil(min_time_s / step_s) if step_s > 0 else max_iters
    return max(min_iters, min(max_iters, wanted))


def time_steps(step: Callable[[], object], device: torch.device, iters: int) -> tuple[list[float], str]:
    """Run ``step`` ``iters`` times; return per-iteration seconds and the timer's name.

    CUDA: each iteration between two events recorded on ``device``'s current stream, the stream the
    step's kernels go to (with ``device`` made current, so ``cuda:1`` times ``cuda:1``, not ``cuda:0``).
    """
    if device.type == "cuda":
        import torch

        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device)
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
            torch.cuda.synchronize(device)
            for start, end in zip(starts, ends):
                start.record(stream)
                step()
                end.record(stream)
            torch.cuda.synchronize(device)
            return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)], "cuda-events"
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
    return samples, "perf-counter"
