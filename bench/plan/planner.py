"""Batch-size plan for a GPU memory budget: ``python -m bench plan --budget 8GiB [--gpu rtx4060]``.

For every configuration (family x preset x size x latent x precision x attention x checkpointing)
and mode (train, infer): the largest batch that fits the card, the recommended batch, the peak
memory at each, and where each figure comes from:

- ``measured``: searched on this GPU, whose memory is the budget;
- ``emulated``: searched on a larger GPU held to the budget (``set_per_process_memory_fraction``,
  the CUDA context and display reserve taken off first);
- ``predicted``: no GPU here; the memory model (``bench.plan.predictor``) fitted on this CPU and solved
  for the budget. Its error against real live-tensor peaks is measured by ``python -m bench plan-check``.

Budget accounting, what the card sees (all in bytes of the card's memory):

    card = allocator reserved peak + CUDA context and library workspaces + display reserve

- The allocator's reserved peak is ``torch.cuda.max_memory_reserved`` when measured; predicted,
  it is the model's peak of live tensors times ``1 + ALLOC_OVERHEAD`` (the caching allocator
  rounds blocks up and keeps freed blocks cached: reserved/allocated peaks of 1.05-1.2 are common
  for a training loop; the measured rows record both so the figure can be checked).
- The context is measured with NVML on a GPU (process memory minus the allocator's reserve after a
  cuBLAS call); predicted, it is ``DEFAULT_CONTEXT_MIB`` = 450 MiB: ~300-400 MiB of CUDA context
  with lazy module loading (CUDA >= 11.7, PyTorch's default; pytorch/pytorch#107667 and #109888
  quote ~300 and ~400 MiB), plus cuBLAS/cuBLASLt workspaces (a few MiB to 32 MiB per handle, by
  GPU generation; the allocator reserves them but no tensor owns them) and the kernels a training
  step loads lazily: 450 MiB errs on the safe side of these figures.
- The display reserve (``--display-reserve``, default 256 MiB) is what a desktop takes on a card
  that drives the monitor (compositor, browser): 150-400 MiB is typical; give 0 for a headless card.
- A batch fits when its reserved peak is at most ``(budget - context - display) x (1 - margin)``;
  the margin (``--margin``, default 5%) covers fragmentation over a long run and the few tens of MiB
  a driver holds back (an "8 GB" card shows 8188 MiB in nvidia-smi).

Recommended batch: measured, the smallest batch whose throughput is within 5% of the best batch
that fits (a larger batch costs memory for nothing); predicted, the largest power of two under the
predicted maximum, labelled ``predicted`` (a memory-only choice: measure on the GPU for throughput).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import io
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from bench.core.cases import Case, why_skip
from bench.trackers.device import DeviceFacts, gpu_table
from bench.plan.predictor import CATEGORIES, MemoryModel, check_fit, fit, largest_power_of_two, traced_case
from bench.plan.defaults import (
    ACCURACY_ATTENTION, ACCURACY_PRECISIONS, ACCURACY_SIZES, CHECK_BATCH_CAP, CHECK_MEMORY, DEFAULT_CONTEXT_MIB,
    DEFAULT_DISPLAY_RESERVE, DEFAULT_MARGIN, DEFAULT_MAX_BATCH, PLAN_MODES,
)
from bench.units import MIB, format_bytes, parse_bytes

ALLOC_OVERHEAD = 0.10           # predicted reserved = live tensors x (1 + this)
RECOMMEND_WITHIN = 0.05         # recommended: smallest batch within 5% of the best throughput
SEED_CLAIMS = Path(__file__).resolve().parents[1] / "data" / "seed_claims.toml"

MEASURED, EMULATED, PREDICTED = "measured", "emulated", "predicted"


# -- budget accounting ------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """What a card of ``card_bytes`` leaves to PyTorch's allocator, and the card-level totals."""

    card_bytes: int
    display_reserve: int = 256 * MIB
    context_bytes: int = DEFAULT_CONTEXT_MIB * MIB
    context_source: str = f"default: {DEFAULT_CONTEXT_MIB} MiB (CUDA context with lazy loading + cuBLAS workspaces)"
    margin: float = DEFAULT_MARGIN
    alloc_overhead: float = ALLOC_OVERHEAD

    def __post_init__(self) -> None:
        if self.card_bytes <= 0:
            raise ValueError(f"bad budget {self.card_bytes} bytes: expected a positive size such as 8GiB")
        if self.display_reserve < 0 or self.context_bytes < 0:
            raise ValueError("display reserve and context must be sizes >= 0")
        if not 0 <= self.margin < 1:
            raise ValueError(f"bad margin {self.margin!r}: expected a fraction from 0 to below 1, e.g. 0.05")
        if self.alloc_overhead < 0:
            raise ValueError(f"bad allocator overhead {self.alloc_overhead!r}: expected a fraction >= 0")

    @property
    def allocator_limit(self) -> int:
        """Bytes PyTorch's allocator may reserve before the card is full (can be <= 0)."""
        return self.card_bytes - self.display_reserve - self.context_bytes

    @property
    def usable(self) -> float:
        """The reserved peak a batch may reach and still count as fitting (the margin taken off)."""
        return max(0.0, self.allocator_limit * (1 - self.margin))

    @property
    def live_limit(self) -> float:
        """The live-tensor peak a predicted batch may reach (the allocator's overhead taken off)."""
        return self.usable / (1 + self.alloc_overhead)

    def predicted_reserved(self, live_bytes: float) -> float:
        return live_bytes * (1 + self.alloc_overhead)

    def card_total(self, reserved_bytes: float) -> float:
        """What the card holds at that reserved peak: reserved + context + display."""
        return reserved_bytes + self.context_bytes + self.display_reserve

    def fits(self, reserved_bytes: float) -> bool:
        return reserved_bytes <= self.usable

    def describe(self) -> list[str]:
        """The accounting, one line each, for plan.md."""
        return [
            f"  card budget                               {self.card_bytes / MIB:8.0f} MiB  ({format_bytes(self.card_bytes)})",
            f"- display reserve                           {self.display_reserve / MIB:8.0f} MiB",
            f"- CUDA context and library workspaces       {self.context_bytes / MIB:8.0f} MiB  ({self.context_source})",
            f"= allocator limit                           {self.allocator_limit / MIB:8.0f} MiB",
            f"x (1 - {self.margin:.0%} margin) = usable reserved peak  {self.usable / MIB:8.0f} MiB  (a batch fits when the allocator's "
            f"reserved peak is at most this)",
            f"/ {1 + self.alloc_overhead:.2f} allocator overhead = live tensors  {self.live_limit / MIB:8.0f} MiB  (a predicted batch fits "
            f"when the model's live-tensor peak is at most this)",
        ]


