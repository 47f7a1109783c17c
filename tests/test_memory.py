"""The live-tensor peak (``tensor_peak_mib``, ``bench/trackers/memory.py``) on a CPU, and the memory
model's prediction each row carries (``predicted_tensor_mib``, ``prediction_error_pct``).

Every figure here is a count of bytes, not a time: deterministic on any machine, however busy.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.core.cases import Case
from bench.core.measure import Settings, measure_case
from bench.core.steps import prepare
from bench.core.validity import predicted_tensor_peak
from bench.plan.reference import measure_live_peak
from bench.trackers import memory
from bench.trackers.device import device_facts
from bench.units import MIB

CPU = torch.device("cpu")
# the acceptance pair: training at 1280x152 with eager attention (the tiny preset, to stay fast)
WIDE_TRAIN = Case(family="transformer", preset="tiny", size="1280x152", attention="eager", mode="train", batch=1)
FAST = Settings(warmup=1, min_iters=1, max_iters=1, min_time_s=0.0, memory_iters=1, predict_memory=False)


def live_peak_mib(case: Case) -> float:
    """The memory pass on a prepared case: one step (AdamW's state created), then the live-tensor step."""
    scenario = prepare(case, CPU)
    try:
        stats = memory.memory_pass(scenario.step, CPU, 1, model=scenario.model, optimizer=scenario.optimizer,
                                   inputs=scenario.inputs)
        return stats.tensor_peak_mib
    finally:
        scenario.close()


@pytest.fixture(scope="module")
def wide_peaks() -> dict[tuple[int, bool], float]:
    """tensor_peak_mib of the acceptance pair at batch 1, 2 and 4, with and without checkpointing."""
    return {(batch, ckpt): live_peak_mib(dataclasses.replace(WIDE_TRAIN, batch=batch, checkpointing=ckpt))
            for batch in (1, 2, 4) for ckpt in (False, True)}


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_checkpointing_keeps_fewer_live_tensors_in_a_wide_eager_training_step(wide_peaks, batch):
    without, with_ckpt = wide_peaks[(batch, False)], wide_peaks[(batch, True)]
    assert with_ckpt < without, (batch, with_ckpt, without)
    assert with_ckpt < 0.8 * without  # the eager (B, h, N, N) maps of every block are no longer kept for backward


@pytest.mark.parametrize("ckpt", [False, True])
def test_the_live_tensor_peak_grows_with_the_batch(wide_peaks, ckpt):
    peaks = [wide_peaks[(batch, ckpt)] for batch in (1, 2, 4)]
    assert peaks[0] < peaks[1] < peaks[2], peaks
    # weights and AdamW state do not grow with the batch; activations do, in proportion: (4 - 1) / (2 - 1)
    assert (peaks[2] - peaks[0]) / (peaks[1] - peaks[0]) == pytest.approx(3, rel=0.1)


def test_the_starting_tensors_are_counted_once_each_by_storage():
    case = dataclasses.replace(WIDE_TRAIN, batch=2)
    scenario = prepare(case, CPU)
    try:
        scenario.step()
        scenario.optimizer.zero_grad(set_to_none=True)  # what the tracker does first, as the step would
        model, optimizer, inputs = scenario.model, scenario.optimizer, scenario.inputs
        # an independent count: parameters, buffers, AdamW's moments and step counters, the inputs, and the
        # positional table the model caches; each by its elements, nothing by storage
        by_hand = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
        by_hand += sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                       if isinstance(v, torch.Tensor))
        by_hand += inputs.numel() * inputs.element_size()
        by_hand += sum(t.numel() * t.element_size() for t in model._pos_cache.values())
        held = memory.held_tensors(model, optimizer, inputs)
        assert memory.storage_bytes(held) == by_hand
        assert memory.storage_bytes(held + held + [inputs[:1], inputs.view(-1)]) == by_hand  # views and repeats are free
        peak = memory.cpu_tensor_peak(scenario.step, model, optimizer, inputs)
        assert peak.start_bytes == by_hand and peak.peak_bytes > 2 * by_hand and peak.events > 0
    finally:
        scenario.close()


@pytest.mark.parametrize("case", [
    dataclasses.replace(WIDE_TRAIN, batch=2),
    Case(family="cnn", preset="tiny", size="1280x152", attention="none", mode="train", batch=2),
    Case(family="transformer", preset="tiny", size="201x201", precision="amp-bf16", attention="flash", mode="infer", batch=2),
], ids=lambda c: c.id)
def test_the_rows_tensor_peak_agrees_with_an_independent_count_within_5_percent(case):
    """The row's figure (a prepared case mid-run: weights, gradients, AdamW state and inputs counted by
    storage, plus the allocator's running total during one step) against ``bench.plan.reference``: the
    same step on a fresh build, every byte counted from an empty allocator (weights, optimizer state,
    inputs and the step's peak alike)."""
    row = measure_case(case, CPU, device_facts(CPU), FAST).row
    assert row["status"] == "ok", row["reason"]
    independent = measure_live_peak(case, case.batch).peak_bytes / MIB
    assert row["tensor_peak_mib"] == pytest.approx(independent, rel=0.05)
    assert row["rss_peak_mib"] > row["tensor_peak_mib"]  # the RSS holds the interpreter and torch besides


def test_the_row_carries_the_memory_models_prediction_and_its_error():
    case = Case(family="transformer", preset="tiny", size="201x201", attention="eager", mode="infer", batch=2)
    row = measure_case(case, CPU, device_facts(CPU), dataclasses.replace(FAST, predict_memory=True)).row
    assert row["status"] == "ok", row["reason"]
    predicted, measured = row["predicted_tensor_mib"], row["tensor_peak_mib"]
    assert row["prediction_error_pct"] == pytest.approx(100 * (predicted - measured) / measured)
    assert abs(row["prediction_error_pct"]) < 5  # the model traces this very step; only kernels' scratch escapes it
    again = predicted_tensor_peak(dataclasses.replace(case, batch=4), "cpu", measured)  # one fit per configuration
    assert again["predicted_tensor_mib"] > predicted


def test_a_case_the_model_cannot_trace_keeps_its_row_without_a_prediction():
    assert predicted_tensor_peak(Case(family="tests.plugins:raising", preset="x", attention="none"), "cpu", 10.0) == {}


def test_on_cuda_the_tensor_peak_is_the_allocators_peak_allocated(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 300 * MIB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 512 * MIB)
    monkeypatch.setattr(memory, "cpu_tensor_peak", lambda *a, **k: pytest.fail("the CPU tracker ran for a GPU"))
    model = torch.nn.Linear(2, 2)
    stats = memory.memory_pass(lambda: None, torch.device("cuda:0"), 1, model=model, inputs=torch.ones(1, 2))
    assert calls == ["reset"]
    assert stats.tensor_peak_mib == stats.alloc_peak_mib == 300 and stats.reserved_peak_mib == 512


def test_without_a_model_the_memory_pass_measures_no_tensor_peak():
    assert memory.memory_pass(lambda: torch.ones(4), CPU, 1).tensor_peak_mib is None
