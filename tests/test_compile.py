"""torch.compile through the harness: the compiled step is what is timed, the first step (compilation
included) is recorded apart from the statistics, and the compiled graphs are released with the case.

The CPU ``quick`` matrix runs one compiled transformer case (tests/test_cases.py); here a smaller one of
each family goes through ``measure_case``, the same path as ``python -m bench run`` and ``pytest bench``.
"""

from __future__ import annotations

import statistics

import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.utils import counters

from ae_models import build_model
from bench.core.cases import Case
from bench.core.measure import Settings, measure_case
from bench.trackers.device import device_facts
from bench.trackers.latency import time_steps

CPU = torch.device("cpu")
SETTINGS = Settings(warmup=2, min_iters=5, max_iters=5, min_time_s=0.0, memory_iters=1)
CASES = [
    Case(family="cnn", preset="tiny", size="64x64", attention="none", compile="default", mode="infer", batch=2),
    Case(family="transformer", preset="tiny", size="64x64", attention="flash", compile="default", mode="train", batch=2),
]


def _forward_code(case: Case):
    """The code object dynamo attaches its compiled entries to: the model class's forward."""
    with torch.device("meta"):
        return type(build_model(case.family, case.preset, case.hw)).forward.__code__


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def compiled_case(request):
    case = request.param
    # one thread: two OpenMP threads wait on each other at every parallel loop while another job holds a
    # core, and a compiled 5 ms step was seen at 750 ms (tests/test_compare.py's docstring has the story)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch._dynamo.reset()
        graphs_before = counters["stats"]["unique_graphs"]
        loop: dict = {}

        def timed_loop(step, iters):  # the harness's own timer, with what had happened when timing began
            loop["graphs_at_start"] = counters["stats"]["unique_graphs"] - graphs_before
            loop["samples"], timer = time_steps(step, CPU, iters)
            loop["graphs_at_end"] = counters["stats"]["unique_graphs"] - graphs_before
            return loop["samples"], timer

        row = measure_case(case, CPU, device_facts(CPU), SETTINGS, timed_loop=timed_loop).row
        return case, row, counters["stats"]["unique_graphs"] - graphs_before, loop
    finally:
        torch.set_num_threads(threads)


def test_the_compiled_case_runs_and_says_so(compiled_case):
    case, row, _, _ = compiled_case
    assert row["status"] == "ok", row["reason"]
    assert row["compile"] == "default" and "compile-default" in row["case_id"]


def test_the_timed_step_is_the_compiled_one_compiled_once(compiled_case):
    """Dynamo captured the model's forward (AOTAutograd its backward in train) once: a second graph means a
    guard failed on a later call and the model was compiled again (the transformer's position-embedding
    cache, written on the first call, did that: 7 s more on the second step on this machine)."""
    _, _, graphs, _ = compiled_case
    assert graphs == 1


def test_the_first_step_records_the_compilation_apart_from_the_statistics(compiled_case):
    """The compilation happens in the first step, which is recorded (``first_step_ms``) and kept out of every
    statistic: told by events, not by clocks (a busy machine can make a compiled step as slow as compiling).
    The graph was compiled before the timed loop began and not again inside it, and the row's statistics are
    those of the timed loop's samples alone."""
    _, row, _, loop = compiled_case
    assert loop["graphs_at_start"] == loop["graphs_at_end"] == 1
    assert row["first_step_ms"] > 0 and row["iters"] == len(loop["samples"]) == SETTINGS.min_iters
    assert row["median_ms"] == pytest.approx(statistics.median(loop["samples"]) * 1e3, rel=1e-5)
    assert row["mean_ms"] == pytest.approx(statistics.mean(loop["samples"]) * 1e3, rel=1e-5)  # the mean would show it


def test_the_compiled_graphs_are_released_with_the_case(compiled_case):
    case, _, _, _ = compiled_case
    assert _debug_get_cache_entry_list(_forward_code(case)) == []  # torch._dynamo.reset() ran when the case ended


def test_an_uncompiled_case_leaves_no_compiled_entry():
    case = Case(family="cnn", preset="tiny", size="64x64", attention="none", mode="infer", batch=2)
    torch._dynamo.reset()
    graphs_before = counters["stats"]["unique_graphs"]
    torch.set_num_threads(1)  # as above; tests/conftest.py puts the count back
    row = measure_case(case, CPU, device_facts(CPU), SETTINGS).row
    assert row["status"] == "ok" and row["compile"] == "off"
    assert counters["stats"]["unique_graphs"] == graphs_before
