"""The device's GEMM and copy micro-benchmarks: a fixed calibration recorded with every run, and
the measured peaks (compute, bandwidth) of a device that the GPU table does not list.

Both time the same two operations, a square GEMM (compute-bound) and a device-to-device copy
(bandwidth-bound), with :func:`time_op`:

- :func:`calibrate`: the median of a few runs at fixed sizes. Two runs of the same code on a
  runner whose clocks drifted differ in these too; the regression check can divide by them
  (``--normalize``) so drift does not read as a code change.
- :func:`measured_gemm_tflops` / :func:`measured_copy_gbs`: the best of a few runs at large
  sizes, the practical peak a roofline or an MFU is taken against (``bench.trackers.device``).
- :func:`measure_peaks`: what a run records at its start and its end (``bench.core.session``):
  each precision's GEMM peak as the best at several sizes, each timed after a warm-up until it settles
  (:func:`settled_times`, one rule for a CPU and a GPU, the copy peak's too) (a CPU's fp32
  peak needs 2048; its bf16 peak is highest near 1024), every rate measured, their spread, and the
  timer's floor (an empty timed call). A busy minute lowers a peak; it never raises one, so
  :func:`compare_peaks` keeps the higher of the start and the end when they disagree by more
  than ``BUSY_DISAGREEMENT``, and raises a peak that a case outran to that case's rate.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

# fp32 square GEMM, compute-bound: big enough on a GPU that launch overhead is noise (4096^3 is
# about 2 ms on an H200), small enough on a CPU to take well under a second
GEMM_N = {"cuda": 4096, "cpu": 1024}
COPY_MIB = {"cuda": 1024, "cpu": 64}  # device-to-device copy, bandwidth-bound
REPEATS = 7
# the copy peak: large enough to reach the device's bandwidth, best of PEAK_REPEATS
PEAK_COPY_MIB = 256
PEAK_REPEATS = 4
# a run's peaks (measure_peaks): the best at each of these sizes, of at least PEAK_GEMM_REPEATS timed
# calls after a warm-up, repeated until settled (settled_times)
PEAK_GEMM_SIZES = {"cuda": (4096, 8192), "cpu": (512, 1024, 2048)}
PEAK_GEMM_REPEATS = 3
# Settled: the best of the last SETTLE_WINDOW calls is within SETTLE_WITHIN of the best before them (a
# cold cache, a GPU still at idle clocks or a lazily loaded kernel make the first calls slow; a peak
# taken from them reads low and every MFU high), or PEAK_MAX_REPEATS calls were timed.
SETTLE_WINDOW = 3
SETTLE_WITHIN = 0.02
PEAK_MAX_REPEATS = 12
PEAK_SETTLE_S = 2.0  # past the first PEAK_GEMM_REPEATS calls, no more once this many seconds were timed (a slow dtype)
# warm-up before the timed calls: one call, and on a GPU calls for this long (its clocks rise from idle)
PEAK_WARMUP_S = {"cuda": 0.3, "cpu": 0.0}
CPU_FP16_N = 256            # CPU fp16 GEMM is very slow; a small one still tells its rate
BUSY_DISAGREEMENT = 0.20    # start and end peaks further apart than this: the machine was busy
TIMER_FLOOR_REPEATS = 50

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


def settled_times(fn: Callable[[], object], device: torch.device, min_repeats: int = PEAK_GEMM_REPEATS,
                  max_repeats: int = PEAK_MAX_REPEATS, window: int = SETTLE_WINDOW, within: float = SETTLE_WITHIN,
                  max_s: float = PEAK_SETTLE_S) -> list[float]:
    """Seconds of each timed call of ``fn`` for a peak, the same rule on every device: a warm-up (one call,
    and on a GPU ``PEAK_WARMUP_S`` of calls), then calls until the last ``window`` no longer beat the best
    before them by more than ``within``: at least ``min_repeats``, at most ``max_repeats``, and no more
    past ``min_repeats`` once ``max_s`` seconds were timed (a dtype a CPU runs 1000x slower)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    warm_until = time.perf_counter() + PEAK_WARMUP_S.get(device.type, 0.0)
    fn()
    sync()
    while time.perf_counter() < warm_until:
        fn()
        sync()
    times: list[float] = []
    while len(times) < max(1, max_repeats):
        times += time_op(fn, device, 1, warmup=False)
        if len(times) >= min_repeats and sum(times) >= max_s:
            break
        if len(times) >= max(min_repeats, window + 1) and min(times[-window:]) >= (1 - within) * min(times[:-window]):
            break
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
    """Median milliseconds of the fixed GEMM and copy on ``device``.

    On CUDA it runs in a child process (``python -m bench.trackers.calibration cuda:N``), so the
    process that starts a sweep never holds a CUDA context or the ~2.1 GiB of GEMM operands and copy
    buffers for it (they would turn an 8 GB card's cases into false ``oom`` rows, and show in NVML's
    device-wide peaks). Where the child cannot run, here, and its buffers are given back after.
    """
    if device.type == "cuda" and not os.environ.get(_CHILD_ENV):
        found = _calibrate_in_child(device)
        if found is not None:
            return found
    n, mib = GEMM_N.get(device.type, 1024), COPY_MIB.get(device.type, 64)
    try:
        gemm_s = time_op(gemm(n, device), device, REPEATS)  # the operands die with the closure on return ...
        copy_s = time_op(copy(mib, device), device, REPEATS)
    finally:
        release(device)  # ... and the allocator's cache of them goes back to the GPU
    return {"gemm_ms": statistics.median(gemm_s) * 1e3, "copy_ms": statistics.median(copy_s) * 1e3,
            "gemm_n": n, "copy_mib": mib}


