"""The report's first screen: what to run on the target card, per model, input size and mode.

Two sources are joined on the configuration (the rows' ``case_key`` without its batch, a plan
row's ``config_key``): the plan beside the run (``plan.csv``: which configurations fit the card,
at which batch, with how much memory, and where those figures come from) and the run's rows (the
FLOPs each configuration counted, its live tensors, how fast it ran here). Per group (model x
input size x mode) one configuration of those the plan says fit is picked by ``pick.py``'s rule:
on a run of the card itself, the fastest measured (a tie when the intervals overlap, broken by the
card model); on any other device, the card model's fastest (``bench.trackers.card_model``: a
roofline bound on the card), the host's own order going to section 3, labelled as the host's.

Every figure is at the batch shown: the plan's recommendation, lowered when the memory model's
worst error for the family and mode (measured in this run's rows) could push it over the card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from bench.report import pick as picks
from bench.runs.contract import PLAN_CSV, PLAN_MD, PLAN_MODES, config_key
from bench.report.display import show
from bench.trackers.card_model import Card, card_for_target, images_per_s

GROUP = ["size", "mode", "family", "preset", "latent"]
TWIN = GROUP + ["precision", "attention"]  # a configuration with and without checkpointing


@dataclass
class Answer:
    table: pd.DataFrame                    # the display table (empty when nothing could be answered)
    rows: pd.DataFrame                     # the same, raw, for answer.csv
    target: str = ""                       # "NVIDIA GeForce RTX 4060 (8.00 GiB)"
    plan_link: str = ""                    # plan.md, relative to the report
    notes: list[str] = field(default_factory=list)
    coverage: str = ""                     # what the run covered: families, presets, latents, sizes, modes
    host: pd.DataFrame = field(default_factory=pd.DataFrame)  # the host's own measured order (section 3)
    host_name: str = ""


def read_plan(folder: Optional[Path]) -> Optional[pd.DataFrame]:
    """``plan.csv`` of ``folder`` as text columns, or ``None`` when there is none."""
    if folder is None or not (Path(folder) / PLAN_CSV).is_file():
        return None
    return pd.read_csv(Path(folder) / PLAN_CSV, dtype=str, keep_default_na=False)


def _num(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def coverage(rows: pd.DataFrame) -> str:
    """One line: which families, presets, latents, input sizes and modes the run's ok rows hold."""
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    if ok.empty:
        return "no ok case"
    order = lambda column: list(dict.fromkeys(str(v) for v in ok[column] if str(v) not in ("", "nan")))  # noqa: E731
    latents = sorted({int(_num(v)) for v in ok["latent"] if math.isfinite(_num(v))})
    return (f"families {', '.join(order('family'))}; presets {', '.join(order('preset'))}; "
            f"latents {', '.join(str(v) for v in latents) or 'the default'}; sizes {', '.join(order('size'))}; "
            f"modes {', '.join(order('mode'))}")


def _host_speed(runs: pd.DataFrame, plan_row: pd.Series, batch: int) -> dict:
    """The run's measured images/s for one configuration, at ``batch`` when the run has it (else the plan's
    own GPU timing, else the run's largest batch under it), with its p10..p90 interval and noise flag."""
    at = runs[runs["batch"] == batch]
    if at.empty and math.isfinite(_num(plan_row.get("images_per_s_recommended"))) \
            and batch == int(_num(plan_row["recommended_batch"])):
        value = _num(plan_row["images_per_s_recommended"])
        return {"host_ips": value, "host_lo": value, "host_hi": value, "host_batch": batch, "noisy": False,
                "host_from": f"the plan's timing on {plan_row['device']}"}
    if at.empty:
        below = runs[runs["batch"] <= batch]
        at = below[below["batch"] == below["batch"].max()] if not below.empty else runs[runs["batch"] == runs["batch"].min()]
    row = at.loc[at["images_per_s"].idxmax()]
    b = float(row["batch"])
    lo, hi = (b * 1e3 / _num(row.get(c)) if _num(row.get(c)) > 0 else math.nan for c in ("p90_ms", "p10_ms"))
    return {"host_ips": float(row["images_per_s"]), "host_lo": lo, "host_hi": hi, "host_batch": int(b),
            "noisy": row.get("noisy") is True or str(row.get("noisy")) == "True", "host_from": ""}


