"""Where a profiled step's time goes: categories, module scopes, and the attribution of every
profiler event's self time to one category.

Time is *self* time (CPU: ``self_cpu_time_total``; CUDA: the device time of the kernels an op
launched itself), so nothing is counted twice. :func:`labelled` wraps the forward of every module
of a known kind in a ``record_function("ae.<category>: <module name>")`` scope (pre-hook enters,
post-hook leaves); the innermost scope wins. :func:`event_category` then walks up an event's
parents:

1. under ``Optimizer.step``/``zero_grad`` (PyTorch's own scopes) or a GradScaler op: optimizer;
2. under an attention kernel op (``*scaled_dot_product*``, ``*flash_attention*``, ...): attention;
3. a cast (``aten::to``/``_to_copy``) anywhere between it and its scope, or an outermost op that
   only moves data (copy, clone, contiguous, reshape, cat, stack, pad): data movement;
4. the nearest module scope's category;
5. in backward, the autograd node it runs under: ``autograd::engine::evaluate_function: X``
   carries the sequence number of the forward op that created node X, so backward time goes to
   that forward op's category (nodes that only move data -- clone, cast, cat, stack, unbind,
   pad, slice -- go to data movement). Checkpointed blocks recompute their forward inside
   backward, under their own scopes again, and are labelled directly;
6. the self time of the scopes themselves (``ae.step`` around each step and the module scopes) is
   Python and framework time between ops: host overhead;
7. anything else (the loss, residual adds, position embeddings, gradient accumulation, and on
   CUDA kernels no op claims): other. Nothing is dropped.

Limits: a module kind not listed in :func:`module_category` is ``other`` (or its caller's
category); a backward node's engine bookkeeping counts with its category; compiled models get no
scopes (dynamo would trace the hooks), so their time lands in other/optimizer/data movement.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import pandas as pd
import torch.nn as nn
from torch.autograd import DeviceType
from torch.profiler import record_function

from ae_models.attention import kernels_from_ops
from ae_models.layers import Attention, Mlp
from bench.trackers.flops import is_attention_kernel, is_attention_module
from bench.units import MIB

TOP_OPS = 25  # rows of the top-operator table

# category -> what it holds; the tables keep this order
CATEGORIES: dict[str, str] = {
    "attention": "attention core: QK^T, softmax and PV, or the fused SDPA kernel; forward and backward",
    "qkv/proj": "the attention's QKV and output projections (Linear)",
    "mlp": "the MLP's fc1/fc2 matmuls (and its dropout)",
    "activation": "GELU / ReLU modules",
    "norm": "LayerNorm and BatchNorm",
    "embed/conv": "patch embedding and pixel head (Linear), the flat model's input/output projections, convolutions",
    "latent": "the to/from-latent projections and any other Linear layer",
    "optimizer": "optimizer.step and zero_grad (AdamW's foreach kernels), GradScaler",
    "data movement": "copies, dtype casts (autocast's too), contiguous/reshape copies, cat/stack/unbind/pad, and their backward",
    "host overhead": "Python and framework time inside the step but outside every op (self time of the scopes)",
    "other": "everything else: the loss, residual adds, position embeddings, gradient accumulation, unclaimed kernels",
    "idle": "CUDA only: wall time with no kernel running (the GPU waiting for the host)",
}

LABEL_PREFIX = "ae."
STEP_LABEL = "ae.step"
NODE_PREFIX = "autograd::engine::evaluate_function: "
_EMBED_NAMES = {"patch_embed", "head", "input_proj", "output_proj"}
_ACTIVATIONS = (nn.GELU, nn.ReLU, nn.SiLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.RMSNorm)
_CONVS = (nn.modules.conv._ConvNd,)
_CAST_OPS = {"aten::to", "aten::_to_copy"}
_DATA_MOVEMENT_OPS = _CAST_OPS | {"aten::copy_", "aten::clone", "aten::contiguous", "aten::reshape", "aten::cat",
                                  "aten::stack", "aten::pad", "aten::constant_pad_nd"}
_DATA_MOVEMENT_NODES = {"CloneBackward0", "ToCopyBackward0", "CatBackward0", "StackBackward0", "UnbindBackward0",
                        "ConstantPadNdBackward0", "SliceBackward0", "CopyBackwards"}


# -- module scopes ------------------------------------------------------------------------------

def module_category(name: str, module: nn.Module, parent: Optional[nn.Module]) -> Optional[str]:
    """The category of a module's own forward, or None for a module that is not labelled."""
    leaf = name.rsplit(".", 1)[-1]
    if is_attention_module(module):
        return "attention"
    if isinstance(module, Mlp):
        return "mlp"
    if isinstance(module, _ACTIVATIONS):
        return "activation"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, _CONVS):
        return "embed/conv"
    if isinstance(module, nn.Linear):
        if isinstance(parent, Attention):
            return "qkv/proj"
        if isinstance(parent, Mlp):
            return "mlp"
        return "embed/conv" if leaf in _EMBED_NAMES else "latent"
    return None