_CHILD_ENV = "AE_BENCH_CALIBRATION_CHILD"
CHILD_TIMEOUT_S = 180


def release(device: torch.device) -> None:
    """Give freed micro-benchmark buffers back to the GPU (the caching allocator keeps them otherwise)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _calibrate_in_child(device: torch.device, *args: str) -> Optional[dict[str, float]]:
    """:func:`calibrate` (or, with ``--peaks DTYPES``, :func:`measure_peaks`) in a fresh process; None when
    that process fails (then the caller measures here)."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, _CHILD_ENV: "1", "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-m", "bench.trackers.calibration", str(device), *args], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S, env=env)
        if done.returncode == 0:
            return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        pass
    return None


# (device type, dtype) -> TFLOP/s: the peaks measured when the run started, which every case of the
# run is rated against (set by use_run_peaks in the process that measures the cases)
_RUN_PEAKS: dict[tuple[str, str], float] = {}


def peak_dtype(device_type: str, dtype: str) -> str:
    """The GEMM that stands for ``dtype`` here: no TF32 on a CPU, where a tf32 case runs fp32."""
    return "fp32" if device_type == "cpu" and dtype == "tf32" else dtype


def gemm_peak(device: torch.device, dtype: str, sizes: tuple[int, ...] = (), repeats: int = PEAK_GEMM_REPEATS) -> dict:
    """The best square GEMM at each of ``sizes``, timed after a warm-up until settled (:func:`settled_times`,
    at least ``repeats`` calls): TFLOP/s, every rate measured, and the spread of the best size's rates."""
    dtype = peak_dtype(device.type, dtype)
    if not sizes:
        sizes = (CPU_FP16_N,) if device.type == "cpu" and dtype == "fp16" else PEAK_GEMM_SIZES.get(device.type, (1024,))
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    rates: dict[int, list[float]] = {}
    try:
        for n in sorted(sizes):
            step = gemm(n, device, DTYPES[dtype])
            times = settled_times(step, device, repeats)
            rates[n] = [2 * n**3 / s / 1e12 for s in times]
            del step
            if min(times) > PEAK_SETTLE_S:
                # A dtype this slow here (bf16 on a CPU without bf16 instructions: ~0.5 GFLOP/s) has shown
                # its rate; the next size would take 8x as long per call (minutes) to tell the same figure.
                break
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
        release(device)
    best_n = max(rates, key=lambda n: max(rates[n]))
    best = max(rates[best_n])
    return {"tflops": best, "n": best_n, "repeats": len(rates[best_n]), "tflops_by_n": {str(n): r for n, r in rates.items()},
            "spread_pct": 100 * (best - min(rates[best_n])) / best}


@functools.lru_cache(maxsize=None)
def measured_gemm_tflops(device_type: str, dtype: str, n: int = 0) -> float:
    """The practical compute peak of this device for ``dtype``: the run's start figure where one was
    set (:func:`use_run_peaks`), else the best of a few square GEMMs (:func:`gemm_peak`)."""
    dtype = peak_dtype(device_type, dtype)
    if not n and (device_type, dtype) in _RUN_PEAKS:
        return _RUN_PEAKS[(device_type, dtype)]
    device = torch.device("cuda" if device_type == "cuda" else "cpu")
    return gemm_peak(device, dtype, (n,) if n else (), PEAK_REPEATS if n else PEAK_GEMM_REPEATS)["tflops"]


