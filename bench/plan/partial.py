"""The plan a run writes for its report's first screen: "what should I run on my 8 GB card?".

The report answers per model (family, preset, latent), input size and mode with one configuration
(precision, attention, checkpointing) that fits the card, at the plan's batch. A full plan of every
configuration costs about 2 s of tracing each (2.5 minutes for the ``quick`` matrix on 2 CPU
cores), too much for the main job; so at a run's end only the candidates the answer needs are
planned: per group, the run's configurations in the order the answer ranks them, until one fits
the card (at most :data:`MAX_TRIES` per group). That order is the card model's
(``bench.trackers.card_model``: a roofline bound on the card, from the FLOPs and live tensors the
run measured) unless the run's device is the card itself, whose measured speeds then rank; a bare
budget that names no card falls back to the measured order. The plan is the same plan as
``python -m bench plan`` (predicted by the memory model unless told otherwise), written as
``plan.csv`` / ``plan.md`` into the run folder, and says that it is partial.

It covers every row in the run folder's ``results.csv``, not just those of the process that
writes it: a resumed run plans the cases its earlier attempts measured too.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

from bench.core.cases import Case
from bench.plan.budget import find_gpu, make_env
from bench.runs.contract import DEFAULT_CARD, PLAN_MODES
from bench.plan.output import load_seed_batch_claims, write_plan
from bench.plan.planner import configurations, run_plan
from bench.trackers.card_model import images_per_s
from bench.trackers.gpu_table import lookup_gpu

MAX_TRIES = 4             # configurations planned per group before the answer gives up on that group
GROUP_AXES = ("family", "preset", "latent", "tokenizer", "size", "mode")
CONFIG_AXES = ("precision", "attention", "checkpointing", "compile")


def _best_speeds(rows: list[dict], cases: dict[str, Case], card=None) -> dict[str, tuple[Case, float]]:
    """Per configuration and mode (batch dropped): its case at batch 1 and its speed: the best images/s the run
    measured, or with ``card`` (a :class:`bench.trackers.card_model.Card`) the card model's images/s at the run's
    largest batch of it."""
    best: dict[str, tuple[Case, float]] = {}
    batches: dict[str, float] = {}
    for row in rows:
        case = cases.get(str(row.get("case_key") or ""))
        speed = row.get("images_per_s")
        if case is None or row.get("status") != "ok" or case.mode not in PLAN_MODES or case.compile != "off":
            continue
        if not isinstance(speed, (int, float)) or not math.isfinite(speed):
            continue
        config = dataclasses.replace(case, batch=1, skip=None)
        if card is not None:
            if case.batch <= batches.get(config.key, 0):
                continue
            batches[config.key] = case.batch
            speed = images_per_s(card, case.precision, row.get("gflop_per_image"), row.get("tensor_peak_mib"), case.batch)
            best[config.key] = (config, speed if math.isfinite(speed) else -math.inf)
        elif config.key not in best or speed > best[config.key][1]:
            best[config.key] = (config, float(speed))
    return best


def candidates(rows: list[dict], cases: list[Case], card=None) -> list[list[Case]]:
    """Per group (model x size x mode), the run's configurations fastest first: by the card model on ``card``
    when given, else by the run's measured speed (compiled cases left out: the plan runs eager steps)."""
    groups: dict[tuple, list[tuple[Case, float]]] = {}
    best = _best_speeds(rows, {c.key: c for c in cases}, card)
    if card is not None:  # checkpointing recomputes the forward: never ranked above its twin without it
        for key, (config, speed) in list(best.items()):
            twin = best.get(dataclasses.replace(config, checkpointing=False).key) if config.checkpointing else None
            if twin is not None:
                best[key] = (config, min(speed, twin[1]))
    for config, speed in best.values():
        groups.setdefault(tuple(getattr(config, a) for a in GROUP_AXES), []).append((config, speed))
    return [[c for c, _ in sorted(group, key=lambda item: (-item[1], item[0].checkpointing))] for group in groups.values()]


