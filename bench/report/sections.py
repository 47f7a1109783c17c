"""The report's sections, one function each, named after report_template.md's sections and in its order
(:data:`SECTIONS`): each reads the run's :class:`Inputs` and returns the template's values for its section,
adding its tables to the CSVs written beside the report. ``bench/report/build.py`` renders them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.report import first_screen
from bench.report import card_check
from bench.report import claims as report_claims
from bench.report import tables
from bench.report import confidence
from bench.report.companions import Companion, plan_folder
from bench.report.display import run_facts, show
from bench.report.figures import draw_figures
from bench.runs.model_facts import MODEL_FACTS_JSON, PRESET_ORDER, REGENERATE, ModelFacts, read_model_facts
from bench.runs.reader import SavedRun
from bench.runs.seed_claims import load_claims
from bench.trackers.latency import NOISE_THRESHOLD

NOISY_SHOWN = 10  # noisy cases listed in the report, the noisiest first; all of them are in latency.csv


# The table CSVs written next to results.csv: name -> what it holds (quoted in the report).
TABLE_FILES = {
    "answer": ("answer.csv", "section 1's answer per model, size and mode"),
    "host_order": ("host_order.csv", "this device's own fastest per group, beside section 1's pick"),
    "throughput": ("throughput.csv", "images/s of each ok case"),
    "memory": ("memory.csv", "peak MiB of each ok case, every figure (live tensors, allocator, NVML, RSS)"),
    "latency": ("latency.csv", "ms per batch: min, p10, median, p90, mean, IQR, CV, slowest"),
    "attention_kernels": ("attention_kernels.csv", "attention requested vs the kernel(s) that ran"),
    "not_ok": ("not_ok.csv", "cases skipped, out of memory, failed or timed out, with reasons"),
    "invalid": ("invalid.csv", "cases refused as impossible, with why"),
    "memory_model": ("memory_model.csv", "live-tensor peak vs the memory model's prediction, worst first"),
    "headline": ("headline.csv", "the fastest case per size and mode within the budget, by its own peak"),
    "vs_cnn": ("vs_cnn.csv", "each transformer case against its CNN case"),
    "precision": ("precision.csv", "each case against the same case in fp32"),
    "attention": ("attention.csv", "each case against the same case with eager attention"),
    "checkpointing": ("checkpointing.csv", "each training case with checkpointing against it without"),
    "claims": ("claims.csv", "every seed claim, our figure, the verdict and how it was obtained"),
}


@dataclass
class Inputs:
    """What the sections read: the run, its rows held to physics, and the pairs several sections share."""
    run: SavedRun
    rows: pd.DataFrame                     # the run's rows, impossible ones refused
    refused: pd.DataFrame
    budget_mib: float
    budget: str                            # the budget as the report writes it
    device: str
    memory_label: str                      # which peak the memory figures are
    facts: ModelFacts
    facts_text: str                        # how the model facts were obtained (section 7)
    facts_notes: list[str]                 # what they lack (section 2's notes)
    companions: tuple[Companion, ...]
    pairs: dict[str, pd.DataFrame]         # "vs_cnn", "precision", "attention", "checkpointing"
    kernels: pd.DataFrame                  # attention requested vs ran (attention_kernels.csv)


# How a pair summary's columns read; the timing columns are blank where no pair was clean.
TIMING = ("speed_ratio", "speed_ratio_min", "speed_ratio_max", "time_lost_pct")


COUNTED = [("pairs", "matched cases", "int"), ("clean_pairs", "clean (timing)", "int"),
           ("noisy_left_out", "noisy, left out of speed", "int")]


def report_inputs(run: SavedRun, budget_mib: float, companions: tuple[Companion, ...]) -> Inputs:
    rows, refused = tables.refuse_impossible_rows(run.rows, confidence.timer_floor(run.meta))
    device = run.device_type
    memory_label = "GPU memory" if device == "cuda" else tables.peak_label(tables.with_peak(tables.ok_rows(rows))["peak_from"])
    pairs = {"vs_cnn": tables.vs_cnn(rows), "precision": tables.vs_axis(rows, "precision", "fp32"),
             "attention": tables.vs_axis(rows, "attention", "eager"), "checkpointing": tables.checkpointing_table(rows)}
    return Inputs(run, rows, refused, budget_mib, report_claims.budget_text(budget_mib), device, memory_label,
                  *_model_facts(run), companions, pairs, tables.attention_kernel_table(rows))


def csv_pivots(src: Inputs) -> dict[str, pd.DataFrame]:
    """The CSV pivots written beside results.csv (the sections add theirs)."""
    rows = src.rows
    return {"throughput": tables.throughput_table(rows), "memory": tables.memory_table(rows),
            "latency": tables.latency_table(rows, src.run.samples_ms), "attention_kernels": src.kernels,
            "not_ok": tables.not_ok_table(rows), "invalid": tables.invalid_table(rows),
            "memory_model": tables.prediction_table(rows)}


def heading(src: Inputs, out_tables: dict) -> dict:
    """The lines above section 1: the rows' statuses, and a merge that lacks shards."""
    counts = tables.status_counts(src.rows)
    partial = src.run.meta.get("partial") if isinstance(src.run.meta.get("partial"), dict) else None
    return {"status_counts": ", ".join(f"{n} {s}" for s, n in counts.items()), "ok_count": counts.get("ok", 0),
            "partial": str(partial.get("headline") or "partial") if partial else ""}