def find_gpu(name: str) -> dict:
    """The ``data/gpus.toml`` entry for ``rtx4060``, ``"RTX 4070 Laptop"``, ... (letters and digits compared)."""
    def norm(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    wanted = norm(name)
    if not wanted:
        raise ValueError(f"bad GPU name {name!r}")
    table = gpu_table()
    exact = [g for g in table if wanted in (norm(g["name"]), norm(g["match"]), norm(g["name"]).replace("nvidiageforce", ""),
                                           norm(g["name"]).replace("nvidia", ""))]
    if len(exact) == 1:
        return exact[0]
    partial = [g for g in table if wanted in norm(g["name"])]
    if len(partial) == 1:
        return partial[0]
    known = ", ".join(g["name"] for g in table)
    raise ValueError(f"unknown or ambiguous GPU {name!r}; known: {known}")


# -- search --------------------------------------------------------------------------------------

@dataclass
class Trial:
    batch: int
    status: str                  # ok, oom, over-budget, error
    reserved_bytes: float = 0.0
    allocated_bytes: float = 0.0
    reason: str = ""


@dataclass
class SearchResult:
    max_batch: int               # 0: not even one image fits
    trials: list[Trial]
    reason: str = ""

    def trial(self, batch: int) -> Optional[Trial]:
        return next((t for t in self.trials if t.batch == batch), None)


class SearchError(RuntimeError):
    """A trial failed for a reason other than memory: the search cannot go on."""


def search_max_batch(run_trial: Callable[[int], Trial], budget: Budget, cap: int = DEFAULT_MAX_BATCH) -> SearchResult:
    """Largest batch whose trial runs and fits ``budget``: double from 1, then bisect.

    ``run_trial(b)`` runs one batch size in a clean state and reports its peaks or its OOM. A trial
    that ran but whose reserved peak is over ``budget.usable`` counts as not fitting
    (``over-budget``): the margin is part of the budget.
    """
    if cap < 1:
        raise ValueError(f"bad batch cap {cap}: expected >= 1")
    trials: list[Trial] = []

    def fits(batch: int) -> bool:
        trial = run_trial(batch)
        if trial.status == "ok" and not budget.fits(trial.reserved_bytes):
            trial = dataclasses.replace(trial, status="over-budget",
                                        reason=f"reserved peak {trial.reserved_bytes / MIB:.0f} MiB > {budget.usable / MIB:.0f} MiB usable")
        trials.append(trial)
        if trial.status == "error":
            raise SearchError(f"batch {batch}: {trial.reason}")
        return trial.status == "ok"

    if not fits(1):
        first = trials[0]
        need = f"{first.reserved_bytes / MIB:.0f} MiB reserved" if first.reserved_bytes else "more than the allocator may reserve"
        return SearchResult(0, trials, f"does not fit: even a batch of 1 needs {need} ({first.status}: {first.reason}); "
                                       f"the budget leaves {budget.usable / MIB:.0f} MiB to the allocator "
                                       f"({format_bytes(budget.card_bytes)} card - context - display reserve - margin)")
    good, bad = 1, None
    batch = 2
    while batch <= cap:
        if fits(batch):
            good = batch
            batch *= 2
        else:
            bad = batch
            break
    if bad is None:
        if good < cap and fits(cap):
            good = cap
        elif good < cap:
            bad = cap
        if bad is None:
            return SearchResult(good, trials, f"capped: batch {cap} still fits (the search stops there)")
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return SearchResult(good, trials)


def recommend_measured(throughput: dict[int, float], within: float = RECOMMEND_WITHIN) -> int:
    """The smallest batch whose images/s is within ``within`` of the best."""
    if not throughput:
        raise ValueError("no throughput measured to recommend from")
    best = max(throughput.values())
    return min(b for b, ips in throughput.items() if ips >= (1 - within) * best)


def recommend_predicted(max_batch: int) -> int:
    """Predicted only: the largest power of two at or under the predicted maximum."""
    return largest_power_of_two(max_batch)


# -- CUDA: measured search, emulating a smaller card on a larger one --------------------------

def measure_context_bytes(device: torch.device) -> tuple[Optional[int], str]:
    """CUDA context + library workspaces of this process, from NVML (or cudaMemGetInfo), or ``(None, why)``."""
    from bench.trackers.nvml import NVML

    index = device.index or 0
    a = torch.randn(1024, 1024, device=device)
    (a @ a).sum().item()  # create the cuBLAS handle and its workspace, as a training step would
    del a
    torch.cuda.synchronize(device)
    reserved = torch.cuda.memory_reserved(device)
    nvml = NVML.get()
    handle = nvml.handle(index) if nvml.available else None
    used = nvml.process_used_mib(handle) if handle is not None else None
    if used is not None:
        return int(used * MIB - reserved), f"measured with NVML on {torch.cuda.get_device_name(index)} (process memory - allocator reserve)"
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free - reserved), (f"measured with cudaMemGetInfo on {torch.cuda.get_device_name(index)} "
                                          "(device used - allocator reserve; other processes on the GPU count too)")


