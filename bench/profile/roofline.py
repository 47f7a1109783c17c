"""Roofline: how many bytes a step moves, its arithmetic intensity, and where it sits on the roof.

**Bytes moved** (:func:`count_step_bytes`) are counted at the dispatcher over one eager step:
every aten op reads each tensor argument once and writes each output (and each argument it
mutates) once. Views, reshapes that alias, and allocations (``empty*``) move nothing. This is the
traffic of eager PyTorch with no fusion and no cache reuse: one kernel per op, each going to
memory. It overestimates DRAM traffic where tensors stay in cache (small tensors on a CPU's large
caches, a fused kernel's internals on a GPU) and it sees a fused attention kernel's inputs and
outputs only, which is what such a kernel really moves. A tensor counts for the memory it spans
(an expanded, stride-0 tensor is its one row), never more than its elements.

**Intensity** is FLOPs per byte moved. **Placement** (:func:`place`) compares the achieved
FLOP/s (FLOPs over the measured, unprofiled step time) with the roof at that intensity,
``min(peak, intensity * bandwidth)``:

- ``overhead-bound``: achieved below ``OVERHEAD_FRACTION`` (10%) of the roof at its intensity.
  Neither compute nor memory is the limit; the time goes to Python, launches, synchronisation
  and kernels too small to fill the device. Checked first, because the two below would mislead.
- ``memory-bound``: intensity below the ridge point (``peak / bandwidth``), so bandwidth caps it.
- ``compute-bound``: intensity at or above the ridge point.

Units: FLOPs and bytes per step, intensity in FLOP/byte, rates in FLOP/s and bytes/s unless a
name says otherwise (``_tflops``, ``_gbs``).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

OVERHEAD_FRACTION = 0.10  # achieved / roof below this: overhead-bound (the roof is nowhere near reached)
BOUNDS = ("compute-bound", "memory-bound", "overhead-bound")

_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "convolution", "_convolution", "convolution_backward",
               "cudnn_convolution", "mkldnn_convolution", "_scaled_mm"}
_NO_TRAFFIC_OPS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_local_scalar_dense",
                   "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "lift_fresh", "detach",
                   "set_", "resize_"}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor spans in memory: its elements, or fewer where strides repeat them (expand)."""
    if t.numel() == 0:
        return 0
    span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)
    return min(t.numel(), span) * t.element_size()


