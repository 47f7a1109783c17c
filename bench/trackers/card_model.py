"""The card model: a step's time on a device predicted from what the run counted, not measured there.

A roofline bound. A step of ``batch`` images does ``gflop_per_image x batch`` GFLOP (the FLOPs the
run counted, ``gflop_per_image``) and moves at least ``BYTES_PER_LIVE_BYTE x`` its live tensors'
peak (every byte the step keeps alive is written once and read once; the run measured that peak,
or the memory model predicts it). Its time is the larger of the two bounds::

    step_s = max(flops / peak[precision's dtype], bytes / bandwidth)

against a GPU's datasheet figures in ``data/gpus.toml`` (:func:`card_for_target`) or the host's
measured GEMM peaks and copy bandwidth from ``meta.json`` (:func:`host_card`, which is how the
method is checked on the machine that ran: predicted against measured speed). Kernel launches,
host overhead and the cache are not modelled: it is a lower bound on the time, an upper bound on
images/s, and it ranks configurations by the work and traffic each one needs on that card.

Which kernels and dtypes the card runs (flash attention, bf16: compute capability 8.0+) is judged
by the plan (``bench.plan.budget.cuda_target_skip`` with the card's ``capability``), so a
configuration the card cannot run never reaches this model. Torch-free: the report uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from bench.trackers.gpu_table import PEAK_DTYPE, lookup_gpu

BYTES_PER_LIVE_BYTE = 2.0   # each live byte written once and read once: the least traffic a step can have
MIB = 2**20


@dataclass(frozen=True)
class Card:
    """A device as the model sees it: peak TFLOP/s per dtype (fp32, tf32, fp16, bf16) and GB/s."""

    name: str
    peaks_tflops: dict = field(hash=False)
    bandwidth_gbs: float
    capability: str = ""          # CUDA compute capability ("8.9"); "" for a host CPU
    source: str = ""

    @property
    def label(self) -> str:
        return f"predicted on {self.name}"


def card_for_target(target: str) -> Optional[Card]:
    """The card a plan's ``target`` names ("NVIDIA GeForce RTX 4060 (8.00 GiB)"), or ``None`` when it names
    no GPU of ``data/gpus.toml`` (a bare budget, "8.00 GiB card")."""
    entry = lookup_gpu(str(target or "").split(" (")[0])
    if entry is None:
        return None
    peaks = {d: float(entry[d]) for d in ("fp32", "tf32", "fp16", "bf16") if d in entry}
    return Card(entry["name"], peaks, float(entry["bandwidth_gbs"]), str(entry.get("capability", "")),
                f"data/gpus.toml: {entry['source']}")


def host_card(meta: dict) -> Optional[Card]:
    """This run's own device as the model sees it: the GEMM peaks the run measured (the settled figure, else
    the start's) and the bandwidth of its calibration copy (``copy_mib`` read and written in ``copy_ms``).
    ``None`` when ``meta.json`` holds no measured peak or copy (a listed GPU uses the table)."""
    peaks_meta = meta.get("peaks") or {}
    settled = peaks_meta.get("settled") or {}
    start = (peaks_meta.get("start") or {}).get("peaks") or {}
    peaks = {}
    for dtype in set(settled) | set(start):
        value = (settled.get(dtype) or {}).get("used_tflops") or (start.get(dtype) or {}).get("tflops")
        if isinstance(value, (int, float)) and value > 0:
            peaks[dtype] = float(value)
    calibration = meta.get("calibration") or {}
    copy_ms, copy_mib = calibration.get("copy_ms"), calibration.get("copy_mib")
    if not peaks or not copy_ms or not copy_mib:
        return None
    bandwidth = 2 * copy_mib * MIB / (copy_ms / 1e3) / 1e9
    name = (meta.get("device") or {}).get("name") or "this host"
    return Card(name, peaks, bandwidth, "", "measured at the run's start: GEMM peaks and a copy (meta.json)")


def step_seconds(card: Card, precision: str, gflop_per_image: float, tensor_mib: float, batch: float) -> float:
    """Predicted seconds for one step of ``batch`` images; ``nan`` when a figure is missing or the card has no
    peak for the precision's dtype."""
    dtype = PEAK_DTYPE.get(precision, "")
    peak = card.peaks_tflops.get(dtype) or (card.peaks_tflops.get("fp32") if dtype == "tf32" else None)
    if not peak or not all(_finite(v) and v > 0 for v in (gflop_per_image, tensor_mib, batch)):
        return math.nan
    compute_s = gflop_per_image * 1e9 * batch / (peak * 1e12)
    memory_s = BYTES_PER_LIVE_BYTE * tensor_mib * MIB / (card.bandwidth_gbs * 1e9)
    return max(compute_s, memory_s)


def images_per_s(card: Card, precision: str, gflop_per_image: float, tensor_mib: float, batch: float) -> float:
    """Predicted images/s at ``batch`` (``tensor_mib``: the live tensors' peak at that batch, MiB)."""
    seconds = step_seconds(card, precision, gflop_per_image, tensor_mib, batch)
    return batch / seconds if _finite(seconds) and seconds > 0 else math.nan


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
