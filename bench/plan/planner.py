"""Batch-size plan for a GPU memory budget: ``python -m bench plan --budget 8GiB [--gpu rtx4060]``.

For every configuration (family x preset x size x latent x precision x attention x checkpointing)
and mode (train, infer): the largest batch that fits the card, the recommended batch, the peak
memory at each, and where each figure comes from:

- ``measured``: searched on this GPU, whose memory is the budget;
- ``emulated``: searched on a larger GPU held to the budget (``set_per_process_memory_fraction``,
  the CUDA context and display reserve taken off first);
- ``predicted``: no GPU here; the memory model (``bench.core.memory_model``) fitted on this CPU and solved
  for the budget. Its error against real live-tensor peaks is measured by ``python -m bench plan-check``.

The package, by concept: ``budget`` (what the card leaves to a batch; where the figures come from),
``search`` (double-then-bisect on a GPU, the recommended batch), this module (one plan row per
configuration and mode, and the plan loop), ``output`` (plan.csv, plan.md), ``check`` (plan-check),
``predictor`` and ``reference`` (the memory model and the measurement it is checked against).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Iterable, Optional

import torch

from bench.core.cases import Case
from bench.core.loop import Progress
from bench.core.runner import UNSUPPORTED, CaseRun, run_case
from bench.plan.budget import EMULATED, PREDICTED, Budget, PlanEnv, make_env
from bench.runs.contract import PLAN_MODES, config_key
from bench.plan.output import PLAN_COLUMNS, PlanResult, add_frames, cnn_note, load_seed_batch_claims, write_plan
from bench.core.memory_model import MemoryModel, check_fit, fit, traced_case
from bench.plan.search import (
    RECOMMEND_WITHIN, SearchError, TimingError, cuda_throughput, cuda_trial, held_to_budget, recommend_measured,
    recommend_predicted, search_max_batch,
)
from bench.trackers.device import lookup_gpu
from bench.units import MIB


def config_label(case: Case) -> str:
    """``transformer-tiny-201x201-fp32-flash-ckpt``: the case's id without mode and batch."""
    return case.id.removesuffix(f"-{case.mode}-b{case.batch}")


def configurations(cases: Iterable[Case], modes: Iterable[str] = PLAN_MODES) -> list[Case]:
    """One case per configuration and mode; the matrix's batch and modes do not matter to a plan."""
    out: dict[str, Case] = {}
    for case in cases:
        for mode in modes:
            c = dataclasses.replace(case, mode=mode, batch=1, skip=None)
            out.setdefault(c.key, c)
    return list(out.values())


def _mib(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value / MIB, 1)


