"""One case, end to end: build, warm up, time, a memory pass, FLOPs and kernels, device state.

The phases never overlap: the timed loop runs alone; memory polling, FLOP counting and kernel
detection each run their own extra steps afterwards. Any failure becomes the row's status.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ae_models import UnsupportedAttentionError
from ae_models.attention import record_attention_kernels

from bench.core.cases import Case
from bench.trackers.device import DeviceFacts, peak_for
from bench.trackers.flops import count_step_flops
from bench.trackers.latency import NOISE_THRESHOLD, plan_iterations, summarize, time_steps
from bench.trackers.memory import memory_pass
from bench.trackers.nvml import NVML
from bench.runs.provenance import utc_now
from bench.core.steps import case_context, prepare, release_memory, timed_first_step
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

    @classmethod
    def from_dict(cls, values: dict) -> "Settings":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown timing setting(s) {', '.join(unknown)}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**known)


@dataclass
class Measurement:
    row: dict
    samples_s: Optional[list[float]] = None


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(err, MemoryError))


def base_row(case: Case, facts: DeviceFacts, run_id: str) -> dict:
    row = empty_row()
    row.update(case.fields())
    row.update(run_id=run_id, case_key=case.key, case_id=case.id, device=facts.type, device_name=facts.name,
               torch=torch.__version__, threads=torch.get_num_threads(), reason="")
    return row


def measure_case(case: Case, device: torch.device, facts: DeviceFacts, settings: Settings, run_id: str = "",
                 timed_loop: Optional[TimedLoop] = None) -> Measurement:
    """Measure ``case``; never raises for a failing case (the row says what happened)."""
    row = base_row(case, facts, run_id)
    if case.skip:
        row.update(status="unsupported", reason=case.skip, timestamp=utc_now())
        return Measurement(row)
    scenario = model = None
    samples = None
    try:
        with case_context(case):
            scenario = prepare(case, device)
            model = scenario.model
            row["params"] = sum(p.numel() for p in model.parameters())
            cfg = getattr(model, "config", None)
            if cfg is not None:
                row["latent"] = getattr(cfg, "latent_dim", row["latent"])
                row["tokenizer"] = getattr(cfg, "tokenizer", None) or row["tokenizer"]
            first_s = timed_first_step(scenario)
            step_s = first_s
            for _ in range(max(0, settings.warmup - 1)):
                step_s = timed_first_step(scenario)
            iters = plan_iterations(step_s, settings.min_iters, settings.max_iters, settings.min_time_s)

            nvml = NVML.get() if device.type == "cuda" else None
            handle = nvml.handle(device.index or 0) if nvml and nvml.available else None
            energy_start = nvml.energy_mj(handle) if handle is not None else None
            samples, timer = (timed_loop or (lambda step, n: time_steps(step, device, n)))(scenario.step, iters)
            energy_end = nvml.energy_mj(handle) if handle is not None else None

            stats = summarize(samples, settings.noise_threshold)
            row.update(stats.as_dict())
            row.update(timer=timer, first_step_ms=first_s * 1e3, warmup_iters=max(1, settings.warmup),
                       images_per_s=case.batch / (stats.median_ms / 1e3))
            if energy_start is not None and energy_end is not None and energy_end > energy_start:
                row["energy_j_per_image"] = (energy_end - energy_start) / 1e3 / (len(samples) * case.batch)

            mem = memory_pass(scenario.step, device, settings.memory_iters)
            row.update(mem.__dict__)

            with record_attention_kernels() as kernels:
                flops = count_step_flops(scenario.eager_step, model, case)
            row["attention_ran"] = "+".join(kernels) if kernels else ("none" if case.attention == "none" else "")
            row["gflop_per_image"] = flops.total / case.batch / 1e9
            row["flops_source"] = flops.source
            row["attn_gflop_analytic"] = flops.attn_analytic / case.batch / 1e9 if flops.attn_analytic is not None else None
            row["attn_gflop_counted"] = flops.attn_counted / case.batch / 1e9
            row["tflops"] = flops.total / (stats.median_ms / 1e3) / 1e12
            peak = peak_for(facts, case.precision)
            row.update(peak_tflops=peak.tflops, peak_source=peak.source, mfu=row["tflops"] / peak.tflops if peak.tflops else None)

            if handle is not None:
                row["sm_clock_mhz"] = nvml.sm_clock_mhz(handle)
                reasons = nvml.throttle_reasons(handle)
                if reasons is not None:
                    row["throttle_reasons"] = "+".join(reasons)
                    row["throttled"] = bool(reasons)
        row["status"] = "ok"
    except UnsupportedAttentionError as err:
        row.update(status="unsupported", reason=str(err))
    except Exception as err:  # noqa: BLE001 - every failure becomes a row
        if is_oom(err):
            row.update(status="oom", reason=_one_line(err))
        else:
            row.update(status="error", reason=f"{type(err).__name__}: {_one_line(err)} [{_where(err)}]")
        samples = None
    finally:
        model = None  # noqa: F841 - drop this frame's reference before the memory is released
        if scenario is not None:
            scenario.close()
        else:
            release_memory(device, compiled=case.compile != "off")
    row["timestamp"] = utc_now()
    return Measurement(row, samples)


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _where(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"