def what_to_run(src: Inputs, out_tables: dict) -> dict:
    """1. What to run on the card: the plan joined to the run's speeds, else the fastest case within the budget."""
    plan = plan_folder(list(src.companions))
    found = first_screen.answer(src.rows, first_screen.read_plan(plan.folder if plan else None), src.device, src.run.device_name,
                           plan.page if plan else "")
    winners, fit_counts = tables.headline(src.rows, src.budget_mib)
    out_tables.update(answer=found.rows, host_order=found.host, headline=winners.drop(columns=["reason"], errors="ignore"))
    return {"answer": found, "host_order": first_screen.host_summary(found.host, found.host_name),  # shown in section 3
            "headline": show(winners, [
        ("size", "input size (WxH)", "text"), ("mode", "mode", "text"), ("case_id", "case", "text"),
        ("batch", "batch (images)", "int"), ("images_per_s", "throughput (images/s)", "num"),
        ("median_ms", "median (ms/batch)", "num"), ("peak_mib", f"peak (MiB, {src.memory_label})", "mib"),
        ("gflop_per_image", "GFLOP/image", "num"), ("tflops", "achieved TFLOP/s", "num"), ("mfu", "MFU (%)", "frac_pct")]),
        "headline_notes": _headline_notes(src.rows, fit_counts, src.budget_mib), "peak_rule": _peak_rule(src)}


def _peak_rule(src: Inputs) -> str:
    if src.device == "cuda":
        return ("the peak is NVML's per-process figure where NVML answered (it includes the CUDA context), "
                "else the allocator's reserved peak")
    if src.memory_label == tables.PEAK_LABELS["tensor_peak_mib"]:
        return ("the peak is the live tensors of one step (weights, gradients, optimizer state, inputs and all "
                "the step allocates: the same bytes on any device, up to kernel workspaces; a GPU adds its CUDA "
                "context and allocator cache); the process RSS is in `memory.csv`")
    return ("the peak is the process's resident memory (RSS) during the case's memory pass: on a CPU it "
            "includes the interpreter, torch and memory cached by earlier cases")