def resolve_card(text: Optional[str], option: str = "--plan-for") -> tuple[Optional[str], Optional[str]]:
    """``--plan-for`` -> (gpu name, budget size): a size (``8GiB``) is a budget, ``none`` is neither, anything
    else must be a known GPU (one line naming the option otherwise)."""
    from bench.units import parse_bytes

    text = (text or "").strip()
    if not text or text.lower() == "none":
        return None, None
    try:
        if parse_bytes(text, option) <= 0:
            raise ValueError(f"{option}: bad card {text!r}: a memory size must be above 0")
        return None, text
    except ValueError as err:
        if text[:1].isdigit():  # a size that did not parse
            raise ValueError(str(err)) from None
    try:
        find_gpu(text)
    except ValueError as err:
        raise ValueError(f"{option}: {str(err).removeprefix('--gpu: ')}") from None
    return text, None


def plan_for_run(run, selection, card: Optional[str], full_budget: Optional[str] = None, log=None) -> list[str]:
    """At a run's end, before its report: the plan its first screen answers from (``card``: ``--plan-for``),
    or the full plan for ``full_budget`` (``--ae-plan-budget``). Lines for the terminal; a plan that cannot be
    made is a line saying why, never a failed run."""
    gpu, budget = resolve_card(card) if not full_budget else (None, full_budget)
    if gpu is None and budget is None:
        return []
    try:
        paths = write_answer_plan(selection, run.run_dir, run_rows(run.run_dir, run.rows), gpu, budget,
                                  full=bool(full_budget), log=log)
    except (ValueError, RuntimeError) as err:
        return [f"no plan for the report's answer: {err}"]
    return [f"batch-size plan for {card if not full_budget else full_budget} written to {paths[0]} and {paths[1]}"]


def run_rows(run_dir: Path, fallback: list[dict]) -> list[dict]:
    """Every row of the run folder (a resumed run's earlier attempts included), typed as the reader types
    them; ``fallback`` (this process's rows) when the folder cannot be read."""
    from bench.runs.reader import load_run

    try:
        rows = load_run(Path(run_dir)).rows
    except (OSError, ValueError):
        return fallback
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows.to_dict("records")]


def _card_of(selection, gpu: Optional[str]):
    """The card model of the plan's card, or ``None`` when the run is on that card (its speeds rank) or no card
    is named."""
    from bench.trackers.card_model import card_for_target

    if not gpu:
        return None
    card = card_for_target(find_gpu(gpu)["name"])
    if card is not None and selection.device.type == "cuda" and lookup_gpu(selection.facts.name or "") is not None \
            and lookup_gpu(selection.facts.name)["name"] == card.name:
        return None
    return card


def write_answer_plan(selection, run_dir: Path, rows: list[dict], gpu: Optional[str] = DEFAULT_CARD,
                      budget: Optional[str] = None, full: bool = False, log=None) -> tuple[Path, Path]:
    """Plan for the card (``gpu`` and/or ``budget``) into ``run_dir``: every configuration of the
    selection when ``full`` (measured or emulated on a GPU, as ``python -m bench plan`` does), else the
    answer's candidates only, predicted (a few seconds per group). Returns (plan.csv, plan.md)."""
    env = make_env(selection.device, selection.facts, budget, gpu, predict_only=not full)
    if log is not None:
        env.log = log
    env.check_fit = full  # the partial plan leaves out the third trace (fit_error_pct): a second per group
    if full:  # the session's modes that a plan knows (train, infer)
        modes = [m for m in PLAN_MODES if any(c.mode == m for c in selection.cases)] or list(PLAN_MODES)
        result = run_plan(configurations(selection.cases, modes), env, progress=log is not None)
        return write_plan(result, run_dir, load_seed_batch_claims())
    result = None
    for group in candidates(rows, selection.cases, _card_of(selection, gpu)):
        for config in group[:MAX_TRIES]:
            part = run_plan([config], env, progress=False)
            if result is None:
                result = part
            else:
                result.rows += part.rows
                result.models.update(part.models)
                result.seconds += part.seconds
            if part.rows[0]["status"] == "ok":
                break
    if result is None:
        raise ValueError("no ok train or infer case without compile in the run: nothing to plan for the report's answer")
    result.partial = ("the configurations the report's answer needed (per model, size and mode, the card model's fastest "
                      f"first, or the fastest measured on the card itself, until one fits; at most {MAX_TRIES}); every "
                      "configuration: `python -m bench plan`")
    return write_plan(result, run_dir)
