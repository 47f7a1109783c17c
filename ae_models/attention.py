"""Attention implementations, their validity rules, and what actually ran.

One name per implementation, used everywhere (models, harness, reports):

- ``flash``, ``mem-efficient``, ``cudnn``, ``math``: PyTorch SDPA restricted to that one backend.
- ``auto``: SDPA free to pick; record what it picked with :func:`detect_attention_kernels`.
- ``eager``: explicit ``softmax(q k^T / sqrt(d)) v``; the only one that can return the maps.

A request that cannot run raises :class:`UnsupportedAttentionError` with the reason; nothing
falls back silently.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .catalog import ATTENTION_IMPLS


_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "mem-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}

# aten op name (as the dispatcher sees it) -> our attention name
_KERNEL_OPS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash",
    "_scaled_dot_product_efficient_attention": "mem-efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_fused_attention_overrideable": "fused-other",
}


class UnsupportedAttentionError(ValueError):
    """The requested attention implementation cannot run for this device, dtype or shape."""


def check_attention_name(name: str) -> str:
    if name not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {name!r}; choose one of {', '.join(ATTENTION_IMPLS)}")
    return name


@functools.lru_cache(maxsize=256)  # asked on every attention call: keep it off the hot path
def why_unsupported(impl: str, device_type: str, dtype: torch.dtype, head_dim: int,
                    capability: Optional[tuple[int, int]] = None) -> Optional[str]:
    """The reason ``impl`` cannot run here, or ``None`` when it can (as far as rules tell).

    The rules are PyTorch's own, stated up front so that the error names the cause instead of
    "No available kernel". A remaining mismatch still raises from SDPA itself. This is the one
    copy of the CUDA rules: the harness (``bench.core.cases.why_skip``) and the planner's target
    card (``bench.plan.budget.cuda_target_skip``, ``capability=(8, 9)``) ask it too.

    ``capability``: the CUDA compute capability judged, ``(major, minor)``; ``None`` reads the
    current CUDA device's (pass the tensor's own device's on a machine of several GPUs).
    """
    check_attention_name(impl)
    if impl in ("eager", "auto", "math"):
        return None
    if device_type == "cpu":
        if impl == "flash":
            return None  # PyTorch has a CPU flash kernel for fp32, bf16 and fp16
        return f"{impl} attention has no CPU kernel in PyTorch (CPU has flash and math)"
    if device_type != "cuda":
        return f"{impl} attention is a CUDA kernel; device is {device_type}"
    major, minor = capability if capability is not None else torch.cuda.get_device_capability()
    half = dtype in (torch.float16, torch.bfloat16)
    if impl == "flash":
        if not half:
            return f"flash attention on CUDA needs fp16 or bf16 inputs, got {str(dtype).replace('torch.', '')} (use amp-fp16/amp-bf16 or another kernel)"
        if major < 8:
            return f"flash attention needs compute capability 8.0+, this GPU is {major}.{minor}"
        if head_dim > 256 or head_dim % 8:
            return f"flash attention needs a head dimension divisible by 8 and at most 256, got {head_dim}"
    if impl == "mem-efficient" and dtype == torch.bfloat16 and major < 8:
        return f"mem-efficient attention in bf16 needs compute capability 8.0+, this GPU is {major}.{minor}"
    if impl == "cudnn":
        if not half:
            return f"cudnn attention needs fp16 or bf16 inputs, got {str(dtype).replace('torch.', '')}"
        if major < 8:
            return f"cudnn attention needs compute capability 8.0+, this GPU is {major}.{minor}"
    return None


@functools.lru_cache(maxsize=16)
def _capability(index: Optional[int]) -> tuple[int, int]:
    """The compute capability of ``cuda:index`` (the current device for ``None``): the GPU the tensor is on."""
    return torch.cuda.get_device_capability(index if index is not None else torch.cuda.current_device())


def scaled_dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str, dropout_p: float = 0.0,
                       return_weights: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Attention over ``q, k, v`` of shape ``(B, heads, N, head_dim)``.

    Returns ``(out (B, heads, N, head_dim), weights (B, heads, N, N) or None)``; weights only for
    ``eager``.
    """
    if impl == "eager":
        scale = q.shape[-1] ** -0.5
        weights = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)  # (B, h, N, N)
        if dropout_p:
            weights_d = F.dropout(weights, p=dropout_p)
        else:
            weights_d = weights
        return weights_d @ v, (weights if return_weights else None)
    if return_weights:
        raise UnsupportedAttentionError(f"attention maps need attention='eager'; {impl} is a fused kernel that never forms them")
    if not torch.compiler.is_compiling():  # the harness asked before compiling (``why_skip``); a cached rule is
        # nothing for the compiler to trace
        reason = why_unsupported(impl, q.device.type, q.dtype, q.shape[-1],
                                 _capability(q.device.index) if q.device.type == "cuda" else None)
        if reason:
            raise UnsupportedAttentionError(reason)
    ctx = contextlib.nullcontext() if impl == "auto" else sdpa_kernel(_BACKENDS[impl])
    try:
        with ctx:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), None
    except RuntimeError as err:
        if "No viable backend" in str(err) or "No available kernel" in str(err):
            raise UnsupportedAttentionError(
                f"{impl} attention cannot run for q {tuple(q.shape)} {str(q.dtype).replace('torch.', '')} on {q.device.type}: {err}"
            ) from err
        raise


class _OpRecorder(TorchDispatchMode):
    """Records the aten ops that reach the dispatcher (quiet, unlike the profiler)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.__name__.split(".")[0])
        if func is torch.ops.aten.scaled_dot_product_attention.default:
            # Under torch.inference_mode SDPA reaches this mode whole, before choosing a kernel;
            # run its composite body under the mode so the kernel it picks is recorded too.
            with self:
                out = func.decompose(*args, **(kwargs or {}))
            if out is not NotImplemented:
                return out
        return func(*args, **(kwargs or {}))


class _SdpaCallCounter(TorchFunctionMode):
    """Counts calls of ``F.scaled_dot_product_attention`` (the math backend decomposes below it)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def kernels_from_ops(ops: Iterable[str], sdpa_called: bool) -> list[str]:
    """Name the attention kernels behind a set of aten ops.

    A fused kernel shows as its own op. The math backend decomposes into matmul and softmax, as
    eager attention does, so the two are told apart by whether SDPA was called at all.
    """
    found = {_KERNEL_OPS[op] for op in ops if op in _KERNEL_OPS}
    softmax = any(op in ("_softmax", "softmax", "_safe_softmax") for op in ops)
    if softmax and not found:
        found.add("math" if sdpa_called else "eager")
    return sorted(found)


@contextlib.contextmanager
def record_attention_kernels():
    """Context manager yielding a list that, on exit, holds the attention kernels that ran."""
    counter, recorder = _SdpaCallCounter(), _OpRecorder()
    result: list[str] = []
    with counter, recorder:
        yield result
    result.extend(kernels_from_ops(recorder.ops, counter.calls > 0))


def detect_attention_kernels(fn, *args, **kwargs) -> list[str]:
    """Run ``fn(*args, **kwargs)`` once and return the attention kernels it used, e.g. ``["flash"]``."""
    with record_attention_kernels() as kernels:
        fn(*args, **kwargs)
    return kernels