def how_sure(src: Inputs, out_tables: dict) -> dict:
    """2. How sure are we: the card model checked here, noise, throttling, failures, refused rows, the peaks."""
    run, rows = src.run, src.rows
    settings = run.meta.get("settings", {}) if isinstance(run.meta.get("settings"), dict) else {}
    threshold = float(settings.get("noise_threshold", NOISE_THRESHOLD))
    ok = tables.ok_rows(rows).copy()
    ok["iqr_pct"] = ok["iqr_ms"] / ok["median_ms"] * 100
    noisy = ok[ok["noisy"].map(lambda v: v is True)]
    noisiest = noisy.sort_values("iqr_pct", ascending=False).head(NOISY_SHOWN) if not noisy.empty else noisy
    throttled = ok[ok["throttled"].map(lambda v: v is True)]
    ctx = {"card_check": card_check.sentence(card_check.check(rows, card_check.run_device_card(run.meta, src.device, run.device_name)),
                                             f"python -m bench report {run.source}"),
           "noise_threshold": f"{threshold * 100:g} %", "noisy_more": max(0, len(noisy) - NOISY_SHOWN),
           "noisy": show(noisiest, [("case_id", "case", "text"), ("median_ms", "median (ms/batch)", "num"),
                                    ("iqr_ms", "IQR (ms)", "num"), ("iqr_pct", "IQR / median (%)", "pct"),
                                    ("cv", "CV (%)", "frac_pct"), ("iters", "samples", "int")]),
           "noisy_count": len(noisy), "ok_rows": len(ok),
           "throttled": show(throttled, [("case_id", "case", "text"), ("throttle_reasons", "NVML reasons", "text"),
                                         ("sm_clock_mhz", "SM clock (MHz)", "num")]),
           "throttle_known": bool(ok["throttled"].map(lambda v: v is not None).any()),
           "not_ok": show(out_tables["not_ok"], [("case_id", "case", "text"), ("status", "status", "text"), ("reason", "reason", "text")]),
           "kernel_disagreements": show(src.kernels[src.kernels["agrees"] == "no"], [
               ("case_id", "case", "text"), ("attention", "requested", "text"), ("attention_ran", "ran", "text")]),
           "run_notes": list(run.notes) + src.facts_notes}
    named = {"transformer vs CNN": src.pairs["vs_cnn"], "precision": src.pairs["precision"],
             "attention": src.pairs["attention"], "checkpointing": src.pairs["checkpointing"]}
    ctx.update(confidence.context(rows, run.meta, src.refused, named))
    return ctx


def trade_offs(src: Inputs, out_tables: dict) -> dict:
    """3. Trade-offs: precision (× fp32), attention (× eager) and the kernels that ran, gradient checkpointing."""
    ctx: dict[str, Any] = {}
    out_tables.update(precision=src.pairs["precision"], attention=src.pairs["attention"], checkpointing=src.pairs["checkpointing"])
    for key, axis, base in (("precision", "precision", "fp32"), ("attention", "attention", "eager")):
        pairs = src.pairs[key]
        summary = tables.summarize_pairs(pairs, [axis, "mode"])
        ctx[f"{key}_summary"] = confidence.show_summary(summary, [
            (axis, axis, "text"), ("mode", "mode", "text"), *COUNTED,
            ("speed_ratio", f"speed (× {base} images/s)", "ratio"), ("speed_ratio_min", "slowest (×)", "ratio"),
            ("speed_ratio_max", "fastest (×)", "ratio"), ("memory_ratio", f"memory (× {base} peak MiB, {src.memory_label})", "ratio")],
            TIMING)
        ctx[f"{key}_pairs"] = show(pairs, [
            ("case_id", "case", "text"), ("baseline_case_id", f"{base} case", "text"),
            ("images_per_s", "images/s", "num"), ("baseline_images_per_s", f"{base} images/s", "num"),
            ("speed_ratio", "speed (×)", "ratio"), ("peak_mib", "peak (MiB)", "mib"),
            ("baseline_peak_mib", f"{base} peak (MiB)", "mib"), ("memory_ratio", "memory (×)", "ratio"),
            ("clean", "timing clean", "bool")])
        ctx[f"{key}_notes"] = _pairing_notes(pairs, base, f"every axis but {axis}")
    kernels = src.kernels
    ran = kernels[kernels["status"] == "ok"].groupby(["attention", "attention_ran"]).size().reset_index(name="cases")
    ctx["kernels_summary"] = show(ran, [("attention", "requested", "text"), ("attention_ran", "ran (seen at the dispatcher)", "text"),
                                        ("cases", "cases", "int")])
    ctx["auto_notes"] = _auto_notes(ran)
    ctx.update(_checkpointing(src))
    return ctx


