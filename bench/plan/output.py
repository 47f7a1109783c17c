"""The plan's files: ``plan.csv`` (one row per configuration and mode, :data:`PLAN_COLUMNS`) and
``plan.md`` (the budget's accounting, the table, and the seed's batch-size claims next to it)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bench.core.cases import Case
from bench.plan.budget import PREDICTED, PlanEnv
from bench.core.memory_model import CATEGORIES
from bench.runs.contract import PLAN_CSV, PLAN_MD
from bench.runs.seed_claims import CLAIMS_FILE, load_claims
from bench.units import MIB

PLAN_COLUMNS = (
    "config_key",  # the run rows' case_key without its batch: how a report joins a plan to a speed run
    "family", "preset", "size", "latent", "tokenizer", "precision", "attention", "checkpointing", "compile", "mode",
    "seq_len", "encoder",
    "status", "source", "device", "target",
    "budget_mib", "display_reserve_mib", "context_mib", "context_source", "margin", "usable_mib",
    "max_batch", "max_frames", "max_card_mib", "max_reserved_mib", "max_tensors_mib",
    "recommended_batch", "recommended_frames", "recommended_rule", "recommended_from", "recommended_range",
    "rec_card_mib", "rec_reserved_mib", "rec_tensors_mib",
    "images_per_s_max", "images_per_s_recommended",
    "fixed_mib", "per_image_mib", *[f"{c}_mib" for c in CATEGORIES],
    "predicted_max_batch", "prediction_error_pct", "prediction_tensors_error_pct", "fit_error_pct", "trials", "notes", "reason",
)


# The memory model leaves out the CNN's convolution scratch buffers and workspaces. How low that leaves
# it on a CPU (predicted / live-tensor peak - 1, negated), measured by CNN_CHECK_COMMAND (torch 2.13.0+cpu):
# - 2-core Intel Xeon, 24 configurations (tiny, small, medium x 201x201, 1280x152 x fp32, amp-bf16 x train,
#   infer), 2026-11-29: train 5.0-17.2%, infer 29.7-45.8%;
# - 2-core AMD EPYC, its 12 fp32 configurations (`--precisions fp32`; its bf16 GEMM runs at under 1 GFLOP/s),
#   2026-12-07: train 2.73-9.93%, infer 29.18-29.98%.
# The scratch oneDNN takes differs by processor, so the range is the union of the processors measured.
CNN_CHECK_COMMAND = ("python -m bench plan-check --families cnn --presets tiny,small,medium --sizes 201x201,1280x152 "
                     "--precisions fp32,amp-bf16 --modes train,infer")
CNN_CPU_LOW_PCT = {"train": (2.7, 17.2), "infer": (29.1, 45.8)}  # mode -> (least, most) % low, over the CPUs above


def cnn_note(mode: str) -> str:
    """The plan row's note for a CNN: the model's measured shortfall on a CPU in ``mode``."""
    low, high = CNN_CPU_LOW_PCT.get(mode, (min(v[0] for v in CNN_CPU_LOW_PCT.values()),
                                           max(v[1] for v in CNN_CPU_LOW_PCT.values())))
    return (f"conv scratch/workspaces not modelled (on a CPU the model is {low:g}-{high:g}% low for the CNN in {mode}, "
            f"measured by plan-check --families cnn); measure on a GPU")


@dataclass
class PlanResult:
    """The whole plan: a row per configuration and mode, the memory models, where they were made, how long it took."""

    rows: list[dict]
    models: dict = field(default_factory=dict)   # config key -> MemoryModel
    env: Optional[PlanEnv] = None
    seconds: float = 0.0
    partial: str = ""   # what a plan of some configurations only holds (bench/plan/partial.py), shown in plan.md


# -- plan.csv and plan.md ---------------------------------------------------------------------

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


def load_seed_batch_claims(path: Path = CLAIMS_FILE) -> list[dict]:
    """The seed's parameter table rows (preset, "Memory (8GB GPU)", "Recommended Batch"), from the claims file."""
    section = load_claims(path, need=("parameter_counts",))["parameter_counts"]
    try:
        rows = [dict(r) for r in section["row"]]
        for r in rows:
            r.setdefault("size", section.get("size", "201x201"))
            r.setdefault("latent", section.get("latent"))
            for key in ("preset", "memory", "gib", "recommended_batch", "batch"):
                r[key]  # noqa: B018 - every row needs these
        return rows
    except (KeyError, TypeError) as err:
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
    if row.get("seq_len"):  # a sequence mode: frames per sequence, and the encoder's state in training
        out += [f"T{row['seq_len']}"] + ([row["encoder"]] if row.get("encoder") else [])
    return out


