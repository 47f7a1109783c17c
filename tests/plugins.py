"""Plug-in model families that fail for real, for the harness's failure tests.

Used as ``--families tests.plugins:raising`` (the registry imports ``package.module:factory``).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        raise RuntimeError("this model is broken on purpose")

    def Embedding(self, x):  # noqa: N802
        return self.forward(x)


class _HugeAllocation(nn.Module):
    """Asks the allocator for 32 TiB: a real out-of-memory on any machine."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        torch.empty(2**45, dtype=torch.uint8, device=x.device)
        return x, None

    def Embedding(self, x):  # noqa: N802
        return self.forward(x)[0]


def raising(input_size, preset, **overrides):
    return _Raises()


def huge(input_size, preset, **overrides):
    return _HugeAllocation()


class _Hangs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        import time

        time.sleep(3600)

    Embedding = forward


class _KillsItself(nn.Module):
    """Dies the way a segfault or the OOM killer ends a process: a signal, no Python exception."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        import os
        import signal

        print("about to be killed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    Embedding = forward


def hangs(input_size, preset, **overrides):
    return _Hangs()


def killed(input_size, preset, **overrides):
    return _KillsItself()