def _checkpointing(src: Inputs) -> dict:
    """3's last part: memory saved and time lost by gradient checkpointing, per model."""
    ckpt_pairs = src.pairs["checkpointing"]
    ckpt_summary = tables.summarize_pairs(ckpt_pairs, ["family", "preset"]) if not ckpt_pairs.empty else pd.DataFrame()
    if not ckpt_summary.empty:
        ckpt_summary["memory_saved_pct"] = (1 - ckpt_summary["memory_ratio"]) * 100
        ckpt_summary["time_lost_pct"] = (ckpt_summary["time_ratio"] - 1) * 100
        ckpt_summary = ckpt_summary.sort_values(["family", "preset"], key=_preset_key)
    return {"ckpt_summary": confidence.show_summary(ckpt_summary, [
        ("family", "family", "text"), ("preset", "preset", "text"), ("pairs", "matched train cases", "int"), *COUNTED[1:],
        ("memory_saved_pct", f"memory saved (% of peak MiB, {src.memory_label})", "pct"),
        ("time_lost_pct", "time lost (% of ms/batch, clean pairs)", "pct")], TIMING),
        "ckpt_pairs": show(ckpt_pairs, [
            ("case_id", "case", "text"), ("baseline_peak_mib", "peak without (MiB)", "mib"), ("peak_mib", "peak with (MiB)", "mib"),
            ("memory_saved_pct", "memory saved (%)", "pct"), ("baseline_median_ms", "without (ms/batch)", "num"),
            ("median_ms", "with (ms/batch)", "num"), ("time_lost_pct", "time lost (%)", "pct"), ("clean", "timing clean", "bool")]),
        "ckpt_notes": _pairing_notes(ckpt_pairs, "no-checkpointing", "every axis but checkpointing, in train mode")}


def _cnn_summary(cnn_pairs: pd.DataFrame) -> pd.DataFrame:
    summary = tables.summarize_pairs(cnn_pairs, ["family", "preset", "attention"])
    return summary.sort_values(["family", "preset"], key=_preset_key).reset_index(drop=True)


def params_by_size(cnn_pairs: pd.DataFrame) -> list[str]:
    """The parameter ratio per model and input size, in one line: the CNN's parameters change with the input size
    (its bottleneck maps the last feature map to the latent), the transformer's do not change with the attention
    kernel, so a ratio pooled over sizes (once a column of the kernel table) mixes sizes, not kernels."""
    if cnn_pairs.empty or "params_ratio" not in cnn_pairs:
        return []
    ratios = cnn_pairs.assign(params_ratio=pd.to_numeric(cnn_pairs["params_ratio"], errors="coerce")).dropna(
        subset=["params_ratio"])
    if ratios.empty:
        return []
    per_size = ratios.groupby(["family", "preset", "size"], sort=False)["params_ratio"].median().reset_index()
    per_size = per_size.sort_values(["family", "preset"], key=_preset_key, kind="stable")
    models = [f"{family} {preset}: " + ", ".join(f"{r:.2f}× at {size}" for size, r in zip(g["size"], g["params_ratio"]))
              for (family, preset), g in per_size.groupby(["family", "preset"], sort=False)]
    return ["parameters (× the CNN's of the same input size; the CNN's change with the input size): " + "; ".join(models)]


