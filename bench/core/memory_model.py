"""Predicted peak memory of one step, from a run that computes nothing: the batch-size model.

How the model is made, per case (one configuration without its batch):

1. The case's own step (``bench.core.steps.prepare`` -> ``Scenario.step``: forward, backward and
   the AdamW step for ``train``) runs under ``FakeTensorMode``: every tensor has its shape, dtype and
   storage size but no data, and no kernel runs. xlarge at 1280x152 costs what tiny costs (well
   under a second a trace) and no memory is taken.
2. A ``TorchDispatchMode`` above it sees every op's outputs and counts each new *storage* once
   (views are free), releases it when the storage object dies (a weakref on the UntypedStorage),
   and logs allocations and releases in order. Each storage gets a category:
   ``params``, ``grads``, ``optimizer`` (AdamW's moments), ``amp_copies`` (autocast's low-precision
   copies of the weights), ``saved`` (tensors autograd keeps for backward, seen by
   ``torch.autograd.graph.saved_tensors_hooks``, by storage: flash keeps an (B, h, N) logsumexp, eager
   keeps the (B, h, N, N) softmax), ``inputs``, and ``transient`` (outputs in flight, activation
   gradients, blocks recomputed under checkpointing, optimizer temporaries).
3. Two steps run; the first creates AdamW's state, the second, the steady state, is the one counted.
4. Traces at two small batches give, for every moment of the step (after each allocation), a line
   ``live_t(b) = fixed_t + per_image_t * b`` (exact here: every storage is either independent of
   the batch or proportional to it). The peak is their upper envelope, ``peak(b) = max_t live_t(b)``,
   and the largest batch under a limit follows in closed form. A third trace, at the answer, checks
   the lines (``fit_error``).

Where the model is not the real kernel (fake kernels only know output shapes), corrections
measured on CPU are applied (``_REAL_STORAGE``). The independent check of all this is
``bench.plan.reference``: the CPU allocator's own events on a real run (``python -m bench plan-check``).

Target ``cuda`` (predicting a GPU from this CPU) changes what differs on a GPU, and nothing else:
AdamW runs ``foreach`` (CUDA's default: a temporary the size of the weights in the optimizer step);
under autocast, ops on CUDA's fp32 list that these models use (softmax, log_softmax, layer_norm,
group_norm, mse_loss) get fp32 inputs as CUDA's autocast gives them (CPU's autocast leaves them in
bf16); fused attention kernels (flash, mem-efficient, cudnn, auto) are stood in for by the CPU
flash kernel, whose saved tensors are the same size (output and an (B, h, N) logsumexp); fp16 is
traced as bf16 (same sizes; GradScaler's scalars ignored). These are not checked against a GPU
here; the plan labels such figures ``predicted``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import weakref
from dataclasses import dataclass, field
from typing import Optional
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ae_models import build_model

from bench.core import precision as prec
from bench.core import steps
from bench.core.cases import Case

CATEGORIES = ("params", "grads", "optimizer", "amp_copies", "saved", "inputs", "transient")
FIT_BATCHES = (2, 4)     # the two traces the lines come from
MAX_BATCH = 1 << 20      # "no limit in sight": a case whose peak does not grow with the batch
TARGETS = ("cpu", "cuda")

aten = torch.ops.aten


def _mse_storage(args, kwargs, out):
    # CPU (torch 2.13, measured): mse_loss with a reduction computes the unreduced loss into a
    # buffer and returns the 0-d result over that same storage, so the scalar loss keeps B*C*H*W
    # elements alive until it dies (through backward). The meta kernel returns a 4-byte storage.
    reduction = args[2] if len(args) > 2 else kwargs.get("reduction", 1)
    if reduction == 0:
        return None
    return torch.broadcast_shapes(args[0].shape, args[1].shape).numel() * out.element_size()


def _layer_norm_stats(args, kwargs, out, index):
    # Real kernels keep layer_norm's mean and rstd in fp32 for bf16/fp16 input; the meta kernel
    # gives them the input's dtype.
    if index in (1, 2) and out.dtype in (torch.bfloat16, torch.float16):
        return out.numel() * 4
    return None


# op -> (args, kwargs, output, output index) -> the real storage size in bytes, or None for "as traced"
_REAL_STORAGE: dict = {
    aten.mse_loss.default: lambda a, k, o, i: _mse_storage(a, k, o),
    aten.native_layer_norm.default: _layer_norm_stats,
}


class StorageTracker(TorchDispatchMode):
    """Counts live storages, by storage, as ops create them and as they die; logs every change."""

    def __init__(self) -> None:
        super().__init__()
        self.serial_of: dict[int, int] = {}   # storage key (its C pointer) -> serial, while alive
        self.sizes: list[int] = []            # serial -> bytes
        self.events: list[int] = []           # serial (allocated) or ~serial (released), in order
        self.amp_copies: set[int] = set()
        self.weights: set[int] = set()        # serials whose _to_copy outputs are AMP weight copies
        self.active = True

    def serial(self, t: torch.Tensor, nbytes: Optional[int] = None) -> Optional[int]:
        """The serial of ``t``'s storage, tracking it now if it is new."""
        if not isinstance(t, torch.Tensor):
            return None
        storage = t.untyped_storage()
        key = storage._cdata
        found = self.serial_of.get(key)
        if found is not None:
            return found
        serial = len(self.sizes)
        self.serial_of[key] = serial
        self.sizes.append(int(storage.nbytes() if nbytes is None else max(nbytes, storage.nbytes())))
        self.events.append(serial)
        weakref.finalize(storage, self._release, key, serial)
        return serial

    def _release(self, key: int, serial: int) -> None:
        if self.serial_of.get(key) == serial:
            del self.serial_of[key]
        if self.active:
            self.events.append(~serial)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        real = _REAL_STORAGE.get(func)
        outputs = tree_flatten(out)[0]
        for index, t in enumerate(outputs):
            if isinstance(t, torch.Tensor):
                serial = self.serial(t, real(args, kwargs, t, index) if real is not None else None)
                if func is aten._to_copy.default and isinstance(args[0], torch.Tensor):
                    source = self.serial_of.get(args[0].untyped_storage()._cdata)
                    if source in self.weights and serial != source:
                        self.amp_copies.add(serial)
        return out


