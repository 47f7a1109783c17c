"""Plug-in model families whose profile is known in advance, for tests/test_profile.py.

Used as ``tests.profile_models:matmul_only`` (the registry imports ``package.module:factory``). Each
model does one thing, inside one module of a known kind, so all of a step's op time has one category.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ae_models.layers import Attention


class _MatmulOnly(nn.Module):
    """One matmul: a Linear over the image rows, (B * H, W) @ (W, W); a Linear named ``to_latent`` is "latent"."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.to_latent = nn.Linear(width, width, bias=False)

    def forward(self, x):
        return self.to_latent(x), None

    def Embedding(self, x):  # noqa: N802
        return self.forward(x)[0]


REPEATS = 8  # softmaxes per step: enough op time (~10 ms) that the hooks' own Python time is a small share


class _SoftmaxOnly(Attention):
    """An attention module that only takes softmaxes (the middle of eager attention): "attention"."""

    def forward(self, x):
        for _ in range(REPEATS):
            x = torch.softmax(x, dim=-1)
        return x


class _SoftmaxInAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _SoftmaxOnly(dim=8, num_heads=1)

    def forward(self, x):
        return self.attn(x), None

    def Embedding(self, x):  # noqa: N802
        return self.forward(x)[0]


class _SoftmaxUnlabelled(nn.Module):
    """The same softmax in no labelled module (as a loss or a residual would be): "other"."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so that a train step has something to update

    def forward(self, x):
        x = x * self.scale
        for _ in range(REPEATS):
            x = torch.softmax(x, dim=-1)
        return x, None

    def Embedding(self, x):  # noqa: N802
        return self.forward(x)[0]


def matmul_only(input_size, preset, **overrides):
    return _MatmulOnly(input_size[1])


def softmax_in_attention(input_size, preset, **overrides):
    return _SoftmaxInAttention()


def softmax_unlabelled(input_size, preset, **overrides):
    return _SoftmaxUnlabelled()