def transformer_vs_cnn(src: Inputs, out_tables: dict) -> dict:
    """4. Transformer vs CNN: speed, memory and parameters, each against the CNN case of the same input."""
    cnn_pairs = src.pairs["vs_cnn"]
    out_tables["vs_cnn"] = cnn_pairs
    ctx = {"vs_cnn_summary": confidence.show_summary(_cnn_summary(cnn_pairs), [
        ("family", "family", "text"), ("preset", "preset", "text"), ("attention", "attention", "text"), *COUNTED,
        ("speed_ratio", "speed (× CNN images/s)", "ratio"),
        ("speed_ratio_min", "slowest (×)", "ratio"), ("speed_ratio_max", "fastest (×)", "ratio"),
        ("memory_ratio", f"memory (× CNN peak MiB, {src.memory_label})", "ratio")],
        TIMING),
        "vs_cnn_pairs": show(cnn_pairs, [
            ("case_id", "transformer case", "text"), ("baseline_case_id", "CNN case", "text"),
            ("images_per_s", "transformer (images/s)", "num"), ("baseline_images_per_s", "CNN (images/s)", "num"),
            ("speed_ratio", "speed (×)", "ratio"), ("peak_mib", "transformer peak (MiB)", "mib"),
            ("baseline_peak_mib", "CNN peak (MiB)", "mib"), ("memory_ratio", "memory (×)", "ratio"),
            ("params", "transformer parameters", "count"), ("baseline_params", "CNN parameters", "count"),
            ("params_ratio", "parameters (×)", "ratio"), ("clean", "timing clean", "bool")]),
        "vs_cnn_notes": [*params_by_size(cnn_pairs), *_pairing_notes(cnn_pairs, "CNN", ", ".join(tables.CNN_MATCH))],
        "memory_label": src.memory_label}
    if src.device != "cuda" and not cnn_pairs.empty and src.memory_label == tables.PEAK_LABELS["rss_peak_mib"]:
        ctx["vs_cnn_notes"].append("on a CPU the memory ratio compares process RSS, which includes the interpreter and "
                                   "torch: it is compressed towards 1× and says little about GPU memory")
    return ctx


def seed_claims_checked(src: Inputs, out_tables: dict) -> dict:
    """5. The seed's claims, checked: each against our figure, with a verdict."""
    claims = load_claims()
    checked = report_claims.check_all(claims, src.rows, src.device, src.budget_mib, src.pairs["vs_cnn"],
                                    {"precision": src.pairs["precision"], "checkpointing": src.pairs["checkpointing"],
                                     "attention": src.pairs["attention"]}, src.facts)
    out_tables["claims"] = pd.DataFrame([dict(r, table=k) for k, group in checked.items() for r in group])
    claim_spec = [("claim", "claim", "text"), ("seed_says", "the seed says", "text"), ("measured", "ours", "text"),
                  ("verdict", "verdict", "text")]  # how each was obtained: claims.csv's basis column
    judged = {k: [r for r in v if r["verdict"] in report_claims.JUDGED] for k, v in checked.items()}
    verdicts = out_tables["claims"]["verdict"].value_counts()
    return {"claims": {k: show(pd.DataFrame(v), claim_spec) for k, v in judged.items()},
            "claims_left": {k: len(checked[k]) - len(v) for k, v in judged.items()},
            "claims_sections": {k: claims[k]["section"] for k in checked}, "claims_source": report_claims.claim_source(claims),
            "claims_file": "bench/data/seed_claims.toml", "claims_rules": report_claims.rules_of(claims).text(),
            "flat_architecture": claims["flat_layout"]["architecture"],
            "claims_tally": ", ".join(f"{int(verdicts[v])} {v}" for v in report_claims.VERDICTS if v in verdicts)}


def reconstruction_quality(src: Inputs, out_tables: dict) -> dict:
    """6. Reconstruction quality: the quality runs (and plan, profile folders) the report includes."""
    plan = plan_folder(list(src.companions))
    spec = [("claim", "claim", "text"), ("size", "input size", "text"), ("pair", "transformer case (vs the same CNN)", "text"),
            ("verdict", "verdict", "text"), ("reason", "why", "text")]
    return {"companions": [c for c in src.companions if c.kind != "plan" or c is plan],
            "quality_runs": [{"run": c, "verdicts": show(c.verdicts.assign(pair=c.verdicts.get("transformer_case", "")), spec)
                              if c.verdicts is not None and not c.verdicts.empty else None}
                             for c in src.companions if c.kind == "quality"]}


def run_facts_section(src: Inputs, out_tables: dict) -> dict:
    """7. Run facts: the device, the software, the commit and the command."""
    return {"facts": run_facts(src.run, src.facts_text)}


