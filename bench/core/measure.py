"""One case, end to end: build, warm up, time, a memory pass, FLOPs and kernels, device state.

The phases never overlap: the timed loop runs alone; memory polling, FLOP counting and kernel
detection each run their own extra steps afterwards. Any failure becomes the row's status.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from ae_models.attention import record_attention_kernels

from bench.core.cases import SEQUENCE_MODES, Case
from bench.core.runner import CaseRun, run_case
from bench.core.validity import predicted_tensor_peak, rate_against_peak, refuse_impossible
from bench.trackers.calibration import timer_floor_ms
from bench.trackers.device import DeviceFacts, cuda_scope, peak_for
from bench.trackers.flops import count_step_flops
from bench.trackers.latency import NOISE_THRESHOLD, plan_iterations, summarize, time_steps
from bench.trackers.memory import memory_pass
from bench.trackers.nvml import NVML
from bench.runs.provenance import utc_now
from bench.core.steps import Scenario, timed_first_step
from bench.runs.schema import empty_row

# (step, iterations) -> per-iteration seconds and the timer's name
TimedLoop = Callable[[Callable[[], object], int], tuple[list[float], str]]


@dataclass
class Settings:
    warmup: int = 3            # untimed steps, the first (compiling) one included
    min_iters: int = 10        # at least this many timed iterations ...
    max_iters: int = 200       # ... at most this many ...
    min_time_s: float = 1.0    # ... and enough to fill this long
    memory_iters: int = 2      # steps in the memory pass
    noise_threshold: float = NOISE_THRESHOLD
    predict_memory: bool = True  # each row's memory-model prediction (bench/core/memory_model.py; one fit per configuration)
    processes: int = 1         # fresh processes per case (bench/core/processes.py): the build-to-build spread

    @classmethod
    def from_dict(cls, values: dict) -> "Settings":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown timing setting(s) {', '.join(unknown)}; known: {', '.join(cls.__dataclass_fields__)}")
        settings = cls(**known)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse, in one line, a value that would make every case an error row (``"abc"``, nan, a negative count)."""
        for name, least in (("warmup", 0), ("min_iters", 1), ("max_iters", 1), ("memory_iters", 1), ("processes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"[timing] {name} = {value!r}: expected a whole number >= {least}")
        for name, least in (("min_time_s", 0.0), ("noise_threshold", 1e-9)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not least <= value < math.inf:
                raise ValueError(f"[timing] {name} = {value!r}: expected a finite number {'>= 0' if not least else '> 0'}")
        if self.min_iters > self.max_iters:
            raise ValueError(f"[timing] min_iters = {self.min_iters} is above max_iters = {self.max_iters}")


@dataclass
class Measurement:
    row: dict
    samples_s: Optional[list[float]] = None
    process_index: Optional[list[int]] = None  # per sample, the process that took it (several --processes)


def base_row(case: Case, facts: DeviceFacts, run_id: str) -> dict:
    row = empty_row()
    row.update(case.fields())
    if case.mode not in SEQUENCE_MODES:
        row.update(seq_len=None, encoder=None)  # they do not apply: empty cells
    row.update(run_id=run_id, case_key=case.key, case_id=case.id, device=facts.type, device_name=facts.name,
               torch=torch.__version__, threads=torch.get_num_threads(), reason="")
    return row


@contextlib.contextmanager
def phase(row: dict, column: str) -> Iterator[None]:
    """Add the wall seconds of the block to ``row[column]`` (one of ``PHASE_COLUMNS``), however the block ends."""
    start = time.perf_counter()
    try:
        yield
    finally:
        row[column] = (row.get(column) or 0.0) + time.perf_counter() - start


def measure_case(case: Case, device: torch.device, facts: DeviceFacts, settings: Settings, run_id: str = "",
                 timed_loop: Optional[TimedLoop] = None) -> Measurement:
    """Measure ``case``; never raises for a failing case (the row says what happened)."""
    row = base_row(case, facts, run_id)
    measured: dict = {}

    def body(run: CaseRun) -> None:
        with phase(row, "build_s"):
            scenario = run.prepare()
        measured["samples"] = _measure(scenario, case, device, facts, settings, row, timed_loop)

    with cuda_scope(device), phase(row, "case_s"):  # cuda:N current while it runs: events, streams and kernels of that GPU
        outcome = run_case(case, device, body)
    row.update(status=outcome.status, reason=outcome.reason, timestamp=utc_now())
    if outcome.ok:  # a figure outside physics makes the row invalid (its samples kept, for the record)
        refuse_impossible(row, _timer_floor(device))
    return Measurement(row, measured.get("samples") if outcome.ok else None)


def _timer_floor(device: torch.device) -> Optional[float]:
    try:
        return timer_floor_ms(device)
    except Exception:  # noqa: BLE001 - no floor known: that one check is skipped
        return None


def _measure(scenario: Scenario, case: Case, device: torch.device, facts: DeviceFacts, settings: Settings, row: dict,
             timed_loop: Optional[TimedLoop]) -> list[float]:
    """The phases of one prepared case, each filling its columns of ``row``; returns the timed samples (s)."""
    model = scenario.model
    row["params"] = sum(p.numel() for p in model.parameters())
    cfg = getattr(model, "config", None) or getattr(getattr(model, "autoencoder", None), "config", None)  # the pipeline's encoder
    if cfg is not None:
        row["latent"] = getattr(cfg, "latent_dim", row["latent"])
        row["tokenizer"] = getattr(cfg, "tokenizer", None) or row["tokenizer"]
    with phase(row, "warmup_s"):
        first_s = timed_first_step(scenario)
        step_s = first_s
        for _ in range(max(0, settings.warmup - 1)):
            step_s = timed_first_step(scenario)
    iters = plan_iterations(step_s, settings.min_iters, settings.max_iters, settings.min_time_s)

    nvml = NVML.get() if device.type == "cuda" else None
    handle = nvml.handle(device.index or 0) if nvml and nvml.available else None
    energy_start = nvml.energy_mj(handle) if handle is not None else None
    throttle_start = nvml.throttle_counters(handle) if handle is not None else None
    with phase(row, "timed_loop_s"):
        samples, timer = (timed_loop or (lambda step, n: time_steps(step, device, n)))(scenario.step, iters)
    energy_end = nvml.energy_mj(handle) if handle is not None else None
    # the SM clock and the loop's slowdowns, read before the memory pass and FLOP count run
    after_loop = nvml.after_loop(handle, throttle_start) if handle is not None else {}

    stats = summarize(samples, settings.noise_threshold)
    row.update(stats.as_dict())
    row.update(timer=timer, first_step_ms=first_s * 1e3, warmup_iters=max(1, settings.warmup),
               images_per_s=case.images / (stats.median_ms / 1e3))
    sequence = case.mode in SEQUENCE_MODES
    if sequence:  # a batch is `batch` sequences of `seq_len` frames; each frame is one image through the encoder
        row.update(sequences_per_s=case.batch / (stats.median_ms / 1e3), frames_per_s=row["images_per_s"])
    if energy_start is not None and energy_end is not None and energy_end > energy_start:
        row["energy_j_per_image"] = (energy_end - energy_start) / 1e3 / (len(samples) * case.images)

    with phase(row, "memory_pass_s"):
        mem = memory_pass(scenario.step, device, settings.memory_iters, model=model, optimizer=scenario.optimizer,
                          inputs=scenario.inputs)
    row.update(mem.__dict__)
    if settings.predict_memory:
        with phase(row, "prediction_s"):
            row.update(predicted_tensor_peak(case, device.type, row["tensor_peak_mib"]))
    with phase(row, "check_s"):
        check_output(scenario)  # outside the timed loop: NaN/inf or a wrong shape makes the case an error row
    if sequence:  # a profiled pass of its own: the encoder's and the LSTM's shares of a step
        from bench.core.sequence_metrics import step_shares

        with phase(row, "flops_s"):
            row.update(step_shares(scenario.eager_step, device))

    with phase(row, "flops_s"), record_attention_kernels() as kernels:
        if sequence:
            from bench.core.sequence_metrics import sequence_flops

            flops = sequence_flops(scenario.eager_step, model, case)
        else:
            flops = count_step_flops(scenario.eager_step, model, hw=case.hw, batch=case.batch, mode=case.mode,
                                     checkpointing=case.checkpointing)
    row["attention_ran"] = "+".join(kernels) if kernels else ("none" if case.attention == "none" else "")
    row["gflop_per_image"] = flops.total / case.images / 1e9
    row["flops_source"] = flops.source
    row["attn_gflop_analytic"] = flops.attn_analytic / case.images / 1e9 if flops.attn_analytic is not None else None
    row["attn_gflop_counted"] = flops.attn_counted / case.images / 1e9
    row["tflops"] = flops.total / (stats.median_ms / 1e3) / 1e12
    row.update(rate_against_peak(row["tflops"], peak_for(facts, case.precision)))

    row.update(after_loop)
    return samples


class BadOutput(Exception):
    """The model's output is no reconstruction of its input: NaN/inf values, or another shape."""


def check_output(scenario: Scenario) -> None:
    """One more forward of the eager model on the case's inputs, untimed: the reconstruction must
    have the input's shape, and it (or the embedding, in ``embed`` mode) only finite values."""
    from bench.core.precision import autocast

    case, model, inputs = scenario.case, scenario.model, scenario.inputs
    if case.mode in SEQUENCE_MODES:
        return _check_sequence_output(scenario)
    with torch.no_grad(), autocast(case.precision, scenario.device):
        out = model.Embedding(inputs) if case.mode == "embed" else model(inputs)
    what = "embedding" if case.mode == "embed" else "reconstruction"
    if case.mode != "embed":
        out = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(inputs.shape):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise BadOutput(f"the reconstruction has shape {shape}, the input {tuple(inputs.shape)}")
    if not isinstance(out, torch.Tensor):
        raise BadOutput(f"the {what} is a {type(out).__name__}, not a tensor")
    finite = torch.isfinite(out)
    if not bool(finite.all()):
        raise BadOutput(f"the {what} holds {int((~finite).sum())} NaN/inf value(s) of {out.numel()}")


def _check_sequence_output(scenario: Scenario) -> None:
    """The pipeline's output must be ``(batch, seq_len, ...)``, one vector per frame, all finite."""
    from bench.core.precision import autocast

    case, inputs = scenario.case, scenario.inputs
    with torch.no_grad(), autocast(case.precision, scenario.device):
        out = scenario.model(inputs)
    if not isinstance(out, torch.Tensor) or tuple(out.shape[:2]) != tuple(inputs.shape[:2]):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BadOutput(f"the LSTM's output has shape {shape}, expected one vector per frame {tuple(inputs.shape[:2])} + (...)")
    finite = torch.isfinite(out)
    if not bool(finite.all()):
        raise BadOutput(f"the LSTM's output holds {int((~finite).sum())} NaN/inf value(s) of {out.numel()}")
