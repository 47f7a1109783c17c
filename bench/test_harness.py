"""The harness checked against an independent timer.

The throughput the harness reports for a case must agree with ``torch.utils.benchmark.Timer``
timing the same step, within 10%. Run alone: ``pytest bench/test_harness.py -s`` prints the ratios.
"""

import pytest
import torch
from torch.utils.benchmark import Timer

from bench.cases import Case
from bench.device import device_facts, resolve_device
from bench.latency import time_steps
from bench.measure import Settings, measure_case
from bench.scenarios import prepare, synchronizer

CASES = [
    Case(family="transformer", preset="tiny", size="201x201", attention="flash", mode="infer", batch=8),
    Case(family="transformer", preset="tiny", size="640x152", attention="eager", mode="train", batch=4),
    Case(family="cnn", preset="tiny", size="201x201", attention="none", mode="infer", batch=8),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_harness_throughput_agrees_with_torch_benchmark_timer(case, record_property):
    device = resolve_device("auto")
    facts = device_facts(device)
    settings = Settings(warmup=3, min_iters=10, max_iters=400, min_time_s=1.0, memory_iters=1)
    ours = measure_case(case, device, facts, settings).row
    assert ours["status"] == "ok", ours["reason"]

    scenario = prepare(case, device)
    sync = synchronizer(device)

    def step():
        scenario.step()
        sync()

    for _ in range(3):
        step()
    # Timer runs on one thread unless told; give it the threads the harness had
    theirs = Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=1.0)
    scenario.close()
    theirs_images_per_s = case.batch / theirs.median
    ratio = ours["images_per_s"] / theirs_images_per_s
    record_property("throughput_ratio", ratio)
    print(f"\n{case.id}: harness {ours['images_per_s']:.1f} images/s, torch.utils.benchmark.Timer "
          f"{theirs_images_per_s:.1f} images/s, ratio {ratio:.3f}")
    assert 0.9 <= ratio <= 1.1