@contextlib.contextmanager
def labelled(model: nn.Module) -> Iterator[int]:
    """Wrap the forward of every categorised module in a profiler scope; yields how many.

    The post-hook runs even when forward raises (``always_call``), so scopes never leak.
    """
    modules = dict(model.named_modules())
    handles = []
    for name, module in modules.items():
        parent = modules.get(name.rsplit(".", 1)[0]) if "." in name else (model if name else None)
        category = module_category(name, module, parent)
        if category is None:
            continue
        label = f"{LABEL_PREFIX}{category}: {name}"
        stack: list = []

        def enter(_module, _args, label=label, stack=stack):
            scope = record_function(label)
            scope.__enter__()
            stack.append(scope)

        def leave(_module, _args, _out, stack=stack):
            if stack:
                stack.pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        yield len(handles) // 2
    finally:
        for handle in handles:
            handle.remove()


# -- attribution ----------------------------------------------------------------------------------

def _label_category(name: str) -> str:
    return name[len(LABEL_PREFIX):].split(":", 1)[0]


def event_category(event, node_categories: dict[tuple[int, int], str]) -> str:
    """The category of ``event``'s self time (rules in the module docstring)."""
    name = event.name
    if name == STEP_LABEL or name.startswith(LABEL_PREFIX):
        return "host overhead"
    top: Optional[str] = None  # outermost aten op below the nearest scope or node
    cast = False
    node = event
    while node is not None:
        n = node.name
        if n.startswith("Optimizer.") or n.startswith("aten::_amp_"):
            return "optimizer"
        if is_attention_kernel(n):  # the one rule, shared with the FLOP counter (trackers/flops.py)
            return "attention"
        if n.startswith(LABEL_PREFIX):
            if cast or top in _DATA_MOVEMENT_OPS:
                return "data movement"
            return "other" if n == STEP_LABEL else _label_category(n)
        if n.startswith(NODE_PREFIX):
            if cast or top in _DATA_MOVEMENT_OPS or n[len(NODE_PREFIX):] in _DATA_MOVEMENT_NODES:
                return "data movement"
            return node_categories.get((node.fwd_thread, node.sequence_nr), "other")
        if n.startswith("aten::"):
            top = n
            cast = cast or n in _CAST_OPS
        node = node.cpu_parent
    return "data movement" if (cast or top in _DATA_MOVEMENT_OPS) else "other"


def _by_start(events: Iterable) -> list:
    return sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end))


def forward_node_categories(events: Iterable) -> dict[tuple[int, int], str]:
    """(forward thread, sequence number) -> category of the forward op that created that autograd node.

    Ops that create no node share the next node's number, so the last op (by start time) with a
    number is the one that created its node.
    """
    out: dict[tuple[int, int], str] = {}
    for event in _by_start(events):
        if event.sequence_nr >= 0 and event.name.startswith("aten::") and event.device_type == DeviceType.CPU:
            out[(event.thread, event.sequence_nr)] = event_category(event, out)
    return out


@dataclass
class Attribution:
    ms: dict[str, float]              # category -> ms over all recorded steps (self time)
    op_names: set[str]                # every op name seen (for naming the attention kernel)
    basis: str                        # "self CPU time" or "self device time"
    unclaimed_ms: float = 0.0         # CUDA: kernel time no op claims (in "other")


def is_device_event(event) -> bool:
    return event.device_type != DeviceType.CPU


def own_time_us(event, on_device: bool) -> float:
    """The event's self time in µs on the chosen clock; 0 for what that clock does not count."""
    if event.is_async or event.name.startswith("ProfilerStep"):
        return 0.0  # the profiler's own step marker: bookkeeping between steps, outside the timed steps
    if on_device:
        return 0.0 if is_device_event(event) else float(event.self_device_time_total)
    return 0.0 if is_device_event(event) else float(event.self_cpu_time_total)


def attribute(events: list, on_device: bool) -> Attribution:
    """Self time per category over ``events`` (one profiled window), in ms."""
    nodes = forward_node_categories(events)
    ms: dict[str, float] = defaultdict(float)
    names = set()
    claimed_us = 0.0
    for event in events:
        names.add(event.name)
        us = own_time_us(event, on_device)
        if us:
            ms[event_category(event, nodes)] += us / 1e3
            claimed_us += us
    unclaimed = 0.0
    if on_device:
        kernels_us = sum(e.time_range.end - e.time_range.start for e in events if is_device_event(e) and not e.is_async)
        unclaimed = max(0.0, kernels_us - claimed_us) / 1e3
        ms["other"] += unclaimed
    return Attribution(dict(ms), names, "self device time" if on_device else "self CPU time", unclaimed)


