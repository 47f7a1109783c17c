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
