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


def _is_attention_op(name: str) -> bool:
    return "bmm" in name or "scaled_dot_product" in name


def count_step_flops(step: Callable[[], object], model: nn.Module, *, hw: tuple[int, int], batch: int, mode: str,
                     checkpointing: bool) -> FlopCount:
    """Run ``step`` once under the FLOP counter (never during timing); the plain fields of the step's case
    (``hw``, ``batch``, ``mode``, ``checkpointing``) size the analytic attention FLOPs."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    total = float(counter.get_total_flops())
    by_op = counter.get_flop_counts().get("Global", {})
    attn_counted = float(sum(v for op, v in by_op.items() if _is_attention_op(str(op))))
    analytic = attention_flops(model, hw, batch, mode, checkpointing)
    source = "flop_counter"
    if analytic and attn_counted < 0.5 * analytic:
        total += analytic - attn_counted
        source = "flop_counter + analytic attention (fused kernel not counted)"
    return FlopCount(total=total, attn_analytic=analytic, attn_counted=attn_counted, source=source)