def use_run_peaks(device_type: str, measured: dict) -> None:
    """Rate this process's cases against ``measured`` (:func:`measure_peaks`'s answer), the run's start figures."""
    for dtype, found in (measured.get("peaks") or {}).items():
        _RUN_PEAKS[(device_type, dtype)] = float(found["tflops"])
    if measured.get("timer_floor_ms") is not None:
        _TIMER_FLOOR_MS[device_type] = float(measured["timer_floor_ms"])
    measured_gemm_tflops.cache_clear()


_TIMER_FLOOR_MS: dict[str, float] = {}


def timer_floor_ms(device: torch.device, repeats: int = TIMER_FLOOR_REPEATS) -> float:
    """The least time the case timer can report: nothing timed as a step is (a pair of CUDA events on
    a GPU, ``perf_counter`` on a CPU), the best of ``repeats``. A step's median below it means the
    timer did not see the work."""
    if device.type not in _TIMER_FLOOR_MS:
        _TIMER_FLOOR_MS[device.type] = _empty_timing_ms(device, repeats)
    return _TIMER_FLOOR_MS[device.type]


def _empty_timing_ms(device: torch.device, repeats: int) -> float:
    if device.type == "cuda":
        with torch.cuda.device(device):
            pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
            torch.cuda.synchronize(device)
            for start, end in pairs:
                start.record()
                end.record()
            torch.cuda.synchronize(device)
            return min(start.elapsed_time(end) for start, end in pairs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def measure_peaks(device: torch.device, dtypes: tuple[str, ...]) -> dict:
    """Each of ``dtypes``' GEMM peak (:func:`gemm_peak`) and the timer's floor; on CUDA in a child
    process, as :func:`calibrate`, so that the sweep's process holds no context for it."""
    dtypes = tuple(dict.fromkeys(peak_dtype(device.type, d) for d in dtypes))
    if device.type == "cuda" and not os.environ.get(_CHILD_ENV):
        found = _calibrate_in_child(device, "--peaks", ",".join(dtypes))
        if found is not None:
            return found
    return {"timer_floor_ms": _empty_timing_ms(device, TIMER_FLOOR_REPEATS), "peaks": {d: gemm_peak(device, d) for d in dtypes}}


def compare_peaks(start: dict, end: dict, achieved: dict[str, tuple[float, str]],
                  threshold: float = BUSY_DISAGREEMENT) -> dict[str, dict]:
    """Per dtype, the peak a run's figures are taken against, from the start and end measurements
    (``{"tflops": ...}`` each, or missing) and the best rate a case achieved (``(TFLOP/s, case id)``).

    The start figure is what the cases were rated against. Where start and end disagree by more
    than ``threshold`` (of the higher), the machine was busy: the higher one is used. A peak below a
    rate a case achieved cannot be a peak: that rate is used, and flagged."""
    out = {}
    for dtype in sorted(set(start) | set(end) | set(achieved)):
        s = (start.get(dtype) or {}).get("tflops")
        e = (end.get(dtype) or {}).get("tflops")
        item: dict = {"start_tflops": s, "end_tflops": e, "busy": False, "raised": False}
        if s is not None and e is not None:
            item["disagreement_pct"] = 100 * abs(s - e) / max(s, e)
            item["busy"] = abs(s - e) > threshold * max(s, e)
        used, used_from = (s, "start") if s is not None else (e, "end")
        if item["busy"] and e > s:
            used, used_from = e, "end"
        rate, case_id = achieved.get(dtype, (None, ""))
        if rate is not None and (used is None or rate > used):
            item.update(raised=True, raised_by=case_id, measured_tflops=used)
            used, used_from = rate, f"the rate {case_id} achieved"
        item.update(used_tflops=used, used_from=used_from)
        out[dtype] = item
    return out


@functools.lru_cache(maxsize=None)
def measured_copy_gbs(device_type: str, mib: int = PEAK_COPY_MIB) -> float:
    """The best large device-to-device copy, timed as the GEMM peak is (:func:`settled_times`): bytes read +
    written per second (GB/s)."""
    device = torch.device("cuda" if device_type == "cuda" else "cpu")
    best = min(settled_times(copy(mib, device), device, PEAK_REPEATS))
    release(device)
    return 2 * mib * 2**20 / best / 1e9


if __name__ == "__main__":  # the child of calibrate() (or of measure_peaks(), --peaks) on CUDA: one JSON line on stdout
    import signal

    if hasattr(signal, "SIGUSR2"):  # a batch job's time-limit warning reaches every process: the run decides, not us
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if sys.argv[2:3] == ["--peaks"]:
        print(json.dumps(measure_peaks(torch.device(sys.argv[1]), tuple(sys.argv[3].split(",")))))
    else:
        print(json.dumps(calibrate(torch.device(sys.argv[1]))))
