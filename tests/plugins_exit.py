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
