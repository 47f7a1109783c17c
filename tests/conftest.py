"""Shared test setup: every test runs on CPU, seeded, with one torch thread (child processes too).

One thread because the CI machine has two cores and keeps one of them busy with another process for
the whole suite: two OpenMP threads would wait for each other at every parallel loop while the busy
process holds a core, which makes each model step 10-50x slower and changes no result a test checks.
"""

from __future__ import annotations

import os

# before torch is imported here, and inherited by every command line a test runs in a child process
os.environ["OMP_NUM_THREADS"] = "1"

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
torch.set_num_threads(1)  # for module- and session-scoped fixtures too (torch may have been imported before this file)


@pytest.fixture(autouse=True)
def deterministic_cpu():
    """Seed torch and pin the thread count, so figures do not depend on the test order or the machine's load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
