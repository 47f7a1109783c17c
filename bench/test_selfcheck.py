"""The harness's cross-checks, on request: ``pytest bench --ae-selfcheck``.

- Timing cross-checks (the harness against ``torch.utils.benchmark``, our Block against
  ``nn.TransformerEncoderLayer``) record their figure, with the spread of their rounds, in the run's
  ``selfcheck.json`` and on the terminal. They do not assert an agreement: a timing assertion fails
  when someone else uses the machine, which says nothing about the code. The behaviour behind them
  is tested in tests/ (same arithmetic in both blocks, one timer for both faces).
- The memory model against real steps (no timing: it holds on a busy machine): for each
  configuration the model (``bench/plan/predictor.py``: fake tensors, storage accounting, lines in
  the batch) predicts the peak of live tensor memory of a training step on this CPU; the step then
  runs for real and ``bench/plan/reference.py`` reads the peak from the CPU allocator's events
  (``torch.profiler``). They must agree within 10%. By default only the tiny preset runs (16
  configurations, real steps of at most 16 images); ``--ae-plan-accuracy all`` (or
  ``small,medium``) runs every preset at 201x201 and 1280x152, fp32 and amp-bf16, flash and eager,
  with and without checkpointing. ``python -m bench plan-check`` prints the same table without pytest.
"""

from __future__ import annotations

import contextlib

import pytest

from ae_models import PRESETS
from bench.plan.budget import Budget
from bench.plan.check import check_case, check_table
from bench.plan.defaults import ACCURACY_ATTENTION, ACCURACY_PRECISIONS, ACCURACY_SIZES, CHECK_BATCH_CAP
from bench.plan.planner import config_label
from bench.selfcheck.crosschecks import HARNESS_CASES, block_speed, timer_agreement
from bench.units import parse_bytes


@pytest.mark.parametrize("case", HARNESS_CASES, ids=[c.id for c in HARNESS_CASES])
def test_harness_against_torch_benchmark_timer(case, ae_session, record_property):
    s = ae_session.selection
    result = timer_agreement(case, s.device, s.facts)
    record_property("throughput_ratio", result.ratio)
    ae_session.record_selfcheck(result.as_dict())


def test_block_against_torch_transformer_encoder_layer(ae_session):
    for row in block_speed():
        ae_session.record_selfcheck(row)


# -- the memory model against real steps ------------------------------------------------------------

TOLERANCE = 0.10
BUDGET = "8GiB"
DEFAULT_BATCH_CAP = 16   # the default (tiny) subset runs small real steps; any other selection checks up to batch 64


def _presets(config) -> list[str]:
    text = config.getoption("--ae-plan-accuracy", "tiny") or "tiny"
    if text.strip().lower() == "all":
        return list(PRESETS)
    presets = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise pytest.UsageError(f"--ae-plan-accuracy: unknown preset {', '.join(unknown)}; choose from {', '.join(PRESETS)} or all")
    return presets


def pytest_generate_tests(metafunc):
    if "accuracy_case" in metafunc.fixturenames:
        from bench.plan.check import accuracy_grid

        cases = accuracy_grid(_presets(metafunc.config), ACCURACY_SIZES, ACCURACY_PRECISIONS, ACCURACY_ATTENTION)
        metafunc.parametrize("accuracy_case", cases, ids=[config_label(c) for c in cases])


@pytest.fixture(scope="module")
def accuracy_rows(request):
    rows: list = []
    yield rows
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if rows and reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line("")
            reporter.write_line(f"memory model vs live-tensor peak of real CPU training steps (tolerance {TOLERANCE:.0%}):")
            for line in check_table(rows).splitlines():
                reporter.write_line(line)


def test_memory_model_matches_live_peak(accuracy_case, accuracy_rows, ae_session, request):
    default = (request.config.getoption("--ae-plan-accuracy", "tiny") or "tiny") == "tiny"
    row = check_case(accuracy_case, Budget(parse_bytes(BUDGET)), DEFAULT_BATCH_CAP if default else CHECK_BATCH_CAP)
    accuracy_rows.append(row)
    ae_session.record_selfcheck({"check": "memory model vs live-tensor peak", "config": config_label(accuracy_case),
                                 "batch": row.batch, "status": row.status,
                                 "error_pct": None if row.error is None else 100 * row.error})
    if row.status != "ok":
        pytest.skip(f"{config_label(accuracy_case)} does not fit in {BUDGET}: nothing to check")
    assert abs(row.error) <= TOLERANCE, (
        f"{config_label(accuracy_case)} at batch {row.batch}: predicted {row.predicted_bytes / 2**20:.1f} MiB, "
        f"live peak {row.measured_bytes / 2**20:.1f} MiB ({100 * row.error:+.1f}%)")