def cuda_trial(case: Case, device: torch.device, batch: int, steps: int = 3) -> Trial:
    """One batch size in a clean state: fresh model and optimizer, ``steps`` steps, peaks recorded."""
    from bench.core.measure import is_oom
    from bench.core.steps import case_context, prepare, release_memory

    release_memory(device)
    scenario = None
    try:
        with case_context(case):
            scenario = prepare(dataclasses.replace(case, batch=batch, skip=None), device)
            for _ in range(steps):
                scenario.step()
            torch.cuda.synchronize(device)
        return Trial(batch, "ok", torch.cuda.max_memory_reserved(device), torch.cuda.max_memory_allocated(device))
    except Exception as err:  # noqa: BLE001 - an OOM is an answer; anything else stops this search
        reserved = torch.cuda.max_memory_reserved(device)
        if is_oom(err):
            return Trial(batch, "oom", reserved, torch.cuda.max_memory_allocated(device), _one_line(err, 160))
        return Trial(batch, "error", reserved, 0.0, f"{type(err).__name__}: {_one_line(err, 200)}")
    finally:
        if scenario is not None:
            scenario.close()
        scenario = None
        gc.collect()
        torch.cuda.empty_cache()


def cuda_throughput(case: Case, device: torch.device, batch: int, min_time_s: float = 0.5) -> float:
    """Images/s of ``case`` at ``batch``: warm-up, then CUDA-event timed steps (median)."""
    from bench.trackers.latency import plan_iterations, summarize, time_steps
    from bench.core.steps import case_context, prepare, timed_first_step

    scenario = prepare(dataclasses.replace(case, batch=batch, skip=None), device)
    try:
        with case_context(case):
            step_s = min(timed_first_step(scenario) for _ in range(3))
            samples, _ = time_steps(scenario.step, device, plan_iterations(step_s, 5, 50, min_time_s))
        return batch / (summarize(samples).median_ms / 1e3)
    finally:
        scenario.close()


@contextlib.contextmanager
def held_to_budget(device: torch.device, budget: Budget):
    """Emulate the budget's card on a larger GPU: the allocator may reserve no more than the card would leave it."""
    total = torch.cuda.get_device_properties(device).total_memory
    if budget.allocator_limit <= 0:
        raise ValueError(f"the budget {format_bytes(budget.card_bytes)} is no larger than the context and display reserve")
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget.allocator_limit / total), device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