def _card_speed(card: Optional[Card], runs: pd.DataFrame, plan_row: pd.Series, batch: int) -> float:
    """The card model's images/s at ``batch``: the run's counted GFLOP per image, the plan's predicted tensors
    at that batch (else the run's measured tensors, scaled per image from its largest batch)."""
    if card is None or batch < 1:
        return math.nan
    gflop = pd.to_numeric(runs["gflop_per_image"], errors="coerce").median()
    tensors = picks.tensors_mib_at(plan_row, batch)
    if not math.isfinite(tensors):
        largest = runs.loc[runs["batch"].idxmax()]
        tensors = _num(largest.get("tensor_peak_mib")) * batch / float(largest["batch"])
    return images_per_s(card, str(runs.iloc[0]["precision"]), gflop, tensors, batch)


def _candidate(key: str, runs: pd.DataFrame, plan_row: pd.Series, card: Optional[Card], ok: pd.DataFrame) -> dict:
    """One fitting configuration: its batch after the memory model's margin, its speeds, its memory."""
    first = runs.iloc[0]
    predicted = plan_row["source"] == "predicted"
    error = picks.model_error(ok, first["family"], first["mode"]) if predicted else picks.Derating(1.0, math.nan, 0)
    largest, batch = picks.derate(plan_row, error.factor)
    budget = _num(plan_row["budget_mib"])
    card_mib = picks.card_mib_at(plan_row, batch, error.factor) if batch >= 1 else math.nan
    margin = "none (measured on a GPU)" if not predicted else (
        "none known" if not math.isfinite(error.worst_pct) else
        f"x{error.factor:.2f}: {first['family']} {first['mode']} {-min(error.worst_pct, 0):.0f}% low")
    return {**{c: first[c] for c in GROUP}, "precision": first["precision"], "attention": first["attention"],
            "checkpointing": "on" if first["checkpointing"] in (True, "True") else "off", "batch": batch,
            "plan_max_batch": int(_num(plan_row["max_batch"])), "max_batch": largest, "margin": margin,
            "margin_factor": error.factor if predicted and math.isfinite(error.worst_pct) else math.nan,
            "gflop": pd.to_numeric(runs["gflop_per_image"], errors="coerce").median(),
            "card_ips": _card_speed(card, runs, plan_row, batch), **_host_speed(runs, plan_row, batch),
            "card_mib": card_mib, "headroom_mib": budget - card_mib, "budget_mib": budget,
            "memory_from": _memory_source(plan_row), "config_key": key}


def _twin_cap(cands: pd.DataFrame) -> pd.DataFrame:
    """Checkpointing does the step's work and recomputes the forward: predicted no faster than its twin without
    it, slowed by the FLOPs it adds (the roofline's bytes are live tensors, which checkpointing lowers; its
    traffic it does not)."""
    off = cands[cands["checkpointing"] == "off"].set_index(TWIN)
    for i, row in cands[cands["checkpointing"] == "on"].iterrows():
        key = tuple(row[c] for c in TWIN)
        if key not in off.index:
            continue
        twin = off.loc[key]
        twin = twin.iloc[0] if isinstance(twin, pd.DataFrame) else twin
        slower = float(twin["card_ips"]) * float(twin["gflop"]) / float(row["gflop"])
        if math.isfinite(slower):
            cands.loc[i, "card_ips"] = min(row["card_ips"], slower)
    return cands