def _is_view(func) -> bool:
    """An op whose every output aliases an input without writing it (view, transpose, unbind ...)."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


@dataclass
class ByteCount:
    total: float = 0.0          # bytes read + written per step
    matmul: float = 0.0         # of which by matmuls and convolutions (forward and backward)
    ops: int = 0                # ops that moved bytes


class _ByteCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = ByteCount()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.scaled_dot_product_attention.default:
            # Under inference_mode SDPA arrives whole, before it picks a kernel (see
            # ae_models.attention._OpRecorder): run its body here so the kernel it picks is counted.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        name = func.__name__.split(".")[0]
        if name in _NO_TRAFFIC_OPS or _is_view(func):
            return out
        written = [args[i] if i < len(args) else kwargs.get(arg.name) for i, arg in enumerate(func._schema.arguments)
                   if arg.alias_info is not None and arg.alias_info.is_write]  # in-place and out= arguments
        reads = _unique_tensors(tree_leaves((args, kwargs)))
        writes = _unique_tensors(tree_leaves(out) + tree_leaves(written))
        moved = sum(tensor_bytes(t) for t in reads) + sum(tensor_bytes(t) for t in writes)
        self.count.total += moved
        self.count.ops += 1
        if name in _MATMUL_OPS:
            self.count.matmul += moved
        return out


def _unique_tensors(items: Iterable[Any]) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for item in items:
        if isinstance(item, torch.Tensor):
            seen.setdefault(id(item), item)
    return list(seen.values())


def count_step_bytes(step: Callable[[], object]) -> ByteCount:
    """Run ``step`` once (eager, never during timing) and count the bytes its ops move."""
    counter = _ByteCounter()
    with counter:
        step()
    return counter.count


@dataclass
class Placement:
    flops: float                 # FLOPs per step
    bytes_moved: float           # bytes per step
    seconds: float               # measured step time (s)
    intensity: float             # FLOP/byte
    achieved_flops: float        # FLOP/s
    peak_flops: float            # FLOP/s, compute roof for the precision
    bandwidth: float             # bytes/s, memory roof's slope
    ridge: float                 # FLOP/byte where the two roofs meet
    roof_flops: float            # FLOP/s attainable at this intensity
    fraction_of_roof: float      # achieved / roof
    bound: str                   # one of BOUNDS

    def as_dict(self) -> dict:
        return asdict(self)


def roof(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """Attainable FLOP/s at ``intensity`` FLOP/byte: ``min(peak, intensity * bandwidth)``."""
    return min(peak_flops, intensity * bandwidth)


def classify(intensity: float, achieved_flops: float, peak_flops: float, bandwidth: float,
             overhead_fraction: float = OVERHEAD_FRACTION) -> str:
    """``overhead-bound`` when far below the roof, else ``memory-`` or ``compute-bound`` by the ridge."""
    attainable = roof(intensity, peak_flops, bandwidth)
    if attainable <= 0 or achieved_flops < overhead_fraction * attainable:
        return "overhead-bound"
    return "memory-bound" if intensity < peak_flops / bandwidth else "compute-bound"


def place(flops: float, bytes_moved: float, seconds: float, peak_tflops: float, bandwidth_gbs: float) -> Placement:
    """Place a step (``flops`` and ``bytes_moved`` per step, run in ``seconds``) on the device roofline."""
    if flops <= 0 or bytes_moved <= 0 or seconds <= 0:
        raise ValueError(f"cannot place a step with flops={flops}, bytes={bytes_moved}, seconds={seconds}: all must be positive")
    if peak_tflops <= 0 or bandwidth_gbs <= 0:
        raise ValueError(f"cannot draw a roof with peak {peak_tflops} TFLOP/s and bandwidth {bandwidth_gbs} GB/s")
    peak, bandwidth = peak_tflops * 1e12, bandwidth_gbs * 1e9
    intensity = flops / bytes_moved
    achieved = flops / seconds
    attainable = roof(intensity, peak, bandwidth)
    return Placement(flops=flops, bytes_moved=bytes_moved, seconds=seconds, intensity=intensity, achieved_flops=achieved,
                     peak_flops=peak, bandwidth=bandwidth, ridge=peak / bandwidth, roof_flops=attainable,
                     fraction_of_roof=achieved / attainable, bound=classify(intensity, achieved, peak, bandwidth))


@dataclass
class RoofPoint:
    label: str
    intensity: float        # FLOP/byte
    achieved_flops: float   # FLOP/s
    roof_key: str           # which roof it belongs to (its precision's)
    bound: str


@dataclass
class Roof:
    key: str                # e.g. "fp32"
    peak_flops: float       # FLOP/s
    bandwidth: float        # bytes/s
    source: str


_BOUND_MARKERS = {"compute-bound": "o", "memory-bound": "s", "overhead-bound": "v"}


def roofline_png(points: list[RoofPoint], roofs: list[Roof], title: str) -> Optional[bytes]:
    """The device's roofs (one per precision) and each case as a point; PNG bytes, None if empty.

    Drawn on a ``matplotlib.figure.Figure`` (Agg, no pyplot state), log-log: intensity in
    FLOP/byte, attained rate in GFLOP/s.
    """
    from matplotlib.figure import Figure

    if not points or not roofs:
        return None
    xs = [p.intensity for p in points] + [r.peak_flops / r.bandwidth for r in roofs]
    lo, hi = min(xs) / 4, max(xs) * 4
    fig = Figure(figsize=(9.5, 5.8), layout="constrained")
    ax = fig.subplots()
    colors = {}
    for i, r in enumerate(roofs):
        color = f"C{i}"
        colors[r.key] = color
        ridge = r.peak_flops / r.bandwidth
        grid = [lo * (hi / lo) ** (k / 200) for k in range(201)]
        ax.plot(grid, [roof(x, r.peak_flops, r.bandwidth) / 1e9 for x in grid], color=color, linewidth=2,
                label=f"roof {r.key}: {r.peak_flops / 1e9:,.0f} GFLOP/s, {r.bandwidth / 1e9:,.0f} GB/s")
        ax.axvline(ridge, color=color, linestyle=":", linewidth=1)
        ax.plot(grid, [OVERHEAD_FRACTION * roof(x, r.peak_flops, r.bandwidth) / 1e9 for x in grid], color=color,
                linestyle="--", linewidth=0.8, alpha=0.6)
    for j, p in enumerate(points):
        ax.scatter([p.intensity], [p.achieved_flops / 1e9], color=colors.get(p.roof_key, "black"),
                   marker=_BOUND_MARKERS.get(p.bound, "x"), s=50, zorder=3)
        ax.annotate(f"{j + 1}", (p.intensity, p.achieved_flops / 1e9), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):  # 1, 2, 5, 10, 20, ... in plain numbers; no "3x10^0 4x10^0" minor labels
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)
    ymin = min(min(p.achieved_flops for p in points), min(OVERHEAD_FRACTION * roof(lo, r.peak_flops, r.bandwidth) for r in roofs))
    ymax = max(r.peak_flops for r in roofs)
    ax.set_ylim(ymin / 1e9 / 3, ymax / 1e9 * 3)
    ax.set_xlabel("arithmetic intensity (FLOP/byte moved, eager per-op traffic)")
    ax.set_ylabel("attained GFLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    # the legend: roofs, what the line styles mean, then the numbered cases with their verdict
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", linestyle=":"), Line2D([], [], color="grey", linestyle="--")]
    labels += ["ridge point (peak / bandwidth)", f"{OVERHEAD_FRACTION:.0%} of the roof: below it, overhead-bound"]
    for j, p in enumerate(points):
        handles.append(Line2D([], [], color=colors.get(p.roof_key, "black"), marker=_BOUND_MARKERS.get(p.bound, "x"), linestyle=""))
        labels.append(f"{j + 1}: {p.label} ({p.bound})")
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def format_rate(flops_per_s: float) -> str:
    """``1.23 TFLOP/s`` or ``45.6 GFLOP/s``."""
    if not math.isfinite(flops_per_s):
        return "—"
    return f"{flops_per_s / 1e12:.3g} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.3g} GFLOP/s"