def base_row(case: Case, env: PlanEnv) -> dict:
    budget = env.budget
    row = dict.fromkeys(PLAN_COLUMNS)
    row.update({k: v for k, v in case.fields().items() if k in PLAN_COLUMNS})
    row["config_key"] = config_key(case.key)  # the one join key: the report joins the run's rows on it
    if not case.seq_len:
        row.update(seq_len=None, encoder=None)  # not a sequence mode: empty cells
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
    row = base_row(case, env)
    fitted: dict[str, MemoryModel] = {}

    def trace(run: CaseRun) -> None:
        fitted["model"] = fit(case, env.model_target)

    # the memory model traces fake tensors: nothing is allocated on the plan's device
    outcome = run_case(case, torch.device("cpu"), trace, skip=env.skip_reason(case) or "")
    if outcome.status == UNSUPPORTED:
        row.update(status="unsupported", reason=outcome.reason)
        return row, None
    if not outcome.ok:  # a model that cannot be traced is an error row, not a crash
        if env.source == PREDICTED:
            row.update(status="error", reason=f"the memory model cannot trace this case: {outcome.reason}")
            return row, None
        row["notes"] = f"no prediction: {outcome.reason}"
    model = fitted.get("model")
    budget = env.budget
    predicted_max = None
    if model is not None:
        predicted_max = min(model.max_batch(budget.live_limit), env.cap)
        row["predicted_max_batch"] = predicted_max
        _, notes = traced_case(case, env.model_target)
        if case.family == "cnn":
            # the figure measured by plan-check (bench/plan/output.py); a sequence case's CNN trains only when fine-tuned
            notes.append(cnn_note(("train" if case.encoder == "finetune" else "infer") if case.seq_len else case.mode))
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
    if env.check_fit:  # a third trace, at the maximum: how straight the lines are (the partial plan skips it)
        row["fit_error_pct"] = round(100 * check_fit(model, max_batch), 2)
    rec = recommend_predicted(max_batch)
    for prefix, batch in (("max", max_batch), ("rec", rec)):
        card, reserved, tensors = predicted_figures(model, budget, batch)
        row.update({f"{prefix}_card_mib": _mib(card), f"{prefix}_reserved_mib": _mib(reserved), f"{prefix}_tensors_mib": _mib(tensors)})
    row.update(max_batch=max_batch, recommended_batch=rec, recommended_from="no throughput: memory only",
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
    if search.budget is not None and search.budget.context_bytes != budget.context_bytes:
        budget = search.budget  # a trial's steps left a larger CUDA context than the first estimate: judged with it
        row.update(context_mib=_mib(budget.context_bytes), context_source=budget.context_source, usable_mib=_mib(budget.usable))
    if search.max_batch < 1:
        row.update(status="does-not-fit", max_batch=0, recommended_batch=0, reason=search.reason)
        return
    candidates = sorted({b for b in (1 << i for i in range(search.max_batch.bit_length())) if b <= search.max_batch} | {search.max_batch})
    throughput = {}
    for batch in candidates:
        try:
            throughput[batch] = cuda_throughput(case, env.device, batch)
        except TimingError as err:  # a batch that fit the search but not the timing run is left out
            env.log(f"  batch {batch}: not timed ({err})")
    rec = recommend_measured(throughput) if throughput else search.max_batch
    row["recommended_from"], row["recommended_range"] = picked_on(env, rec)
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


def picked_on(env: PlanEnv, rec: int) -> tuple[str, str]:
    """Whose throughput curve picked the recommended batch (``recommended_from``), and, emulated, the batches
    the planned card's own pick should lie between (``recommended_range``, "lo-hi"; empty when not known).

    Emulated on a larger GPU, the curve is that GPU's, whose context and workspaces also stood in for the
    card's. The stated rule: a batch is large enough once it gives every SM work, so a card with fewer SMs
    reaches its best images/s at a batch no larger, and about in proportion to its SMs: the planned card's
    pick lies between ``rec x its SMs / this GPU's SMs`` (at least 1) and ``rec``. Both GPUs must be in
    data/gpus.toml with their SM counts; otherwise no range is claimed."""
    if env.source != EMULATED:
        return f"measured on {env.facts.name}, the planned card", ""
    here = lookup_gpu(env.facts.name) or {}
    card = env.target_entry or {}
    picked = f"emulated: the {env.facts.name}'s images/s, not the {card.get('name') or env.target}'s"
    if not here.get("sms") or not card.get("sms"):
        missing = env.facts.name if not here.get("sms") else (card.get("name") or env.target)
        return picked + f"; no range: {missing} has no SM count in data/gpus.toml", ""
    low = max(1, rec * card["sms"] // here["sms"])
    return picked + f"; the {card['name']}'s own pick lies in {low}-{rec} (SM ratio {card['sms']}/{here['sms']})", f"{low}-{rec}"


def run_plan(cases: list[Case], env: PlanEnv, progress: bool = True) -> PlanResult:
    if env.source != PREDICTED and not torch.cuda.is_available():
        raise ValueError(f"a {env.source} plan needs a CUDA GPU, and this torch ({torch.__version__}) sees none")
    started = time.perf_counter()
    result = PlanResult([], {}, env)
    meter = Progress(len(cases))
    hold = held_to_budget(env.device, env.budget) if env.source == EMULATED else contextlib.nullcontext()
    with hold:
        for case in cases:
            t0 = time.perf_counter()
            row, model = plan_case(case, env)
            add_frames(row)
            result.rows.append(row)
            if model is not None:
                result.models[case.key] = model
            if progress:
                found = "" if row["max_batch"] is None else f", max batch {row['max_batch']}"
                env.log(meter.step(f"{config_label(case)} {case.mode}: {row['status']}{found} ({time.perf_counter() - t0:.1f}s)"))
    result.seconds = time.perf_counter() - started
    return result


def write_selection_plan(selection, run_dir: Path, budget_text: str, modes: Iterable[str] = PLAN_MODES) -> tuple[Path, Path]:
    """Plan a selection's configurations for a card of ``budget_text`` and write plan.csv / plan.md into ``run_dir``
    (pytest's ``--ae-plan-budget``)."""
    env = make_env(selection.device, selection.facts, budget_text)
    result = run_plan(configurations(selection.cases, modes), env, progress=False)
    return write_plan(result, run_dir, load_seed_batch_claims())
