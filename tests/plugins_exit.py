"""Plug-in model families whose factory ends the process (issue 35 item 2): ``--families tests.plugins_exit:sys_exit``."""

from __future__ import annotations

import os
import sys


def sys_exit(input_size, preset, **overrides):
    sys.exit(0)


def sys_exit_3(input_size, preset, **overrides):
    sys.exit(3)


def os_exit(input_size, preset, **overrides):
    os._exit(0)


def hangs_in_factory(input_size, preset, **overrides):
    """Never returns (a factory waiting on a lock, a download, a prompt)."""
    import threading

    threading.Event().wait()


def chdir_in_step(input_size, preset, **overrides):
    """A model whose forward changes the working directory (to a fresh temporary folder) and works otherwise."""
    import tempfile

    import torch.nn as nn

    class _Moves(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            os.chdir(tempfile.mkdtemp(prefix="ae-bench-chdir-"))
            return x * self.scale, None

        def Embedding(self, x):  # noqa: N802
            return self.forward(x)[0].flatten(1)[:, :8]

    import torch

    return _Moves()
