"""Profiling: where the time and the memory of a step go (``python -m bench profile``).

Profiling is a run of its own, never part of a timed run: the profiler slows every op down
(``record_shapes`` and ``profile_memory`` most of all), so its numbers never enter results.csv,
and the step time the roofline uses is measured here without the profiler. Under pytest,
``pytest bench --ae-profile DIR`` profiles each case after all the timed cases have run.

Per case, in order: build the scenario; warm up; time a few plain steps (no profiler, no scopes:
``plain_step_ms``); put the model's modules in profiler scopes (``bench.profile.attribution``); run
``torch.profiler`` with a schedule (``wait=1, warmup=1, active=steps``), timing each recorded step
with a wall clock around it; count FLOPs (``bench.trackers.flops``) and bytes moved (``bench.profile.roofline``)
over one more eager step each; on CUDA, a memory pass of one step with the allocator's history
recorded (apart from the profiled steps, whose time it would inflate). It writes, in
``OUT/<case id>/``:

- ``categories.csv`` / ``.md``: time by category in ms per step and as a share of the wall time
  of a profiled step, and the check ``coverage`` = sum of the categories / wall time. On a CPU
  the categories add up to the wall time (Python between ops is ``host overhead``, caught by the
  ``ae.step`` scope); on CUDA the time with no kernel running is the ``idle`` row, and coverage
  is the share of the step the GPU was busy.
- ``top_ops.csv`` / ``.md``: the operators with the most self time, by input shapes and dtypes.
- ``trace.json.gz``: the Chrome / Perfetto trace, gzipped (https://ui.perfetto.dev opens it as it is).
- ``memory.md``, ``memory_breakdown.csv`` (parameters, gradients, optimizer state and inputs from
  tensor sizes; on CUDA the allocator peak, and activations = peak minus those),
  ``memory_ops.csv`` (per-op memory from ``profile_memory``), and on CUDA
  ``memory_snapshot.pickle`` (open it in https://pytorch.org/memory_viz).
- ``summary.json``: all of it as data; ``bench.profile.report`` builds the overview from these.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from bench.profile.attribution import MIB, STEP_LABEL, attention_kernel, attribute, category_table, labelled, memory_ops, top_ops
from bench.core.cases import Case
from bench.trackers.device import DeviceFacts, cuda_scope, peak_for
from bench.trackers.flops import count_step_flops
from bench.trackers.latency import summarize, time_steps
from bench.core.measure import Settings
from bench.core.runner import CaseRun, run_case
from bench.runs.provenance import utc_now
from bench.runs.files import atomic_write_text
from bench.runs.markdown import frame_table
from bench.profile.roofline import count_step_bytes, place
from bench.profile.defaults import DEFAULT_STEPS

SCHEDULE_WAIT, SCHEDULE_WARMUP = 1, 1  # the profiler's own warm-up: its first recorded steps are slower


# -- memory -----------------------------------------------------------------------------------------

def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: dict[tuple, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            seen.setdefault((t.device, t.data_ptr()), t.numel() * t.element_size())
    return sum(seen.values())


def static_memory(model: nn.Module, optimizer: Optional[torch.optim.Optimizer], inputs: torch.Tensor) -> dict[str, float]:
    """MiB held by parameters, gradients, optimizer state and the input batch (from tensor sizes)."""
    params = list(model.parameters())
    state = [] if optimizer is None else [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {"parameters": _unique_bytes(params) / MIB, "gradients": _unique_bytes(p.grad for p in params if p.grad is not None) / MIB,
            "optimizer state": _unique_bytes(state) / MIB, "inputs": _unique_bytes([inputs]) / MIB}


def cuda_memory_pass(scenario, snapshot_path: Path) -> dict[str, float]:
    """One step with the allocator's history recorded (apart from the profiled steps, whose time it
    would inflate); returns the peak allocated MiB and writes the snapshot for pytorch.org/memory_viz."""
    device = scenario.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    torch.cuda.memory._record_memory_history(max_entries=100_000)
    try:
        scenario.step()
        torch.cuda.synchronize(device)
        snapshot_path.parent.mkdir(parents=True, exist_ok=True)
        torch.cuda.memory._dump_snapshot(str(snapshot_path))
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    return {"peak allocated": torch.cuda.max_memory_allocated(device) / MIB,
            "peak reserved": torch.cuda.max_memory_reserved(device) / MIB}


def memory_breakdown(static: dict[str, float], peaks: Optional[dict[str, float]]) -> pd.DataFrame:
    """Rows of (part, MiB, how it was found). With a peak, activations = peak - the static parts
    (gradients counted whole: where the peak comes before backward made them all, a lower bound)."""
    rows = [{"part": k, "mib": v, "source": "tensor sizes"} for k, v in static.items()]
    if peaks:
        activations = peaks["peak allocated"] - sum(static.values())
        rows.append({"part": "activations and temporaries", "mib": max(0.0, activations),
                     "source": "peak allocated minus the parts above"})
        rows += [{"part": k, "mib": v, "source": "torch.cuda.max_memory_*"} for k, v in peaks.items()]
    else:
        rows.append({"part": "activations and temporaries", "mib": math.nan,
                     "source": "no allocator peak on a CPU; see memory_ops.csv (profile_memory) for what each op allocates"})
    return pd.DataFrame(rows)


# -- one case ------------------------------------------------------------------------------------------

@dataclass
class CaseProfile:
    """What :func:`profile_case` found; ``summary`` is what ``summary.json`` holds."""

    case: Case
    status: str
    summary: dict
    categories: Optional[pd.DataFrame] = None
    ops: Optional[pd.DataFrame] = None
    folder: Optional[Path] = None


def profile_case(case: Case, device: torch.device, facts: DeviceFacts, out_dir: Path, steps: int = DEFAULT_STEPS,
                 warmup: int = 2) -> CaseProfile:
    """Profile ``case`` and write its folder ``out_dir/<case id>/``; never raises for a failing case."""
    if steps < 1:
        raise ValueError(f"bad --steps {steps}: expected at least 1 profiled step")
    folder = Path(out_dir) / case.id
    summary: dict[str, Any] = {"case_id": case.id, "case_key": case.key, **case.fields(), "device": facts.type,
                               "device_name": facts.name, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "steps": steps, "created": utc_now()}
    found: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}

    def body(run: CaseRun) -> None:
        found["tables"] = _profile_prepared(case, run.prepare(), facts, folder, steps, warmup, summary)

    with cuda_scope(device):  # cuda:N current while it runs: the profiler's CUDA events, streams and snapshot are that GPU's
        outcome = run_case(case, device, body)
    summary.update(status=outcome.status)
    if not outcome.ok:
        summary["reason"] = outcome.reason
    if outcome.traceback:
        summary["traceback"] = outcome.traceback
    _write_json(folder / "summary.json", summary)
    if not outcome.ok:
        return CaseProfile(case, outcome.status, summary, folder=folder)
    categories, ops = found["tables"]
    return CaseProfile(case, "ok", summary, categories, ops, folder)


def _profile_prepared(case: Case, scenario, facts: DeviceFacts, folder: Path, steps: int, warmup: int,
                      summary: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    device = scenario.device
    on_cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if on_cuda else (lambda: None)
    for _ in range(max(1, warmup)):
        scenario.step()
    sync()
    plain, timer = time_steps(scenario.step, device, max(3, steps))
    plain_stats = summarize(plain)  # without profiler or scopes; the roofline uses its median
    plain_ms = plain_stats.median_ms

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    total = SCHEDULE_WAIT + SCHEDULE_WARMUP + steps
    walls: list[float] = []
    scopes = contextlib.nullcontext(0) if case.compile != "off" else labelled(scenario.model)
    with scopes as n_scopes, profile(activities=activities, record_shapes=True, profile_memory=True,
                                     schedule=schedule(wait=SCHEDULE_WAIT, warmup=SCHEDULE_WARMUP, active=steps, repeat=1)) as prof:
        for i in range(total):
            sync()
            start = time.perf_counter()
            with record_function(STEP_LABEL):
                scenario.step()
            sync()
            if i >= SCHEDULE_WAIT + SCHEDULE_WARMUP:
                walls.append(time.perf_counter() - start)
            prof.step()
    events = list(prof.events())
    folder.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(folder / "trace.json.gz"))  # gzipped: a few MB of JSON -> a tenth

    wall_ms = sum(walls) / len(walls) * 1e3
    attribution = attribute(events, on_device=on_cuda)
    kernel = attention_kernel(attribution.op_names)
    categories = category_table(attribution, steps, wall_ms, kernel)
    measured = categories[categories["category"] != "idle"]["ms_per_step"].sum()
    ops = top_ops(events, on_cuda, steps, wall_ms)
    mem_ops = memory_ops(events, steps)

    flops = count_step_flops(scenario.eager_step, scenario.model, hw=case.hw, batch=case.batch, mode=case.mode,
                             checkpointing=case.checkpointing)
    moved = count_step_bytes(scenario.eager_step)
    peak = peak_for(facts, case.precision)
    placement = None
    if flops.total > 0 and moved.total > 0 and peak.tflops > 0 and peak.bandwidth_gbs > 0:
        placement = place(flops.total, moved.total, plain_ms / 1e3, peak.tflops, peak.bandwidth_gbs)

    static = static_memory(scenario.model, scenario.optimizer, scenario.inputs)
    peaks = cuda_memory_pass(scenario, folder / "memory_snapshot.pickle") if on_cuda else None
    breakdown = memory_breakdown(static, peaks)

    shares = dict(zip(categories["category"], categories["share"]))
    summary.update(
        time_basis=attribution.basis, timer=timer, plain_step_ms=plain_ms, plain_step_min_ms=plain_stats.min_ms,
        plain_iters=plain_stats.iters, plain_noisy=plain_stats.noisy, profiled_wall_ms=wall_ms,
        profiler_overhead=wall_ms / plain_ms - 1 if plain_ms else None, attributed_ms=float(measured),
        coverage=float(measured / wall_ms) if wall_ms else None, module_scopes=n_scopes, attention_kernel=kernel,
        attention_requested=case.attention, top_category=max(shares, key=lambda c: shares[c]),
        categories=categories.to_dict(orient="records"),
        gflop_per_step=flops.total / 1e9, flops_source=flops.source, mb_moved_per_step=moved.total / 1e6,
        matmul_mb_moved_per_step=moved.matmul / 1e6,
        peak_tflops=peak.tflops, peak_source=peak.source, bandwidth_gbs=peak.bandwidth_gbs,
        bandwidth_source="table" if peak.source.startswith("table") else "measured: device-to-device copy",
        memory_mib={r["part"]: (None if isinstance(r["mib"], float) and math.isnan(r["mib"]) else r["mib"])
                    for r in breakdown.to_dict(orient="records")},
    )
    if placement is not None:
        summary.update(intensity=placement.intensity, achieved_tflops=placement.achieved_flops / 1e12,
                       roof_tflops=placement.roof_flops / 1e12, fraction_of_roof=placement.fraction_of_roof,
                       ridge=placement.ridge, bound=placement.bound)
    _write_case_files(folder, case, summary, categories, ops, breakdown, mem_ops)
    summary["files"] = sorted({p.name for p in folder.iterdir() if not p.name.startswith(".")} | {"summary.json"})
    return categories, ops


def _write_case_files(folder: Path, case: Case, summary: dict, categories: pd.DataFrame, ops: pd.DataFrame,
                      breakdown: pd.DataFrame, mem_ops: pd.DataFrame) -> None:
    wall, plain = summary["profiled_wall_ms"], summary["plain_step_ms"]
    head = (f"`{case.id}` on {summary['device_name']} ({summary['device']}), {summary['steps']} profiled steps, "
            f"{summary['time_basis']}. Wall time per profiled step {wall:.4g} ms (unprofiled {plain:.4g} ms); "
            f"sum of the categories / wall = {summary['coverage']:.3f}.")
    check = {"category": "**sum / wall**", "ms_per_step": summary["attributed_ms"], "share": summary["coverage"],
             "detail": f"the check: categories (without idle) over the wall time of a profiled step, {wall:.4g} ms"}
    cat = pd.concat([categories, pd.DataFrame([check])], ignore_index=True)
    atomic_write_text(folder / "categories.csv", categories.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(folder / "categories.md", f"# Time by category\n\n{head}\n\n" + frame_table(
        cat.assign(share_pct=100 * cat["share"]), [("category", "category", ""), ("ms_per_step", "ms / step", ".4g"),
                                                  ("share_pct", "% of step", ".1f"), ("detail", "what it holds", "")]))
    atomic_write_text(folder / "top_ops.csv", ops.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(folder / "top_ops.md", f"# Top operators by self time\n\n{head}\n\n" + frame_table(
        ops.assign(share_pct=100 * ops["share"]),
        [("op", "op", ""), ("category", "category", ""), ("input_shapes", "input shapes", ""), ("dtypes", "dtypes", ""),
         ("calls_per_step", "calls / step", ".3g"), ("self_ms_per_step", "self ms / step", ".4g"),
         ("share_pct", "% of step", ".1f"), ("total_ms_per_step", "total ms / step", ".4g")]))
    atomic_write_text(folder / "memory_breakdown.csv", breakdown.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(folder / "memory_ops.csv", mem_ops.to_csv(index=False, float_format="%.6g"))
    snapshot = "\n\nAllocator history: `memory_snapshot.pickle` (drop it on https://pytorch.org/memory_viz)." \
        if (folder / "memory_snapshot.pickle").exists() else ""
    atomic_write_text(folder / "memory.md", f"# Memory\n\n`{case.id}` on {summary['device_name']}.\n\n## Breakdown\n\n" + frame_table(
        breakdown, [("part", "part", ""), ("mib", "MiB", ".4g"), ("source", "how", "")]) + snapshot +
        "\n\n## Per operator (profile_memory: allocated minus freed inside the op itself)\n\n" + frame_table(
        mem_ops, [("op", "op", ""), ("calls_per_step", "calls / step", ".3g"),
                  ("cpu_self_mib_per_step", "CPU MiB / step", ".4g"), ("device_self_mib_per_step", "device MiB / step", ".4g")]))


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str, allow_nan=True) + "\n")


def warmup_steps(settings: Settings) -> int:
    """Untimed steps before the profiler starts: the timing settings' warm-up, at least two."""
    return max(2, settings.warmup)