def answer(rows: pd.DataFrame, plan: Optional[pd.DataFrame], device: str, device_name: str,
           plan_folder: str = "") -> Answer:
    """The answer table from the run's ok ``rows`` and its ``plan`` (``None``: no plan beside the run)."""
    empty = Answer(pd.DataFrame(), pd.DataFrame(), coverage=coverage(rows))
    if plan is None:
        empty.notes.append("no plan beside this run, so no answer for a card: the main job writes one "
                           "(`--ae-plan-for rtx4060`, `python -m bench run --plan-for ...`); or run `python -m bench plan` and "
                           "pass its folder with `python -m bench report RUN --with PLAN_DIR`")
        return empty
    if "config_key" not in plan.columns:
        empty.notes.append(f"the plan in {plan_folder or 'this folder'} predates the column that joins it to a run "
                           "(config_key): make it again with `python -m bench plan`")
        return empty
    target = ", ".join(sorted(set(plan["target"]) - {""}))
    card = card_for_target(target)
    on_card = device == "cuda" and _same_card(device_name, target)
    ok = rows[(rows["status"] == "ok") & rows["mode"].isin(PLAN_MODES) & rows["images_per_s"].notna()].copy()
    ok["config_key"] = ok["case_key"].map(config_key)
    fits = plan[(plan["status"] == "ok") & (plan["max_batch"].map(_num) >= 1)]
    found = [_candidate(key, ok[ok["config_key"] == key], plan_row, card, ok)
             for key, plan_row in fits.set_index("config_key").iterrows() if (ok["config_key"] == key).any()]
    cands = pd.DataFrame(found)
    pushed_over = int((cands["batch"] < 1).sum()) if not cands.empty else 0
    cands = _twin_cap(cands[cands["batch"] >= 1].reset_index(drop=True)) if not cands.empty else cands
    empty.target = target
    if cands.empty:
        empty.notes.append(f"no configuration of this run is in its plan with a batch that fits {target or 'the card'}"
                           f"{' once the memory model error is allowed for' if pushed_over else ''}: see {PLAN_MD}")
        return empty
    chosen = _choose(cands, on_card, rows)
    table = _display(chosen, card, on_card, device_name)
    notes = _notes(ok, plan, chosen, card, on_card, device, device_name, target, pushed_over)
    host = _host_order(ok, chosen) if not on_card else pd.DataFrame()
    return Answer(table, chosen, target, plan_folder, notes, coverage(rows), host,
                  device_name if device == "cuda" else "this CPU")


def _choose(cands: pd.DataFrame, on_card: bool, rows: pd.DataFrame) -> pd.DataFrame:
    """One row per group by :func:`bench.report.pick.pick`, groups in the run's order of sizes."""
    chosen = []
    for _, group in cands.groupby(GROUP, sort=False, dropna=False):
        index, how = picks.pick(group, on_card)
        row = cands.loc[index].copy()
        row["chosen_by"] = how + ("; its measurement is noisy" if row["noisy"] else "")
        row["speed"] = row["host_ips"] if on_card or not math.isfinite(row["card_ips"]) else row["card_ips"]
        chosen.append(row)
    out = pd.DataFrame(chosen)
    order = {s: i for i, s in enumerate(dict.fromkeys(rows["size"]))}
    out = out.sort_values(GROUP, key=lambda c: c.map(order) if c.name == "size" else c).reset_index(drop=True)
    out["model"] = out.apply(lambda r: f"{r['family']} {r['preset']}, latent {_num(r['latent']):g}", axis=1)
    return out


def _display(chosen: pd.DataFrame, card: Optional[Card], on_card: bool, device_name: str) -> pd.DataFrame:
    """The first screen's table; every speed and memory figure at the batch in its row."""
    def source(r) -> str:
        if on_card or not math.isfinite(r["card_ips"]):
            where = r["host_from"] or (device_name if on_card else "this host (no card model)")
            return f"measured on {where}, batch {r['host_batch']:g}"
        return f"{card.label} (roofline bound), batch {r['batch']:g}"

    shown = chosen.assign(speed_from=chosen.apply(source, axis=1))
    by_model = card is not None and not on_card and chosen["card_ips"].map(math.isfinite).all()
    speed = ([("speed", f"speed {card.label} (images/s, roofline bound)", "num")] if by_model else
             [("speed", "speed (images/s)", "num"), ("speed_from", "speed from", "text")])
    return show(shown, [
        ("size", "input (WxH)", "text"), ("mode", "mode", "text"), ("model", "model", "text"),
        ("precision", "precision", "text"), ("attention", "attention", "text"), ("checkpointing", "checkpointing", "text"),
        ("batch", "batch (images)", "int"), ("max_batch", "largest that fits (after the margin)", "int"),
        ] + speed + ([] if by_model and (chosen["chosen_by"] == picks.CARD_MODEL).all() else [("chosen_by", "chosen by", "text")]) + [
        ("card_mib", "card memory (MiB)", "mib"),
        ("headroom_mib", "headroom (MiB)", "mib")] + ([] if chosen["memory_from"].nunique() == 1 else [
        ("memory_from", "memory from", "text")]))


