"""Shared test setup: every test runs on CPU, seeded, with two threads (the CI machines' cores)."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def deterministic_cpu():
    """Seed torch and pin the thread count, so figures do not depend on the test order or machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
