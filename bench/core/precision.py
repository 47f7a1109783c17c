"""Precisions by name: what each means for weights, autocast and the TF32 switches.

- ``fp32``: fp32 weights and math, TF32 off (the reference).
- ``tf32``: fp32 weights, matmuls and convolutions on TF32 tensor cores (CUDA only).
- ``amp-fp16`` / ``amp-bf16``: fp32 weights, ``torch.autocast`` to fp16 / bf16; fp16 training
  uses a ``GradScaler``.
- ``fp16`` / ``bf16``: weights and inputs cast to that dtype, no autocast.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

AUTOCAST_DTYPE = {"amp-fp16": torch.float16, "amp-bf16": torch.bfloat16}
WEIGHT_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}


def weight_dtype(precision: str) -> torch.dtype:
    return WEIGHT_DTYPE.get(precision, torch.float32)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = AUTOCAST_DTYPE.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(precision: str) -> bool:
    return precision == "amp-fp16"


@contextlib.contextmanager
def tf32_flags(precision: str) -> Iterator[None]:
    """Set the TF32 switches for ``precision`` and restore them afterwards."""
    allow = precision == "tf32"
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def bytes_per_weight(precision: Optional[str]) -> int:
    return 2 if precision in WEIGHT_DTYPE else 4