def attention_kernel(op_names: Iterable[str]) -> str:
    """The attention kernel(s) the profiled steps ran, e.g. ``flash`` or ``eager``; ``""`` for none."""
    bare = {n.split("::", 1)[-1] for n in op_names if n.startswith("aten::")}
    return "+".join(kernels_from_ops(bare, "scaled_dot_product_attention" in bare))


def category_table(attribution: Attribution, steps: int, wall_ms: float, kernel: str) -> pd.DataFrame:
    """One row per category: ms per step, share of the wall time per step, what it holds."""
    per_step = {c: attribution.ms.get(c, 0.0) / steps for c in CATEGORIES}
    busy = sum(per_step.values())
    if attribution.basis == "self device time":
        per_step["idle"] = max(0.0, wall_ms - busy)
    rows = []
    for category, description in CATEGORIES.items():
        value = per_step.get(category, 0.0)
        if category == "idle" and attribution.basis != "self device time":
            continue
        detail = description + (f"; kernel: {kernel}" if category == "attention" and kernel else "")
        rows.append({"category": category, "ms_per_step": value, "share": value / wall_ms if wall_ms else math.nan,
                     "detail": detail})
    return pd.DataFrame(rows)


def top_ops(events: list, on_device: bool, steps: int, wall_ms: float, n: int = TOP_OPS) -> pd.DataFrame:
    """The aten ops with the most self time, grouped by name, input shapes and dtypes (per step)."""
    nodes = forward_node_categories(events)
    groups: dict[tuple, dict] = {}
    for event in events:
        if not event.name.startswith("aten::") or is_device_event(event):
            continue
        shapes = " x ".join(str(list(s)) for s in (event.input_shapes or []) if s)
        dtypes = ", ".join(_short_dtype(d) for d in (getattr(event, "input_dtypes", None) or []) if d and d not in _NOT_DTYPES)
        key = (event.name, shapes, dtypes)
        group = groups.setdefault(key, {"op": event.name, "input_shapes": shapes, "dtypes": dtypes, "calls": 0,
                                        "self_us": 0.0, "total_us": 0.0, "by_category": defaultdict(float)})
        us = own_time_us(event, on_device)
        group["calls"] += 1
        group["self_us"] += us
        group["total_us"] += float(event.device_time_total if on_device else event.cpu_time_total)
        group["by_category"][event_category(event, nodes)] += us
    rows = []
    for g in groups.values():
        category = max(g["by_category"].items(), key=lambda kv: kv[1])[0] if g["by_category"] else "other"
        self_ms = g["self_us"] / 1e3 / steps
        rows.append({"op": g["op"], "category": category, "input_shapes": g["input_shapes"], "dtypes": g["dtypes"],
                     "calls_per_step": g["calls"] / steps, "self_ms_per_step": self_ms,
                     "share": self_ms / wall_ms if wall_ms else math.nan, "total_ms_per_step": g["total_us"] / 1e3 / steps})
    frame = pd.DataFrame(rows, columns=["op", "category", "input_shapes", "dtypes", "calls_per_step", "self_ms_per_step",
                                        "share", "total_ms_per_step"])
    return frame.sort_values("self_ms_per_step", ascending=False).head(n).reset_index(drop=True)


_NOT_DTYPES = {"Scalar", "ScalarList", "TensorList", "GenericList"}  # what the profiler records for non-tensor arguments


def _short_dtype(name: str) -> str:
    return {"float": "fp32", "c10::BFloat16": "bf16", "c10::Half": "fp16", "double": "fp64", "long int": "int64",
            "int": "int32", "bool": "bool"}.get(name, name)


def memory_ops(events: list, steps: int, n: int = TOP_OPS) -> pd.DataFrame:
    """Per-op memory from ``profile_memory``: MiB allocated minus freed by the op itself, per step."""
    groups: dict[str, dict] = {}
    for event in events:
        if not event.name.startswith("aten::"):
            continue
        cpu, dev = float(event.self_cpu_memory_usage), float(getattr(event, "self_device_memory_usage", 0) or 0)
        if not cpu and not dev:
            continue
        g = groups.setdefault(event.name, {"op": event.name, "calls": 0, "cpu": 0.0, "device": 0.0})
        g["calls"] += 1
        g["cpu"] += cpu
        g["device"] += dev
    rows = [{"op": g["op"], "calls_per_step": g["calls"] / steps, "cpu_self_mib_per_step": g["cpu"] / MIB / steps,
             "device_self_mib_per_step": g["device"] / MIB / steps} for g in groups.values()]
    frame = pd.DataFrame(rows, columns=["op", "calls_per_step", "cpu_self_mib_per_step", "device_self_mib_per_step"])
    if frame.empty:
        return frame
    order = frame[["cpu_self_mib_per_step", "device_self_mib_per_step"]].abs().max(axis=1).sort_values(ascending=False).index
    return frame.loc[order].head(n).reset_index(drop=True)