def add_frames(row: dict) -> None:
    """Sequence rows: the largest and the recommended batch in frames (sequences x seq_len)."""
    if row.get("seq_len"):
        for batch, frames in (("max_batch", "max_frames"), ("recommended_batch", "recommended_frames")):
            if row.get(batch) is not None:
                row[frames] = row[batch] * row["seq_len"]


def _range_cell(row: dict) -> str:
    """`` (card: 4-16)``: an emulated row's range for the planned card's own pick, where one is known."""
    return f" (card: {row['recommended_range']})" if row.get("recommended_range") else ""


def _batch_cell(row: dict, which: str) -> str:
    batch = row["max_batch" if which == "max" else "recommended_batch"]
    frames = row.get("max_frames" if which == "max" else "recommended_frames")
    return _fmt(batch) if frames is None else f"{_fmt(batch)} seq = {frames:,} frames"


def plan_markdown(result: PlanResult, seed_rows: Optional[list[dict]] = None) -> str:
    env = result.env
    budget = env.budget
    out = [f"## Batch-size plan: {env.target}", ""]
    sources = sorted({r["source"] for r in result.rows if r["status"] in ("ok", "does-not-fit")})
    out.append(f"Figures are **{', '.join(sources) or env.source}**: {env.device_label}. "
               f"{len(result.rows)} configurations x modes in {result.seconds:.0f} s.")
    if result.partial:
        out.append(f"**A partial plan**: {result.partial}.")
    if env.source == PREDICTED:
        out.append("Predicted figures come from the memory model (`bench/core/memory_model.py`): the case's own step traced with fake "
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
        out.append(f"| {case_label} {' '.join(extras)} | {r['mode']} | {_batch_cell(r, 'max')} | {_fmt(r['max_card_mib'])} | "
                   f"{_batch_cell(r, 'rec')}{_range_cell(r)} | {_fmt(r['rec_card_mib'])} | {_fmt(r['fixed_mib'], 1)} | "
                   f"{_fmt(r['per_image_mib'], 2)} | {r['source']} | {note.replace('|', '/')} |")
    picked = sorted({str(r.get("recommended_from")) for r in result.rows if str(r.get("recommended_from") or "").startswith("emulated")})
    if picked:  # the batch a larger GPU's curve picked is not the planned card's pick: say whose it is
        out += ["", "Whose throughput picked the recommended batch: " + "; ".join(picked) + " (bench/plan/planner.py:picked_on "
                    "states the rule)."]
    if any(r.get("seq_len") for r in result.rows):
        out += ["", "Sequence rows (frames -> Embedding -> LSTM): a batch is sequences of T frames, so their max and "
                    "recommended batches are in sequences, with the frames they hold; \"MiB per image\" is per sequence."]
    if any(str(r["family"]) == "cnn" for r in result.rows):
        out += ["", f"CNN rows: the memory model leaves out convolution scratch buffers; on a CPU it is "
                    + ", ".join(f"{lo:g}-{hi:g}% low in {mode}" for mode, (lo, hi) in CNN_CPU_LOW_PCT.items())
                    + f" (`{CNN_CHECK_COMMAND}`, 24 configurations, 2-core CPU, torch 2.13.0)."]
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
        key = Case(**{k: row[k] for k in Case.__dataclass_fields__ if k not in ("skip", "batch", "seq_len", "encoder")}, batch=1).key
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
    csv_path, md_path = out_dir / PLAN_CSV, out_dir / PLAN_MD
    atomic_write_text(csv_path, plan_csv(result.rows))
    atomic_write_text(md_path, plan_markdown(result, seed_rows))
    return csv_path, md_path
