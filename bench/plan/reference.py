"""The peak of live tensor memory a real CPU step reaches, from the allocator's own events.

This is the independent measurement the memory model (``bench.core.memory_model``) is checked against. It
shares nothing with the model but the case: the model runs fake tensors and counts storages at the
dispatcher; this runs the real step (real kernels, real data) under ``torch.profiler`` with
``profile_memory=True`` and reads c10's CPU allocator reports: every allocation and release, each
with the allocator's running total. It also sees what no op returns (a kernel's own scratch buffers).

The profile starts before the model is built, so every byte the case allocates is in it; the peak
is the highest running total inside the counted step, less the total when the profile began.
AdamW's state is created first by one optimizer step on zero gradients (what the first training
step would create), so the counted step is the steady state without paying for a second full step.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench.core.cases import Case
from bench.core.steps import case_context, prepare

_WINDOW = "ae_bench_counted_step"


@dataclass
class LivePeak:
    case: Case
    peak_bytes: float        # highest live tensor bytes during the counted step
    start_bytes: float       # live bytes when the counted step began (weights, state, inputs)
    events: int              # allocator events seen
    seconds: float


def _walk(nodes):
    for node in nodes:
        yield node
        yield from _walk(node.children)


def measure_live_peak(case: Case, batch: int) -> LivePeak:
    """Run one steady-state step of ``case`` at ``batch`` on the CPU and return its live-memory peak."""
    from torch._C._profiler import _EventType

    case = dataclasses.replace(case, batch=batch, skip=None)
    gc.collect()
    started = time.perf_counter()
    with case_context(case), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        sc = prepare(case, torch.device("cpu"))
        if sc.optimizer is not None:  # create AdamW's state as the first step would, without its cost
            for p in sc.model.parameters():
                p.grad = torch.zeros_like(p)
            sc.optimizer.step()
            sc.optimizer.zero_grad(set_to_none=True)
        with record_function(_WINDOW):
            sc.step()
        sc.close()
        del sc
    seconds = time.perf_counter() - started
    nodes = list(_walk(prof.profiler.kineto_results.experimental_event_tree()))
    window = [n for n in nodes if n.name == _WINDOW]
    allocs = [n for n in nodes if n.tag == _EventType.Allocation]
    if not window or not allocs:
        raise RuntimeError("the profiler recorded no allocator events; is memory profiling available in this torch build?")
    lo, hi = window[0].start_time_ns, window[0].end_time_ns
    allocs.sort(key=lambda n: n.start_time_ns)
    first = allocs[0].extra_fields
    base = first.total_allocated - first.alloc_size  # the allocator's total when the profile began
    inside = [n.extra_fields.total_allocated for n in allocs if lo <= n.start_time_ns <= hi]
    before = [n.extra_fields.total_allocated for n in allocs if n.start_time_ns < lo]
    start = (before[-1] if before else base) - base
    peak = (max(inside) if inside else start + base) - base
    return LivePeak(case, float(max(peak, start)), float(start), len(allocs), seconds)