# CUDA autocast runs these in fp32 (its fp32 list); CPU autocast leaves them in the input's dtype.
# Patched as module attributes rather than caught by a TorchFunctionMode, because checkpointing's
# recomputation inside backward runs where a function mode is not active.
_CUDA_FP32_FUNCS = ((F, "softmax"), (F, "log_softmax"), (F, "layer_norm"), (F, "group_norm"), (F, "mse_loss"),
                    (torch, "softmax"), (torch, "log_softmax"), (torch.Tensor, "softmax"), (torch.Tensor, "log_softmax"))


def _fp32_under_autocast(fn):
    def up(x):
        return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32 else x

    def wrapper(*args, **kwargs):
        if torch.is_autocast_enabled("cpu"):  # the CPU autocast region stands for CUDA's
            args = tuple(up(a) for a in args)
            kwargs = {k: up(v) for k, v in kwargs.items()}
        return fn(*args, **kwargs)

    return wrapper


def cuda_autocast_policy() -> contextlib.ExitStack:
    """Give the ops of CUDA autocast's fp32 list that these models use fp32 inputs inside autocast."""
    stack = contextlib.ExitStack()
    for owner, name in _CUDA_FP32_FUNCS:
        stack.enter_context(mock.patch.object(owner, name, _fp32_under_autocast(getattr(owner, name))))
    return stack


