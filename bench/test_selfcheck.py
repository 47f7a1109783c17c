"""The harness's cross-checks, on request: ``pytest bench --ae-selfcheck``.

Each records its figure (with the spread of its rounds) in the run's ``selfcheck.json`` and on
the terminal; the report's validity section quotes them. They do not assert an agreement: a
timing assertion fails when someone else uses the machine, which says nothing about the code.
The behaviour behind them is tested in tests/ (same arithmetic in both blocks, the timer path).
"""

from __future__ import annotations

import pytest

from bench.selfcheck.crosschecks import HARNESS_CASES, block_speed, timer_agreement


@pytest.mark.parametrize("case", HARNESS_CASES, ids=[c.id for c in HARNESS_CASES])
def test_harness_against_torch_benchmark_timer(case, ae_session, record_property):
    s = ae_session.selection
    result = timer_agreement(case, s.device, s.facts)
    record_property("throughput_ratio", result.ratio)
    ae_session.record_selfcheck(result.as_dict())


def test_block_against_torch_transformer_encoder_layer(ae_session):
    for row in block_speed():
        ae_session.record_selfcheck(row)