def _notes(ok, plan, chosen, card, on_card, device, device_name, target, pushed_over) -> list[str]:
    notes = []
    if on_card:
        notes.append(f"**speeds are measured on the {device_name}**: configurations whose p10..p90 intervals of images/s "
                     "overlap the fastest's are a tie, broken by the card model (\"tie within noise\")")
    elif card is not None:
        host = "this CPU" if device != "cuda" else f"the {device_name}"
        notes.append(f"**speeds are predicted on the {card.name}** by the card model (counted FLOPs vs its peak per "
                     f"precision, twice the live tensors vs its {card.bandwidth_gbs:g} GB/s: an upper bound), which picks "
                     f"{'every row' if (chosen['chosen_by'] == picks.CARD_MODEL).all() else 'each row'}; {host}'s order: section 3")
    else:
        notes.append(f"**speeds are {device_name or device}'s**: the plan's card ({target or 'a bare budget'}) is not in "
                     "data/gpus.toml, so there is no card model; ties within noise are said so")
    margins = "; ".join(dict.fromkeys(m.split(": ", 1)[1] for m in chosen["margin"] if m.startswith("x")))
    memory = f"; memory {chosen['memory_from'].iloc[0]}" if chosen["memory_from"].nunique() == 1 else ""
    notes.append(f"all at the batch shown{memory}; largest that fits: the plan's, its tensors times the model's worst "
                 f"under-prediction for the family and mode here (`memory_model.csv`){': ' + margins if margins else ''}")
    if pushed_over:
        notes.append(f"{pushed_over} configuration(s) the plan fits do not fit once that margin is allowed for, and were left out")
    unplanned = sorted(set(ok["config_key"]) - set(plan["config_key"]))
    if unplanned:
        notes.append(f"{len(unplanned)} configurations are not planned (the plan stops at the first fit, in the card "
                     "model's order)")
    return notes


def _host_order(ok: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """``host_order.csv``: per group, the fastest configuration the run measured on its own device (at the batch
    most of the group's cases ran), with its p10..p90 images/s, and whether the first screen picked the same."""
    out = []
    for _, group in ok.groupby(GROUP, sort=False, dropna=False):
        at = group[group["batch"] == group["batch"].mode().max()]
        best = at.loc[at["images_per_s"].idxmax()]
        card_pick = chosen[(chosen[GROUP].astype(str) == best[GROUP].astype(str)).all(axis=1)]
        same = "yes" if not card_pick.empty and card_pick.iloc[0]["config_key"] == best["config_key"] else \
            "no" if not card_pick.empty else "no answer"
        lo, hi = (best["batch"] * 1e3 / _num(best.get(c)) for c in ("p90_ms", "p10_ms"))  # images/s at p90, p10
        out.append({**{c: best[c] for c in GROUP}, "config_key": best["config_key"],
                    "config": f"{best['precision']}, {best['attention']}"
                    + (", checkpointing" if best["checkpointing"] in (True, "True") else "")
                    + (f", compile {best['compile']}" if str(best.get("compile", "off")) not in ("off", "", "nan") else ""),
                    "host_ips": best["images_per_s"],
                    "images_per_s_p90": lo, "images_per_s_p10": hi,
                    "host_batch": best["batch"], "noisy": "noisy" if best.get("noisy") in (True, "True") else "",
                    "configs": group["config_key"].nunique(), "same": same})
    return pd.DataFrame(out)


def host_summary(host: pd.DataFrame, host_name: str) -> str:
    """Section 3's line: in how many groups the device's own fastest is not section 1's pick, and which."""
    if host.empty:
        return ""
    differ = host[host["same"] != "yes"]
    named = "; ".join(f"{r['size']} {r['mode']} {r['family']} ({r['config']}{', noisy' if r['noisy'] else ''})"
                      for _, r in differ.iterrows())
    return (f"**The order measured on {host_name}** (the host's ranking, not the card's): its fastest is not section "
            f"1's pick in {len(differ)} of {len(host)} groups{': ' + named if named else ''}. All, with p10..p90: "
            "`host_order.csv`")


def _memory_source(plan_row: pd.Series) -> str:
    """``predicted by the memory model``, or the GPU it was measured on (an emulation says "held to 8 GiB")."""
    if plan_row["source"] == "predicted":
        return "predicted (memory model)"
    picked = plan_row.get("recommended_from")  # whose throughput picked the batch (bench/plan/planner.py:picked_on)
    return f"{plan_row['source']} on {plan_row['device']}" + (f"; batch {picked}" if isinstance(picked, str) and picked else "")


def _same_card(device_name: str, target: str) -> bool:
    """Whether the run's GPU is the plan's card ("NVIDIA GeForce RTX 4060" in "NVIDIA GeForce RTX 4060 (8.00 GiB)")."""
    return bool(device_name) and target.split(" (")[0].strip().lower() == device_name.strip().lower()