# -- one configuration ------------------------------------------------------------------------------

PLAN_COLUMNS = (
    "family", "preset", "size", "latent", "tokenizer", "precision", "attention", "checkpointing", "compile", "mode",
    "status", "source", "device", "target",
    "budget_mib", "display_reserve_mib", "context_mib", "context_source", "margin", "usable_mib",
    "max_batch", "max_card_mib", "max_reserved_mib", "max_tensors_mib",
    "recommended_batch", "recommended_rule", "rec_card_mib", "rec_reserved_mib", "rec_tensors_mib",
    "images_per_s_max", "images_per_s_recommended",
    "fixed_mib", "per_image_mib", *[f"{c}_mib" for c in CATEGORIES],
    "predicted_max_batch", "prediction_error_pct", "prediction_tensors_error_pct", "fit_error_pct", "trials", "notes", "reason",
)


def config_label(case: Case) -> str:
    """``transformer-tiny-201x201-fp32-flash-ckpt``: the case's id without mode and batch."""
    return case.id.rsplit("-", 2)[0]


def configurations(cases: Iterable[Case], modes: Iterable[str] = PLAN_MODES) -> list[Case]:
    """One case per configuration and mode; the matrix's batch and modes do not matter to a plan."""
    out: dict[str, Case] = {}
    for case in cases:
        for mode in modes:
            c = dataclasses.replace(case, mode=mode, batch=1, skip=None)
            out.setdefault(c.key, c)
    return list(out.values())


def cuda_target_skip(case: Case) -> Optional[str]:
    """Why ``case`` cannot run on an Ada GPU (compute capability 8.9), judged without one."""
    if case.attention in ("flash", "cudnn") and case.precision in ("fp32", "tf32"):
        return (f"{case.attention} attention on CUDA needs fp16 or bf16 inputs, got {case.precision} "
                "(use amp-fp16/amp-bf16 or another kernel)")
    return None


@dataclass
class PlanEnv:
    """Where and how the plan's figures are made."""

    budget: Budget
    target: str                        # what the budget is: "NVIDIA GeForce RTX 4060 (8 GiB)" or "8.00 GiB card"
    device: torch.device
    facts: DeviceFacts
    source: str = PREDICTED            # measured, emulated or predicted
    cap: int = DEFAULT_MAX_BATCH
    model_target: str = "cuda"
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr)

    @property
    def device_label(self) -> str:
        if self.source == PREDICTED:
            return f"memory model traced on {self.facts.name} (fake tensors, CUDA semantics)"
        if self.source == EMULATED:
            return f"{self.facts.name} held to {format_bytes(self.budget.card_bytes)}"
        return self.facts.name

    def skip_reason(self, case: Case) -> Optional[str]:
        if case.compile != "off":
            return "the plan runs eager steps; a compiled step keeps other activations (plan it with compile off)"
        if self.source == PREDICTED:
            return cuda_target_skip(case)
        return why_skip(case, self.facts)


