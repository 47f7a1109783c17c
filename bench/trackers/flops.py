"""FLOPs per step: ``torch.utils.flop_counter`` plus the attention FLOPs a fused kernel hides.

The counter sees matmuls and convolutions at the dispatcher. Eager and math attention are plain
``bmm``s and are counted; some fused SDPA kernels (the CPU flash kernel, for one) have no FLOP
formula and count as zero. Where the counter saw less attention than the shapes imply, the
analytic attention FLOPs are added, and ``flops_source`` says so.

Analytic attention FLOPs per layer and image, forward: ``QK^T`` and ``PV`` are each
``2 * N^2 * C`` (N tokens, C width), so ``4 * N^2 * C``. Backward is twice the forward; gradient
checkpointing recomputes the forward once more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ae_models.layers import Attention
from ae_models.transformer import FlatTransformerAutoencoder, PatchTransformerAutoencoder


@dataclass
class FlopCount:
    total: float              # FLOPs per step (batch), attention added where hidden
    attn_analytic: Optional[float]
    attn_counted: float
    source: str


def attention_flops_forward(model: nn.Module, hw: tuple[int, int], batch: int, mode: str) -> Optional[float]:
    """Forward attention FLOPs of one batch from the model's shapes; None for unknown models."""
    cfg = getattr(model, "config", None)
    if isinstance(model, PatchTransformerAutoencoder):
        gh, gw = model.grid_for(hw)
        tokens, width = gh * gw, cfg.embed_dim
    elif isinstance(model, FlatTransformerAutoencoder):
        tokens, width = 1, cfg.latent_dim
    elif cfg is not None and not hasattr(cfg, "num_heads"):
        return 0.0  # no attention (the CNN)
    else:
        return None
    layers = cfg.depth + (0 if mode == "embed" else cfg.decoder_depth)
    return 4.0 * batch * tokens**2 * width * layers


def attention_flops(model: nn.Module, hw: tuple[int, int], batch: int, mode: str, checkpointing: bool) -> Optional[float]:
    """Analytic attention FLOPs of one step: a batch of ``batch`` images of ``hw`` in ``mode``."""
    forward = attention_flops_forward(model, hw, batch, mode)
    if forward is None or mode != "train":
        return forward
    return forward * (3 + (1 if checkpointing else 0))


# -- which op is attention: the one rule, for the FLOP counter here and the profiler (profile/attribution.py) --

FUSED_ATTENTION_MARKERS = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention")


def is_attention_kernel(op: object) -> bool:
    """A fused attention op (the SDPA family, any backend), named as the profiler names it
    (``aten::_scaled_dot_product_flash_attention``) or the FLOP counter (``aten._scaled_dot_product_flash_attention``)."""
    name = str(op)
    return name.startswith(("aten::", "aten.")) and any(marker in name for marker in FUSED_ATTENTION_MARKERS)


def is_attention_module(module: nn.Module) -> bool:
    """An attention layer of the models: the batched matmuls its own forward runs are attention (eager
    attention's ``QK^T`` and ``PV``); its q/k/v and output projections are ``nn.Linear`` modules of their own."""
    return isinstance(module, Attention)


def is_batched_matmul(op: object) -> bool:
    """``bmm``/``baddbmm``: what eager (and math) attention's ``QK^T`` and ``PV`` run as."""
    return str(op).replace("::", ".").split(".")[1:2] in (["bmm"], ["baddbmm"])


def attention_flops_counted(counts: dict[str, dict], model: nn.Module) -> float:
    """The attention FLOPs in a ``FlopCounterMode``'s per-module counts of a step of ``model``: fused attention
    kernels anywhere, and the batched matmuls an attention module ran (never a ``bmm`` elsewhere, such as the
    LSTM head's). The counter names a scope from the first module called (``PatchTransformerAutoencoder.encoder.
    blocks.0.attn``, or ``TransformerEncoder.blocks.0.attn`` when a step calls the encoder), so a scope is
    matched on its path below that root."""
    paths = [name for name, module in model.named_modules() if name and is_attention_module(module)]

    def attention_scope(key: str) -> bool:
        rel = key.split(".", 1)[1] if "." in key else ""
        return bool(rel) and any(p == rel or p.endswith("." + rel) for p in paths)

    fused = sum(v for op, v in counts.get("Global", {}).items() if is_attention_kernel(op))
    eager = sum(v for key, ops in counts.items() if attention_scope(key) for op, v in ops.items() if is_batched_matmul(op))
    return float(fused + eager)


def count_step_flops(step: Callable[[], object], model: nn.Module, *, hw: tuple[int, int], batch: int, mode: str,
                     checkpointing: bool) -> FlopCount:
    """Run ``step`` once under the FLOP counter (never during timing); the plain fields of the step's case
    (``hw``, ``batch``, ``mode``, ``checkpointing``) size the analytic attention FLOPs."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    total = float(counter.get_total_flops())
    attn_counted = attention_flops_counted(counter.get_flop_counts(), model)
    analytic = attention_flops(model, hw, batch, mode, checkpointing)
    source = "flop_counter"
    if analytic and attn_counted < 0.5 * analytic:
        total += analytic - attn_counted
        source = "flop_counter + analytic attention (fused kernel not counted)"
    return FlopCount(total=total, attn_analytic=analytic, attn_counted=attn_counted, source=source)
