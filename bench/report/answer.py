"""The report's first screen: what to run on the target card, per model, input size and mode.

Two sources are joined on the configuration (the rows' ``case_key`` without its batch, a plan
row's ``config_key``): the plan beside the run (``plan.csv``: which configurations fit the card,
at which batch, with how much memory, and where those figures come from) and the run's rows (how
fast each configuration ran). Per group (model x input size x mode) the answer is the fastest
configuration that the plan says fits.

The speed is the run's: measured at the planned batch when the run has that batch, else the plan's
own GPU timing (a measured or emulated plan), else the run's largest batch under the planned one.
It is the run's device's speed: on a CPU it only ranks the configurations (a GPU gains far more
from bf16 and fused attention kernels), and the table says so in every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from bench.report.display import show

PLAN_CSV = "plan.csv"
PLAN_MD = "plan.md"
PLAN_MODES = ("infer", "train")
GROUP = ["size", "mode", "family", "preset", "latent"]


@dataclass
class Answer:
    table: pd.DataFrame                    # the display table (empty when nothing could be answered)
    rows: pd.DataFrame                     # the same, raw, for answer.csv
    target: str = ""                       # "NVIDIA GeForce RTX 4060 (8.00 GiB)"
    plan_link: str = ""                    # plan.md, relative to the report
    notes: list[str] = field(default_factory=list)


def read_plan(folder: Optional[Path]) -> Optional[pd.DataFrame]:
    """``plan.csv`` of ``folder`` as text columns, or ``None`` when there is none."""
    if folder is None or not (Path(folder) / PLAN_CSV).is_file():
        return None
    return pd.read_csv(Path(folder) / PLAN_CSV, dtype=str, keep_default_na=False)


def config_key(case_key: str) -> str:
    return str(case_key).rsplit("-b", 1)[0]


def _num(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _speed(runs: pd.DataFrame, plan_row: pd.Series, device: str, device_name: str) -> tuple[float, str]:
    """(images/s, where it comes from) for one configuration at the plan's batch."""
    batch = _num(plan_row["recommended_batch"])
    at = runs[runs["batch"] == batch]
    where = "this CPU" if device != "cuda" else device_name
    if not at.empty:
        return float(at["images_per_s"].max()), f"{where}, batch {batch:g}"
    planned = _num(plan_row.get("images_per_s_recommended"))
    if math.isfinite(planned):
        return planned, f"the plan's timing on {plan_row['device']}, batch {batch:g}"
    below = runs[runs["batch"] <= batch]
    use = below.loc[below["batch"].idxmax()] if not below.empty else runs.loc[runs["batch"].idxmin()]
    return float(use["images_per_s"]), f"{where}, batch {use['batch']:g}"


def answer(rows: pd.DataFrame, plan: Optional[pd.DataFrame], device: str, device_name: str,
           plan_folder: str = "") -> Answer:
    """The answer table from the run's ok ``rows`` and its ``plan`` (``None``: no plan beside the run)."""
    empty = Answer(pd.DataFrame(), pd.DataFrame())
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
    ok = rows[(rows["status"] == "ok") & rows["mode"].isin(PLAN_MODES) & rows["images_per_s"].notna()].copy()
    ok["config_key"] = ok["case_key"].map(config_key)
    fits = plan[(plan["status"] == "ok") & (plan["max_batch"].map(_num) >= 1)]
    picks = []
    for key, plan_row in fits.set_index("config_key").iterrows():
        runs = ok[ok["config_key"] == key]
        if runs.empty:
            continue
        speed, source = _speed(runs, plan_row, device, device_name)
        first = runs.iloc[0]
        budget, card = _num(plan_row["budget_mib"]), _num(plan_row["rec_card_mib"])
        picks.append({**{c: first[c] for c in GROUP}, "precision": first["precision"], "attention": first["attention"],
                      "checkpointing": "on" if first["checkpointing"] is True else "off",
                      "batch": int(_num(plan_row["recommended_batch"])), "max_batch": int(_num(plan_row["max_batch"])),
                      "images_per_s": speed, "speed_from": source, "card_mib": card, "headroom_mib": budget - card,
                      "budget_mib": budget, "memory_from": _memory_source(plan_row), "config_key": key})
    if not picks:
        empty.target = target
        empty.notes.append(f"no configuration of this run is in its plan with a batch that fits {target or 'the card'}: "
                           f"see {PLAN_MD}")
        return empty
    chosen = (pd.DataFrame(picks).sort_values("images_per_s", ascending=False)
              .groupby(GROUP, sort=False, dropna=False).head(1))
    order = {s: i for i, s in enumerate(dict.fromkeys(rows["size"]))}
    chosen = chosen.sort_values(["size", "mode", "family", "preset", "latent"],
                                key=lambda c: c.map(order) if c.name == "size" else c).reset_index(drop=True)
    chosen["model"] = chosen.apply(lambda r: f"{r['family']} {r['preset']}, latent {_num(r['latent']):g}", axis=1)
    table = show(chosen, [
        ("size", "input (WxH)", "text"), ("mode", "mode", "text"), ("model", "model", "text"),
        ("precision", "precision", "text"), ("attention", "attention", "text"), ("checkpointing", "checkpointing", "text"),
        ("batch", "batch (images)", "int"), ("max_batch", "largest that fits", "int"),
        ("images_per_s", "speed (images/s)", "num"), ("speed_from", "speed measured on", "text"),
        ("card_mib", "card memory (MiB)", "mib"), ("headroom_mib", "headroom (MiB)", "mib"),
        ("memory_from", "memory from", "text")])
    notes = []
    if device != "cuda":
        notes.append("**speeds are this CPU's**, not the card's: they only rank the configurations (a GPU gains far more "
                      "from bf16 and fused attention); run the main job on the GPU for its own")
    elif target and not _same_card(device_name, target):
        notes.append(f"**speeds are the {device_name}'s**, not the {target}'s: they rank the configurations at the planned "
                      "batches; the card's own speed needs a run on that card")
    unplanned = sorted(set(ok["config_key"]) - set(plan["config_key"]))
    if unplanned:
        notes.append(f"{len(unplanned)} of the run's configurations are not in the plan and were not considered "
                     "(the main job plans only the fastest until one fits; `python -m bench plan` plans them all)")
    return Answer(table, chosen, target, plan_folder, notes)


def _memory_source(plan_row: pd.Series) -> str:
    """``predicted by the memory model``, or the GPU it was measured on (an emulation says "held to 8 GiB")."""
    if plan_row["source"] == "predicted":
        return "predicted (memory model)"
    picked = plan_row.get("recommended_from")  # whose throughput picked the batch (bench/plan/planner.py:picked_on)
    return f"{plan_row['source']} on {plan_row['device']}" + (f"; batch {picked}" if isinstance(picked, str) and picked else "")


def _same_card(device_name: str, target: str) -> bool:
    """Whether the run's GPU is the plan's card ("NVIDIA GeForce RTX 4060" in "NVIDIA GeForce RTX 4060 (8.00 GiB)")."""
    return bool(device_name) and target.split(" (")[0].strip().lower() == device_name.strip().lower()