def _one_line(err: BaseException, limit: int = 240) -> str:
    text = " ".join(str(err).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _mib(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value / MIB, 1)


def base_row(case: Case, env: PlanEnv) -> dict:
    budget = env.budget
    row = dict.fromkeys(PLAN_COLUMNS)
    row.update({k: v for k, v in case.fields().items() if k in PLAN_COLUMNS})
    row.update(status="ok", source=env.source, device=env.device_label, target=env.target,
               budget_mib=_mib(budget.card_bytes), display_reserve_mib=_mib(budget.display_reserve),
               context_mib=_mib(budget.context_bytes), context_source=budget.context_source, margin=budget.margin,
               usable_mib=_mib(budget.usable), notes="", reason="")
    return row


def _model_columns(row: dict, model: MemoryModel, budget: Budget, batch: int) -> None:
    if batch < 1:
        batch = 1
    fixed, per_image = model.line_at(batch)
    row.update(fixed_mib=_mib(fixed), per_image_mib=round(per_image / MIB, 3))
    for category, value in model.breakdown(batch).items():
        row[f"{category}_mib"] = _mib(value)


def predicted_figures(model: MemoryModel, budget: Budget, batch: int) -> tuple[float, float, float]:
    """(card, reserved, tensors) bytes the model predicts at ``batch``."""
    tensors = model.peak(batch)
    reserved = budget.predicted_reserved(tensors)
    return budget.card_total(reserved), reserved, tensors


def plan_case(case: Case, env: PlanEnv) -> tuple[dict, Optional[MemoryModel]]:
    """Plan one configuration and mode: a plan.csv row, and the memory model when there is one."""
    from ae_models import UnsupportedAttentionError

    row = base_row(case, env)
    skip = env.skip_reason(case)
    if skip:
        row.update(status="unsupported", reason=skip)
        return row, None
    budget = env.budget
    model: Optional[MemoryModel] = None
    try:
        model = fit(case, env.model_target)
    except UnsupportedAttentionError as err:
        row.update(status="unsupported", reason=str(err))
        return row, None
    except Exception as err:  # noqa: BLE001 - a model that cannot be traced is an error row, not a crash
        if env.source == PREDICTED:
            row.update(status="error", reason=f"the memory model cannot trace this case: {type(err).__name__}: {_one_line(err)}")
            return row, None
        row["notes"] = f"no prediction: {type(err).__name__}: {_one_line(err)}"
    predicted_max = None
    if model is not None:
        predicted_max = min(model.max_batch(budget.live_limit), env.cap)
        row["predicted_max_batch"] = predicted_max
        _, notes = traced_case(case, env.model_target)
        if case.family == "cnn":
            notes.append("conv scratch/workspaces not modelled (on CPU the model is 9-45% low for the CNN: "
                         "plan-check --families cnn); measure on a GPU")
        if notes:
            row["notes"] = "; ".join(notes)
    if env.source == PREDICTED:
        _fill_predicted(row, model, budget, predicted_max, env)
    else:
        _fill_measured(row, case, model, env)
    return row, model


def _fill_predicted(row: dict, model: MemoryModel, budget: Budget, max_batch: int, env: PlanEnv) -> None:
    if max_batch < 1:
        card, reserved, tensors = predicted_figures(model, budget, 1)
        fixed, per_image = model.line_at(1)
        row.update(status="does-not-fit", max_batch=0, recommended_batch=0, reason=(
            f"does not fit: even a batch of 1 is predicted to need {card / MIB:.0f} MiB of the card "
            f"({tensors / MIB:.0f} MiB of tensors: {fixed / MIB:.0f} MiB fixed + {per_image / MIB:.1f} MiB per image), "
            f"more than the {budget.card_bytes / MIB:.0f} MiB budget allows"))
        _model_columns(row, model, budget, 1)
        return
    row["fit_error_pct"] = round(100 * check_fit(model, max_batch), 2)
    rec = recommend_predicted(max_batch)
    for prefix, batch in (("max", max_batch), ("rec", rec)):
        card, reserved, tensors = predicted_figures(model, budget, batch)
        row.update({f"{prefix}_card_mib": _mib(card), f"{prefix}_reserved_mib": _mib(reserved), f"{prefix}_tensors_mib": _mib(tensors)})
    row.update(max_batch=max_batch, recommended_batch=rec,
               recommended_rule="predicted: largest power of two under the predicted maximum (memory only)")
    if max_batch >= env.cap:
        row["reason"] = f"capped: the model allows at least {env.cap} (the search limit)"
    _model_columns(row, model, budget, max_batch)


def _fill_measured(row: dict, case: Case, model: Optional[MemoryModel], env: PlanEnv) -> None:
    budget = env.budget
    try:
        search = search_max_batch(lambda b: cuda_trial(case, env.device, b), budget, env.cap)
    except SearchError as err:
        row.update(status="error", reason=str(err))
        return
    row["trials"] = " ".join(f"{t.batch}:{t.status}" for t in search.trials)
    if search.max_batch < 1:
        row.update(status="does-not-fit", max_batch=0, recommended_batch=0, reason=search.reason)
        return
    candidates = sorted({b for b in (1 << i for i in range(search.max_batch.bit_length())) if b <= search.max_batch} | {search.max_batch})
    throughput = {}
    for batch in candidates:
        try:
            throughput[batch] = cuda_throughput(case, env.device, batch)
        except Exception as err:  # noqa: BLE001 - a batch that fit the search but not the timing run is left out
            env.log(f"  batch {batch}: not timed ({type(err).__name__}: {err})")
    rec = recommend_measured(throughput) if throughput else search.max_batch
    row.update(max_batch=search.max_batch, recommended_batch=rec, reason=search.reason,
               recommended_rule=f"{env.source}: smallest batch within {RECOMMEND_WITHIN:.0%} of the best images/s",
               images_per_s_max=round(throughput.get(search.max_batch, float("nan")), 1),
               images_per_s_recommended=round(throughput.get(rec, float("nan")), 1))
    for prefix, batch in (("max", search.max_batch), ("rec", rec)):
        trial = search.trial(batch) or cuda_trial(case, env.device, batch)
        row.update({f"{prefix}_card_mib": _mib(budget.card_total(trial.reserved_bytes)),
                    f"{prefix}_reserved_mib": _mib(trial.reserved_bytes), f"{prefix}_tensors_mib": _mib(trial.allocated_bytes)})
    if model is not None:
        _model_columns(row, model, budget, search.max_batch)
        # the model against this GPU at the measured maximum: the card-level figure (reserved, with the
        # assumed allocator overhead) and the tensors alone (the model's own part)
        at_max = search.trial(search.max_batch)
        tensors = model.peak(search.max_batch)
        if at_max.reserved_bytes:
            row["prediction_error_pct"] = round(100 * (budget.predicted_reserved(tensors) / at_max.reserved_bytes - 1), 2)
        if at_max.allocated_bytes:
            row["prediction_tensors_error_pct"] = round(100 * (tensors / at_max.allocated_bytes - 1), 2)


# -- the whole plan ------------------------------------------------------------------------------------

@dataclass
class PlanResult:
    rows: list[dict]
    models: dict = field(default_factory=dict)   # config key -> MemoryModel
    env: Optional[PlanEnv] = None
    seconds: float = 0.0


def make_env(device: torch.device, facts: DeviceFacts, budget_text: Optional[str], gpu: Optional[str] = None,
             display_reserve: str = DEFAULT_DISPLAY_RESERVE, margin: float = DEFAULT_MARGIN,
             context: Optional[str] = None, predict_only: bool = False, cap: int = DEFAULT_MAX_BATCH) -> PlanEnv:
    """Resolve the budget (``--budget`` or the ``--gpu``'s memory), the context figure and the source."""
    entry = find_gpu(gpu) if gpu else None
    if budget_text:
        card = parse_bytes(budget_text)
    elif entry is not None:
        card = int(entry["memory_gib"] * 2**30)
    else:
        raise ValueError("give the card's memory with --budget (e.g. 8GiB) or a known card with --gpu (e.g. rtx4060)")
    if card <= 0:
        raise ValueError(f"bad budget {budget_text!r}: expected a positive size such as 8GiB")
    if cap < 1:
        raise ValueError(f"bad --max-batch {cap}: expected a positive integer")
    target = f"{format_bytes(card)} card"
    if entry is not None:
        target = f"{entry['name']} ({format_bytes(card)}"
        target += ")" if abs(entry["memory_gib"] * 2**30 - card) < 2**20 else f" of its {entry['memory_gib']} GiB, as --budget says)"
    source = PREDICTED
    context_bytes, context_source = DEFAULT_CONTEXT_MIB * MIB, Budget.context_source
    if device.type == "cuda" and torch.cuda.is_available() and not predict_only:
        total = torch.cuda.get_device_properties(device).total_memory
        if total < card * 0.98:
            raise ValueError(f"this GPU has {format_bytes(total)}, less than the {format_bytes(card)} budget: it cannot show "
                             "what the larger card holds; plan for this card's size or use --predict")
        source = EMULATED if total > card * 1.02 else MEASURED
        measured, how = measure_context_bytes(device)
        if measured is not None:
            context_bytes, context_source = measured, how
            if source == EMULATED:
                context_source += "; a large GPU's context can exceed a small card's, so the emulation errs on the safe side"
    if context:
        context_bytes, context_source = parse_bytes(context), "given with --context"
    budget = Budget(card, parse_bytes(display_reserve), context_bytes, context_source, margin)
    if budget.allocator_limit <= 0:
        raise ValueError(f"the budget {format_bytes(card)} leaves nothing to PyTorch: the CUDA context "
                         f"({context_bytes / MIB:.0f} MiB) and the display reserve ({budget.display_reserve / MIB:.0f} MiB) take it all")
    return PlanEnv(budget, target, device, facts, source, cap)


def run_plan(cases: list[Case], env: PlanEnv, progress: bool = True) -> PlanResult:
    if env.source != PREDICTED and not torch.cuda.is_available():
        raise ValueError(f"a {env.source} plan needs a CUDA GPU, and this torch ({torch.__version__}) sees none")
    started = time.perf_counter()
    result = PlanResult([], {}, env)
    hold = held_to_budget(env.device, env.budget) if env.source == EMULATED else contextlib.nullcontext()
    with hold:
        for i, case in enumerate(cases, 1):
            t0 = time.perf_counter()
            row, model = plan_case(case, env)
            result.rows.append(row)
            if model is not None:
                result.models[case.key] = model
            if progress:
                found = "" if row["max_batch"] is None else f", max batch {row['max_batch']}"
                env.log(f"[{i}/{len(cases)}] {config_label(case)} {case.mode}: {row['status']}{found} "
                        f"({time.perf_counter() - t0:.1f}s)")
    result.seconds = time.perf_counter() - started
    return result


# -- outputs: plan.csv and plan.md ---------------------------------------------------------------------

def _cell(value) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else f"{value:.6g}"
    return value


def plan_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PLAN_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in PLAN_COLUMNS])
    return buffer.getvalue()