@torch.no_grad()
def _trunc_normal(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Memory-identical stand-in for ``nn.init.trunc_normal_`` (its rejection loop reads data)."""
    return tensor.normal_(mean, std)


def _fake_build_for(case: Case, device: torch.device) -> nn.Module:
    """``steps.build_for`` without ``Module.to`` (which cannot swap fake parameters in place)."""
    model = build_model(case.family, case.preset, case.hw, **steps.model_overrides(case))
    dtype = prec.weight_dtype(case.precision)
    if dtype != torch.float32:
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None and p.is_floating_point():
                    module._parameters[name] = nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad)
            for name, b in list(module._buffers.items()):
                if b is not None and b.is_floating_point():
                    module._buffers[name] = b.to(dtype)
    return model


def traced_case(case: Case, target: str) -> tuple[Case, list[str]]:
    """The case that is traced on this CPU to stand for ``case`` on ``target``, and the notes why."""
    notes = []
    if target == "cuda":
        swaps = {"amp-fp16": "amp-bf16", "fp16": "bf16", "tf32": "fp32"}
        if case.precision in swaps:
            notes.append(f"traced as {swaps[case.precision]} (same sizes)")
            case = dataclasses.replace(case, precision=swaps[case.precision])
        if case.attention in ("mem-efficient", "cudnn", "auto"):
            notes.append(f"{case.attention} traced with the CPU flash kernel (same saved sizes)")
            case = dataclasses.replace(case, attention="flash")
    return case, notes


@dataclass
class Trace:
    """One fake run: the live bytes of every category at each moment of the counted step."""

    batch: int
    live: np.ndarray              # (moments, categories), bytes
    signature: tuple              # the event pattern, to check that two traces line up


def trace(case: Case, batch: int, target: str = "cpu") -> Trace:
    """Run two steps of ``case`` at ``batch`` under fake tensors and account the second one."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    case, _ = traced_case(dataclasses.replace(case, batch=batch, skip=None), target)
    from torch._subclasses.fake_tensor import FakeTensorMode

    gc.collect()
    tracker = StorageTracker()
    saved: set[int] = set()

    def pack(t):
        serial = tracker.serial(t)
        if serial is not None:
            saved.add(serial)
        return t

    policy = cuda_autocast_policy() if target == "cuda" and case.precision.startswith("amp-") else contextlib.nullcontext()
    patches = (mock.patch.object(nn.init, "trunc_normal_", _trunc_normal),
               mock.patch.object(steps, "build_for", _fake_build_for))
    with patches[0], patches[1], FakeTensorMode(), tracker, policy, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sc = steps.prepare(case, torch.device("cpu"))
        params = [p for p in sc.model.parameters()]
        weights = {tracker.serial(p) for p in params} | {tracker.serial(b) for b in sc.model.buffers()}
        tracker.weights = weights
        inputs = {tracker.serial(sc.inputs)}
        if sc.optimizer is not None and target == "cuda":
            for group in sc.optimizer.param_groups:
                group["foreach"] = True  # what AdamW picks by default for CUDA parameters
        sc.step()
        state = set()
        if sc.optimizer is not None:
            for values in sc.optimizer.state.values():
                state |= {tracker.serial(v) for v in values.values() if isinstance(v, torch.Tensor)}
        start = len(tracker.events)
        saved.clear()
        sc.step()
        end = len(tracker.events)
        grads = {tracker.serial(p.grad) for p in params if p.grad is not None}
        tracker.active = False
        sc.close()
        del sc, params
    categories = np.full(len(tracker.sizes), CATEGORIES.index("transient"), dtype=np.int64)
    # later assignments win: an AMP copy that is also saved counts as an AMP copy, and so on
    for name, serials in (("saved", saved), ("inputs", inputs), ("amp_copies", tracker.amp_copies),
                          ("grads", grads), ("optimizer", state), ("params", weights)):
        for serial in serials:
            if serial is not None:
                categories[serial] = CATEGORIES.index(name)
    return _account(tracker, categories, start, end, batch)


def _account(tracker: StorageTracker, categories: np.ndarray, start: int, end: int, batch: int) -> Trace:
    events = np.asarray(tracker.events[:end], dtype=np.int64)
    alloc = events >= 0
    serials = np.where(alloc, events, ~events)
    sizes = np.asarray(tracker.sizes, dtype=np.float64)[serials] * np.where(alloc, 1.0, -1.0)
    deltas = np.zeros((len(events), len(CATEGORIES)))
    deltas[np.arange(len(events)), categories[serials]] = sizes
    live = np.cumsum(deltas, axis=0)
    # moments: the state when the counted step starts, then after each allocation within it
    rows = [start - 1] + [i for i in range(start, end) if alloc[i]]
    signature = tuple(int(c) * (1 if a else -1) for c, a in zip(categories[serials[start:end]], alloc[start:end]))
    return Trace(batch, live[rows], signature)


@dataclass
class MemoryModel:
    """``peak(b) = max over moments of (fixed_t + per_image_t * b)``, in bytes of live tensors."""

    case: Case
    target: str
    fixed: np.ndarray             # (moments, categories)
    per_image: np.ndarray         # (moments, categories)
    fit_batches: tuple
    notes: list[str] = field(default_factory=list)
    fit_error: Optional[float] = None  # |line - trace| / trace at the checked batch
    fit_checked_at: Optional[int] = None

    def _lines(self) -> tuple[np.ndarray, np.ndarray]:
        return self.fixed.sum(axis=1), self.per_image.sum(axis=1)

    def peak(self, batch: float) -> float:
        fixed, slope = self._lines()
        return float(np.max(fixed + slope * batch))

    def argmax(self, batch: float) -> int:
        fixed, slope = self._lines()
        return int(np.argmax(fixed + slope * batch))

    def line_at(self, batch: float) -> tuple[float, float]:
        """``(fixed, per_image)`` bytes of the line that is the peak at ``batch``."""
        i = self.argmax(batch)
        return float(self.fixed[i].sum()), float(self.per_image[i].sum())

    def breakdown(self, batch: float) -> dict[str, float]:
        """Bytes per category at the moment of the peak at ``batch``."""
        i = self.argmax(batch)
        return {c: float(self.fixed[i, k] + self.per_image[i, k] * batch) for k, c in enumerate(CATEGORIES)}

    def max_batch(self, limit: float) -> int:
        """The largest batch whose peak is at most ``limit`` bytes (0: not even one image)."""
        fixed, slope = self._lines()
        if np.any((slope <= 0) & (fixed > limit)):
            return 0
        growing = slope > 0
        if not growing.any():
            return MAX_BATCH
        bound = np.floor((limit - fixed[growing]) / slope[growing] + 1e-9)
        best = int(min(bound.min(), MAX_BATCH))
        return max(best, 0)


def fit(case: Case, target: str = "cpu", batches: tuple = FIT_BATCHES) -> MemoryModel:
    """Trace ``case`` at two batches and draw a line through every moment."""
    b1, b2 = batches
    t1, t2 = trace(case, b1, target), trace(case, b2, target)
    _, notes = traced_case(case, target)
    if t1.signature != t2.signature or t1.live.shape != t2.live.shape:
        raise RuntimeError(f"{case.id}: the traces at batch {b1} and {b2} differ in their sequence of allocations, "
                           "so the step is not the same program at both sizes; the line model does not apply")
    slope = (t2.live - t1.live) / (b2 - b1)
    fixed = t1.live - slope * b1
    return MemoryModel(dataclasses.replace(case, skip=None), target, fixed, slope, (b1, b2), notes)


def check_fit(model: MemoryModel, batch: int) -> float:
    """Trace at ``batch`` and record how far the lines are from it (relative error of the peak)."""
    actual = float(trace(model.case, batch, model.target).live.sum(axis=1).max())
    predicted = model.peak(batch)
    model.fit_error = abs(predicted - actual) / actual if actual else 0.0
    model.fit_checked_at = batch
    return model.fit_error


def largest_power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1) if n >= 1 else 0
