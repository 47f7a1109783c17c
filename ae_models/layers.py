"""Transformer building blocks shared by the patch and flat autoencoders (timm-style layers)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .attention import check_attention_name, scaled_dot_product


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attention: str = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}; pick heads that divide it")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.attention = check_attention_name(attention)

    def forward(self, x: torch.Tensor, return_weights: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
        q, k, v = qkv.unbind(0)
        out, weights = scaled_dot_product(q, k, v, self.attention, self.attn_drop if self.training else 0.0, return_weights)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj_drop(self.proj(out)), weights


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, attention: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, attn_drop=dropout, proj_drop=dropout, attention=attention)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        attn_out, weights = self.attn(self.norm1(x), return_weights)
        x = x + attn_out
        x = x + self.mlp(self.norm2(x))
        return x, weights


class BlockStack(nn.Module):
    """A sequence of blocks with switchable per-block gradient checkpointing."""

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_ratio: float, dropout: float, attention: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, dropout, attention) for _ in range(depth))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, return_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        maps: list[torch.Tensor] = []
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and not return_weights:
                x, _ = checkpoint(block, x, use_reentrant=False)
            else:
                x, weights = block(x, return_weights)
                if weights is not None:
                    maps.append(weights)
        return x, maps


def init_weights(module: nn.Module) -> None:
    """ViT/MAE init: truncated normal (std 0.02) for linear weights, zero biases, unit LayerNorm.

    Small weights keep the pre-LN residual stream near identity at the start of training.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