def tables_section(src: Inputs, out_tables: dict) -> dict:
    """Tables: the CSV files written beside the report, and what each holds."""
    return {"table_files": [{"file": f, "what": what} for f, what in TABLE_FILES.values()]}


def _preset_key(column: pd.Series) -> pd.Series:
    if column.name == "preset":
        return column.map(lambda p: PRESET_ORDER.index(p) if p in PRESET_ORDER else len(PRESET_ORDER))
    return column


def _auto_notes(ran: pd.DataFrame) -> list[str]:
    """``auto`` lets SDPA choose (cuDNN on an H100/H200 with a recent cuDNN): what it chose, so that no
    figure of an ``auto`` case reads as one fixed kernel's."""
    auto = ran[ran["attention"] == "auto"]
    if auto.empty:
        return []
    chosen = ", ".join(f"{r.attention_ran or 'nothing recorded'} in {r.cases} case(s)" for r in auto.itertuples())
    return [f"`auto` (SDPA free to choose) ran {chosen}; every `auto` figure in this report is that kernel's"]


def _headline_notes(rows: pd.DataFrame, counts: pd.DataFrame, budget_mib: float) -> list[str]:
    notes = []
    for r in counts.itertuples():
        if r.fit == 0:
            notes.append(f"{r.size}, {r.mode}: none of the {r.ok} ok case(s) fits {budget_mib:,.0f} MiB "
                         f"({r.over} over the budget, {r.no_peak} without a peak figure)")
    measured_sizes = set(counts["size"])
    for size, group in rows.groupby("size", sort=True):
        if size not in measured_sizes:
            statuses = ", ".join(f"{n} {s}" for s, n in group["status"].value_counts().items())
            notes.append(f"{size}: no case ran ({statuses}); see section 2")
    return notes


def _pairing_notes(pairs: pd.DataFrame, baseline: str, match: str) -> list[str]:
    if pairs.empty:
        return [f"no pair: the run has no ok case with a {baseline} counterpart equal on {match}; "
                f"add the {baseline} variant of a case to the matrix to measure this"]
    return []


def _model_facts(run: SavedRun) -> tuple[ModelFacts, str, list[str]]:
    """The run's model facts (empty when it has none), the line the run facts (section 7) show, and notes on what is missing."""
    folder = run.source if run.kind == "results folder" else None
    found = read_model_facts(folder) if folder is not None else None
    if found is not None:
        notes = [f"model facts not computed when the run started: {item.get('what')}: {item.get('error')}"
                 for item in found.data.get("not_computed") or []]
        return found, (f"`{MODEL_FACTS_JSON}`: computed from the model definitions when the run started "
                       f"(torch {found.data.get('torch', '?')}), not measured"), notes
    if folder is None:
        hint = f"a {run.kind} carries no model facts: report the run's results folder, which has {MODEL_FACTS_JSON}"
    else:
        hint = f"write it with `{REGENERATE} {folder}`"
    missing = (f"no {MODEL_FACTS_JSON}: section 5 takes a parameter count from the run's rows where it measured that "
               f"model and shows the other counts and the flat layout's attention probe as not computed; section 7 has "
               f"no attention-map figure; {hint}")
    return ModelFacts(hint=hint), "not recorded", [missing]


def figures(src: Inputs) -> tuple[dict, dict[str, bytes]]:
    """The figures (``fig`` by name, for the template to place in their sections) and their PNG bytes."""
    plan = plan_folder(list(src.companions))
    drawn, plots = draw_figures(src.run, src.rows, src.device, src.budget_mib, src.budget, src.pairs["vs_cnn"],
                                src.memory_label, src.facts, first_screen.read_plan(plan.folder if plan else None))
    return {"figures": drawn, "fig": {f["name"]: f for f in drawn}}, dict(plots)


# The template's order: the lines above section 1, then one function per "## " heading (tests/test_report_sections.py).
SECTIONS = (heading, what_to_run, how_sure, trade_offs, transformer_vs_cnn, seed_claims_checked, reconstruction_quality,
            run_facts_section, tables_section)
