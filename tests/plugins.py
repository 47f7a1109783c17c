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


class _MarksThenHangs(_Hangs):
    """Touches the file named by ``AE_TEST_HANG_MARKER`` when its step starts, then hangs: a test waits for that event
    (every earlier case's row is on disk by then) instead of racing a sweep against a clock."""

    def forward(self, x):
        import os
        from pathlib import Path

        Path(os.environ["AE_TEST_HANG_MARKER"]).touch()
        return super().forward(x)

    Embedding = forward


def marks_then_hangs(input_size, preset, **overrides):
    return _MarksThenHangs()


def killed(input_size, preset, **overrides):
    return _KillsItself()


# -- hostile plug-ins (issue 16): each does what a user's model might, and must cost one row --------

class _Tiny(nn.Module):
    """A model whose forward the subclasses make misbehave; a parameter, so that train mode has one to step."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.scale, x.mean(dim=(2, 3))

    def Embedding(self, x):  # noqa: N802
        return self.forward(x)[1]


class _ExitsCleanly(_Tiny):
    def forward(self, x):
        import sys

        sys.exit(0)


class _ExitsHard(_Tiny):
    def forward(self, x):
        import os

        os._exit(0)


class _ExitsThroughLibc(_Tiny):
    """``_exit(0)`` of the C library: no Python code sees it, the process just ends with status 0."""

    def forward(self, x):
        import ctypes

        ctypes.CDLL(None)._exit(0)


class _Chatty(_Tiny):
    """Prints one very long line (over the csv module's 131072-character field limit), then dies by a signal."""

    def forward(self, x):
        import os
        import signal
        import sys

        sys.stdout.write("chatter " * 200_000 + "\n")  # 1.6 MB, one line
        print("the last words", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class _NaN(_Tiny):
    def forward(self, x):
        return x * self.scale * float("nan"), x.mean(dim=(2, 3))


class _WrongShape(_Tiny):
    def forward(self, x):
        return x[..., :-1] * self.scale, x.mean(dim=(2, 3))


def exits(input_size, preset, **overrides):
    return _ExitsCleanly()


def exits_hard(input_size, preset, **overrides):
    return _ExitsHard()


def exits_through_libc(input_size, preset, **overrides):
    return _ExitsThroughLibc()


def chatty(input_size, preset, **overrides):
    return _Chatty()


def nan_output(input_size, preset, **overrides):
    return _NaN()


def wrong_shape(input_size, preset, **overrides):
    return _WrongShape()


def fine(input_size, preset, **overrides):
    return _Tiny()


# a family whose name holds U+2028 (LINE SEPARATOR), which str.splitlines() takes for a line end
globals()["line\u2028separator"] = fine