def load_seed_batch_claims(path: Path = SEED_CLAIMS) -> list[dict]:
    """The seed's parameter table rows (preset, "Memory (8GB GPU)", "Recommended Batch"), from the claims file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        section = data["parameter_counts"]
        rows = [dict(r) for r in section["row"]]
        for r in rows:
            r.setdefault("size", section.get("size", "201x201"))
            r.setdefault("latent", section.get("latent"))
            for key in ("preset", "memory", "gib", "recommended_batch", "batch"):
                r[key]  # noqa: B018 - every row needs these
        return rows
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"seed claims file {path} has no usable [parameter_counts] rows "
                         f"(preset, memory, gib, recommended_batch, batch): {err}") from None


def _fmt(value, digits: int = 0) -> str:
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)



def _variant(row: dict) -> list[str]:
    """What tells a plan row apart beyond family, preset and size: precision, kernel, ckpt, latent."""
    out = [row["precision"]]
    if row["attention"] != "none":
        out.append(row["attention"])
    if row["checkpointing"]:
        out.append("ckpt")
    if row["latent"]:
        out.append(f"z{row['latent']}")
    return out

def plan_markdown(result: PlanResult, seed_rows: Optional[list[dict]] = None) -> str:
    env = result.env
    budget = env.budget
    out = [f"## Batch-size plan: {env.target}", ""]
    sources = sorted({r["source"] for r in result.rows if r["status"] in ("ok", "does-not-fit")})
    out.append(f"Figures are **{', '.join(sources) or env.source}**: {env.device_label}. "
               f"{len(result.rows)} configurations x modes in {result.seconds:.0f} s.")
    if env.source == PREDICTED:
        out.append("Predicted figures come from the memory model (`bench/plan/predictor.py`): the case's own step traced with fake "
                   "tensors at two batch sizes, every moment a line `fixed + per_image x batch`, the peak their upper envelope. "
                   "Its error against the live-tensor peaks of real CPU steps is printed by `python -m bench plan-check`; "
                   "the GPU-only parts (allocator overhead, context, foreach AdamW, CUDA autocast policy) are checked when "
                   "the plan runs on a GPU, where each row gets `prediction_error_pct`.")
    out += ["", "What the card holds, and what is left for a batch (card = reserved peak + context + display reserve):", "", "```"]
    out += budget.describe()
    out += ["```"]
    out += ["", "| configuration | mode | max batch | card MiB at max | recommended | card MiB at rec | fixed MiB | MiB per image | source | note |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in result.rows:
        case_label = "-".join(str(x) for x in (r["family"], r["preset"], r["size"]))
        extras = _variant(r)
        note = r["reason"] or r["notes"] or ""
        if r["status"] not in ("ok",):
            note = f"**{r['status']}**: {note}"
        out.append(f"| {case_label} {' '.join(extras)} | {r['mode']} | {_fmt(r['max_batch'])} | {_fmt(r['max_card_mib'])} | "
                   f"{_fmt(r['recommended_batch'])} | {_fmt(r['rec_card_mib'])} | {_fmt(r['fixed_mib'], 1)} | "
                   f"{_fmt(r['per_image_mib'], 2)} | {r['source']} | {note.replace('|', '/')} |")
    if seed_rows:
        out += _seed_section(result, seed_rows)
    out.append("")
    return "\n".join(out)


def _seed_section(result: PlanResult, seed_rows: list[dict]) -> list[str]:
    env = result.env
    budget = env.budget
    size = seed_rows[0].get("size", "201x201")
    latent = seed_rows[0].get("latent")
    out = ["", f"### Against the seed's table ({size}, training)", "",
           f"The seed's \"Memory (8GB GPU)\" and \"Recommended Batch\" columns (its table is at latent {latent}; our rows use "
           "the latent shown, the preset's own when none is), next to this plan. \"card MiB at the seed's batch\" is the "
           "memory model's figure for the top of the seed's range, with the same accounting as above.", "",
           "| preset | seed: memory | seed: batch | our configuration | our max batch | our recommended | "
           "card MiB at the seed's batch | seed's batch fits? | source |",
           "|---|---|---|---|---:|---:|---:|---|---|"]
    by_preset = {r["preset"]: r for r in seed_rows}
    for row in result.rows:
        seed = by_preset.get(row["preset"])
        if seed is None or row["size"] != size or row["mode"] != "train" or not str(row["family"]).startswith("transformer"):
            continue
        key = Case(**{k: row[k] for k in Case.__dataclass_fields__ if k not in ("skip", "batch")}, batch=1).key
        model = result.models.get(key)
        top = max(seed["batch"])
        at_seed, fits = "–", "–"
        if model is not None:
            card = budget.card_total(budget.predicted_reserved(model.peak(top)))
            at_seed = f"{card / MIB:,.0f}"
            fits = "yes" if budget.fits(budget.predicted_reserved(model.peak(top))) else "**no**"
        parts = [row["family"], *_variant(row)]
        label = " ".join(str(p) for p in parts)
        status = "" if row["status"] == "ok" else f" ({row['status']})"
        out.append(f"| {row['preset']} | {seed['memory']} | {seed['recommended_batch']} | {label}{status} | "
                   f"{_fmt(row['max_batch'])} | {_fmt(row['recommended_batch'])} | {at_seed} | {fits} | {row['source']} |")
    return out


def write_plan(result: PlanResult, out_dir: Path, seed_rows: Optional[list[dict]] = None) -> tuple[Path, Path]:
    """Write ``plan.csv`` and ``plan.md`` into ``out_dir`` (atomically) and return their paths."""
    from bench.runs.files import atomic_write_text

    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / "plan.csv", out_dir / "plan.md"
    atomic_write_text(csv_path, plan_csv(result.rows))
    atomic_write_text(md_path, plan_markdown(result, seed_rows))
    return csv_path, md_path




@dataclass
class CheckRow:
    case: Case
    status: str                        # ok, does-not-fit
    batch: int = 0
    predicted_bytes: float = 0.0
    measured_bytes: float = 0.0
    fits_8gib: int = 0                 # the plan's predicted max batch for the budget (CPU semantics)
    seconds: float = 0.0

    @property
    def error(self) -> Optional[float]:
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes if self.measured_bytes else None


def accuracy_grid(presets: Iterable[str], sizes: Iterable[str] = ACCURACY_SIZES,
                  precisions: Iterable[str] = ACCURACY_PRECISIONS, attention: Iterable[str] = ACCURACY_ATTENTION,
                  checkpointing: Iterable[bool] = (False, True), family: str = "transformer",
                  modes: Iterable[str] = ("train",)) -> list[Case]:
    return [Case(family=family, preset=p, size=s, precision=q, attention=a, checkpointing=c, mode=m, batch=1)
            for p in presets for s in sizes for q in precisions for a in attention for c in checkpointing for m in modes]


def check_case(case: Case, budget: Budget, batch_cap: int = CHECK_BATCH_CAP, memory_cap: int = parse_bytes(CHECK_MEMORY)) -> CheckRow:
    """Predict ``case``'s CPU step peak and measure it: at the largest power of two under the budget's
    maximum, ``batch_cap`` and ``memory_cap``."""
    from bench.plan.reference import measure_live_peak

    started = time.perf_counter()
    model = fit(case, "cpu")
    fits = model.max_batch(budget.live_limit)
    if fits < 1:
        return CheckRow(case, "does-not-fit", seconds=time.perf_counter() - started)
    batch = max(1, largest_power_of_two(min(fits, batch_cap, model.max_batch(memory_cap))))
    measured = measure_live_peak(case, batch)
    return CheckRow(case, "ok", batch, model.peak(batch), measured.peak_bytes, fits, time.perf_counter() - started)


def check_table(rows: list[CheckRow]) -> str:
    lines = ["| configuration | mode | max batch in budget (model) | checked at | predicted MiB | live peak MiB (profiler) | error | s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {config_label(r.case)} | {r.case.mode} | 0 | – | – | – | does not fit | {r.seconds:.1f} |")
            continue
        lines.append(f"| {config_label(r.case)} | {r.case.mode} | {r.fits_8gib} | {r.batch} | {r.predicted_bytes / MIB:,.1f} | "
                     f"{r.measured_bytes / MIB:,.1f} | {100 * r.error:+.2f}% | {r.seconds:.1f} |")
    checked = [r for r in rows if r.error is not None]
    if checked:
        worst = max(checked, key=lambda r: abs(r.error))
        lines.append("")
        lines.append(f"worst error {100 * worst.error:+.2f}% ({config_label(worst.case)} at batch {worst.batch}); "
                     f"{len(checked)} checked, {len(rows) - len(checked)} do not fit; {sum(r.seconds for r in rows):.0f} s")
    return "\n".join(lines)


def write_selection_plan(selection, run_dir: Path, budget_text: str, modes: Iterable[str] = PLAN_MODES) -> tuple[Path, Path]:
    """Plan a selection's configurations for a card of ``budget_text`` and write plan.csv / plan.md into ``run_dir``
    (pytest's ``--ae-plan-budget``)."""
    env = make_env(selection.device, selection.facts, budget_text)
    result = run_plan(configurations(selection.cases, modes), env, progress=False)
    return write_plan(result, run_dir, load_seed_batch_claims())
