"""The run report: ``report.md`` from ``report_template.md``, the CSV tables and the PNG plots.

``python -m bench report RESULTS [--budget 8GiB] [--template PATH] [--out DIR]`` regenerates it
from saved rows (a results folder, or a pytest-benchmark JSON file) without running anything;
``pytest bench`` writes it at the end of a session (``bench/conftest.py``).

Everything is computed in memory first (rows read and checked, tables, figures, the template
rendered); only then are files written, each atomically. So a bad input or a broken template
stops with one line naming the problem and leaves every existing file as it was.

The report is a function of the run's files alone: ``results.csv``, ``samples.jsonl``,
``meta.json``, and the model facts the run wrote when it started (``model_facts.json``: parameter
counts and the flat layout's attention probe; ``plots/attention_maps.png``; see
``bench/core/model_facts.py``). It never builds a model: a fact the folder lacks is reported as
missing, with the command that computes it. The only other numbers are the seed's claims, quoted
from ``data/seed_claims.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from bench.report import answer as answers
from bench.report import card_check
from bench.report import claims as seed_claims
from bench.report.figures import draw_figures
from bench.report import tables as tables
from bench.report import validity as validity
from bench.report.defaults import DEFAULT_BUDGET, DEFAULT_TEMPLATE
from bench.report.display import fmt_num, md_table, run_facts, show
from bench.report.companions import Companion, find_companions, plan_folder
from bench.report.shards import shards_section
from bench.runs.files import atomic_write_bytes, atomic_write_text
from bench.runs.model_facts import MODEL_FACTS_JSON, PRESET_ORDER, REGENERATE, ModelFacts, read_model_facts
from bench.runs.reader import SavedRun, load_run
from bench.runs.seed_claims import load_claims
from bench.trackers.latency import NOISE_THRESHOLD
from bench.units import ACCEPTED, MIB, parse_bytes

REPORT_MD = "report.md"
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


def parse_budget(text: str) -> float:
    """A memory budget as :func:`bench.units.parse_bytes` reads sizes (``8GiB``, ``6144MiB``,
    ``8GB`` = 10^9 bytes, ``8TiB``) -> MiB. Raises ValueError (one line) for anything else, and for 0."""
    expected = ACCEPTED.replace("; or 0", "")  # a size may be 0, a budget may not
    try:
        size = parse_bytes(text)
    except ValueError as err:
        raise ValueError("--budget: " + str(err).replace("bad memory size", "bad memory budget", 1).replace(ACCEPTED, expected)) from None
    if size <= 0:
        raise ValueError(f"--budget: bad memory budget {text!r}: a budget must be above 0; expected {expected}")
    return size / MIB


# -- the report ---------------------------------------------------------------------------------

@dataclass
class Report:
    markdown: str
    tables: dict[str, pd.DataFrame]
    plots: dict[str, bytes]
    context: dict = field(default_factory=dict)


def load_template(path: Optional[Path] = None):
    """The Jinja2 template, compiled (a syntax error is a ValueError naming the line)."""
    import jinja2

    path = Path(path) if path else DEFAULT_TEMPLATE
    if not path.is_file():
        raise ValueError(f"report template {path} not found" + ("" if path != DEFAULT_TEMPLATE else "; pass --template PATH"))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True, autoescape=False)
    env.filters["md_table"] = md_table
    env.filters["num"] = fmt_num
    try:
        return env.from_string(path.read_text(encoding="utf-8")), path
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"report template {path} line {err.lineno}: {err.message}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"report template {path} is not UTF-8 text: {err}") from None


def build_report(run: SavedRun, budget_mib: float, template_path: Optional[Path] = None,
                 companions: tuple[Companion, ...] = ()) -> Report:
    """Tables, figures and the rendered markdown of ``run`` (with the plan, quality and profile folders of
    ``companions``); nothing is written."""
    import jinja2

    template, template_path = load_template(template_path)
    rows, refused = tables.refuse_impossible(run.rows, validity.timer_floor(run.meta))
    device = run.device_type
    ctx: dict[str, Any] = {"budget_mib": budget_mib, "budget": seed_claims.budget_text(budget_mib),
                           "device": device, "template": str(template_path)}
    out_tables: dict[str, pd.DataFrame] = {}
    out_plots: dict[str, bytes] = {}
    memory_label = "GPU memory" if device == "cuda" else tables.peak_label(tables.with_peak(tables.ok_rows(rows))["peak_from"])
    facts, facts_text, facts_notes = _model_facts(run)

    # 0. The CSV pivots.
    out_tables["throughput"] = tables.throughput_table(rows)
    out_tables["memory"] = tables.memory_table(rows)
    out_tables["latency"] = tables.latency_table(rows, run.samples_ms)
    out_tables["attention_kernels"] = tables.attention_kernel_table(rows)
    out_tables["not_ok"] = tables.not_ok_table(rows)
    out_tables["invalid"] = tables.invalid_table(rows)
    out_tables["memory_model"] = tables.prediction_table(rows)

    # 1. The answer: the plan joined to the run's speeds.
    plan = plan_folder(list(companions))
    found = answers.answer(rows, answers.read_plan(plan.folder if plan else None), device, run.device_name,
                           plan.page if plan else "")
    out_tables["answer"] = found.rows
    ctx["answer"] = found
    out_tables["host_order"] = found.host
    ctx["host_order"] = answers.host_summary(found.host, found.host_name)
    ctx["card_check"] = card_check.sentence(card_check.check(rows, card_check.run_device_card(run.meta, device, run.device_name)),
                                            f"python -m bench report {run.source}")
    ctx["companions"] = [c for c in companions if c.kind != "plan" or c is plan]
    quality = [c for c in companions if c.kind == "quality"]
    ctx["quality_runs"] = [{"run": c, "verdicts": show(c.verdicts.assign(pair=c.verdicts.get("transformer_case", "")), [
        ("claim", "claim", "text"), ("size", "input size", "text"), ("pair", "transformer case (vs the same CNN)", "text"),
        ("verdict", "verdict", "text"), ("reason", "why", "text")]) if c.verdicts is not None and not c.verdicts.empty else None}
        for c in quality]

    # Run facts.
    ctx["facts"] = run_facts(run, facts_text)
    counts = tables.status_counts(rows)
    ctx["status_counts"] = ", ".join(f"{n} {s}" for s, n in counts.items())
    ctx["ok_count"] = counts.get("ok", 0)

    # The fallback of the first screen (no plan): the fastest measured case within the budget.
    winners, fit_counts = tables.headline(rows, budget_mib)
    out_tables["headline"] = winners.drop(columns=["reason"], errors="ignore")
    ctx["headline"] = show(winners, [
        ("size", "input size (WxH)", "text"), ("mode", "mode", "text"), ("case_id", "case", "text"),
        ("batch", "batch (images)", "int"), ("images_per_s", "throughput (images/s)", "num"),
        ("median_ms", "median (ms/batch)", "num"), ("peak_mib", f"peak (MiB, {memory_label})", "mib"),
        ("gflop_per_image", "GFLOP/image", "num"), ("tflops", "achieved TFLOP/s", "num"), ("mfu", "MFU (%)", "frac_pct")])
    ctx["headline_notes"] = _headline_notes(rows, fit_counts, budget_mib)
    ctx["peak_rule"] = ("the peak is NVML's per-process figure where NVML answered (it includes the CUDA context), "
                        "else the allocator's reserved peak" if device == "cuda" else
                        "the peak is the live tensors of one step (weights, gradients, optimizer state, inputs and all "
                        "the step allocates: the same bytes on any device, up to kernel workspaces; a GPU adds its CUDA "
                        "context and allocator cache); the process RSS is in `memory.csv`"
                        if memory_label == tables.PEAK_LABELS["tensor_peak_mib"] else
                        "the peak is the process's resident memory (RSS) during the case's memory pass: on a CPU it "
                        "includes the interpreter, torch and memory cached by earlier cases")
    timing = ("speed_ratio", "speed_ratio_min", "speed_ratio_max", "time_lost_pct")
    counted = [("pairs", "matched cases", "int"), ("clean_pairs", "clean (timing)", "int"),
               ("noisy_left_out", "noisy, left out of speed", "int")]

    # 3. Transformer vs CNN.
    cnn_pairs = tables.vs_cnn(rows)
    out_tables["vs_cnn"] = cnn_pairs
    cnn_summary = tables.summarize_pairs(cnn_pairs, ["family", "preset", "attention"])
    cnn_summary = cnn_summary.sort_values(["family", "preset"], key=_preset_key).reset_index(drop=True)
    ctx["vs_cnn_summary"] = validity.show_summary(cnn_summary, [
        ("family", "family", "text"), ("preset", "preset", "text"), ("attention", "attention", "text"), *counted,
        ("speed_ratio", "speed (× CNN images/s)", "ratio"),
        ("speed_ratio_min", "slowest (×)", "ratio"), ("speed_ratio_max", "fastest (×)", "ratio"),
        ("memory_ratio", f"memory (× CNN peak MiB, {memory_label})", "ratio"), ("params_ratio", "parameters (× CNN)", "ratio")],
        timing)
    ctx["vs_cnn_pairs"] = show(cnn_pairs, [
        ("case_id", "transformer case", "text"), ("baseline_case_id", "CNN case", "text"),
        ("images_per_s", "transformer (images/s)", "num"), ("baseline_images_per_s", "CNN (images/s)", "num"),
        ("speed_ratio", "speed (×)", "ratio"), ("peak_mib", "transformer peak (MiB)", "mib"),
        ("baseline_peak_mib", "CNN peak (MiB)", "mib"), ("memory_ratio", "memory (×)", "ratio"),
        ("params", "transformer parameters", "count"), ("baseline_params", "CNN parameters", "count"),
        ("params_ratio", "parameters (×)", "ratio"), ("clean", "timing clean", "bool")])
    ctx["vs_cnn_notes"] = _pairing_notes(cnn_pairs, "CNN", ", ".join(tables.CNN_MATCH))
    if device != "cuda" and not cnn_pairs.empty and memory_label == tables.PEAK_LABELS["rss_peak_mib"]:
        ctx["vs_cnn_notes"].append("on a CPU the memory ratio compares process RSS, which includes the interpreter and "
                                   "torch: it is compressed towards 1× and says little about GPU memory")

    # 5. Precision and attention (computed before the claims, which reuse the pairs).
    precision_pairs = tables.vs_axis(rows, "precision", "fp32")
    attention_pairs = tables.vs_axis(rows, "attention", "eager")
    ckpt_pairs = tables.checkpointing_table(rows)
    out_tables["precision"], out_tables["attention"], out_tables["checkpointing"] = precision_pairs, attention_pairs, ckpt_pairs
    for key, pairs, axis, base in (("precision", precision_pairs, "precision", "fp32"),
                                   ("attention", attention_pairs, "attention", "eager")):
        summary = tables.summarize_pairs(pairs, [axis, "mode"])
        ctx[f"{key}_summary"] = validity.show_summary(summary, [
            (axis, axis, "text"), ("mode", "mode", "text"), *counted,
            ("speed_ratio", f"speed (× {base} images/s)", "ratio"), ("speed_ratio_min", "slowest (×)", "ratio"),
            ("speed_ratio_max", "fastest (×)", "ratio"), ("memory_ratio", f"memory (× {base} peak MiB, {memory_label})", "ratio")],
            timing)
        ctx[f"{key}_pairs"] = show(pairs, [
            ("case_id", "case", "text"), ("baseline_case_id", f"{base} case", "text"),
            ("images_per_s", "images/s", "num"), ("baseline_images_per_s", f"{base} images/s", "num"),
            ("speed_ratio", "speed (×)", "ratio"), ("peak_mib", "peak (MiB)", "mib"),
            ("baseline_peak_mib", f"{base} peak (MiB)", "mib"), ("memory_ratio", "memory (×)", "ratio"),
            ("clean", "timing clean", "bool")])
        ctx[f"{key}_notes"] = _pairing_notes(pairs, base, f"every axis but {axis}")
    kernels = out_tables["attention_kernels"]
    ran = kernels[kernels["status"] == "ok"].groupby(["attention", "attention_ran"]).size().reset_index(name="cases")
    ctx["kernels_summary"] = show(ran, [("attention", "requested", "text"), ("attention_ran", "ran (seen at the dispatcher)", "text"),
                                        ("cases", "cases", "int")])
    ctx["auto_notes"] = _auto_notes(ran)
    partial = run.meta.get("partial") if isinstance(run.meta.get("partial"), dict) else None
    ctx["partial"] = str(partial.get("headline") or "partial") if partial else ""  # a merge that lacks shards

    # 6. Gradient checkpointing.
    ckpt_summary = tables.summarize_pairs(ckpt_pairs, ["family", "preset"]) if not ckpt_pairs.empty else pd.DataFrame()
    if not ckpt_summary.empty:
        ckpt_summary["memory_saved_pct"] = (1 - ckpt_summary["memory_ratio"]) * 100
        ckpt_summary["time_lost_pct"] = (ckpt_summary["time_ratio"] - 1) * 100
        ckpt_summary = ckpt_summary.sort_values(["family", "preset"], key=_preset_key)
    ctx["ckpt_summary"] = validity.show_summary(ckpt_summary, [
        ("family", "family", "text"), ("preset", "preset", "text"), ("pairs", "matched train cases", "int"), *counted[1:],
        ("memory_saved_pct", f"memory saved (% of peak MiB, {memory_label})", "pct"),
        ("time_lost_pct", "time lost (% of ms/batch, clean pairs)", "pct")], timing)
    ctx["ckpt_pairs"] = show(ckpt_pairs, [
        ("case_id", "case", "text"), ("baseline_peak_mib", "peak without (MiB)", "mib"), ("peak_mib", "peak with (MiB)", "mib"),
        ("memory_saved_pct", "memory saved (%)", "pct"), ("baseline_median_ms", "without (ms/batch)", "num"),
        ("median_ms", "with (ms/batch)", "num"), ("time_lost_pct", "time lost (%)", "pct"), ("clean", "timing clean", "bool")])
    ctx["ckpt_notes"] = _pairing_notes(ckpt_pairs, "no-checkpointing",
                                       "every axis but checkpointing, in train mode")

    # 4. The seed's claims.
    claims = load_claims()
    rules = seed_claims.rules_of(claims)
    checked = seed_claims.check_all(claims, rows, device, budget_mib, cnn_pairs,
                                    {"precision": precision_pairs, "checkpointing": ckpt_pairs, "attention": attention_pairs},
                                    facts)
    out_tables["claims"] = pd.DataFrame([dict(r, table=k) for k, group in checked.items() for r in group])
    claim_spec = [("claim", "claim", "text"), ("seed_says", "the seed says", "text"), ("measured", "ours", "text"),
                  ("verdict", "verdict", "text")]  # how each was obtained: claims.csv's basis column
    judged = {k: [r for r in v if r["verdict"] in seed_claims.JUDGED] for k, v in checked.items()}
    ctx["claims"] = {k: show(pd.DataFrame(v), claim_spec) for k, v in judged.items()}
    ctx["claims_left"] = {k: len(checked[k]) - len(v) for k, v in judged.items()}
    ctx["claims_sections"] = {k: claims[k]["section"] for k in checked}
    ctx["claims_source"] = seed_claims.claim_source(claims)
    ctx["claims_file"] = "bench/data/seed_claims.toml"
    ctx["claims_rules"] = rules.text()
    ctx["flat_architecture"] = claims["flat_layout"]["architecture"]
    verdicts = out_tables["claims"]["verdict"].value_counts()
    ctx["claims_tally"] = ", ".join(f"{int(verdicts[v])} {v}" for v in seed_claims.VERDICTS if v in verdicts)

    # Plots (placed in their sections by the template).
    figures, drawn = draw_figures(run, rows, device, budget_mib, ctx["budget"], cnn_pairs, memory_label, facts,
                                  answers.read_plan(plan.folder if plan else None))
    out_plots.update(drawn)
    ctx["figures"] = figures
    ctx["fig"] = {f["name"]: f for f in figures}

    # 2. How sure are we: noise and validity.
    settings = run.meta.get("settings", {}) if isinstance(run.meta.get("settings"), dict) else {}
    threshold = float(settings.get("noise_threshold", NOISE_THRESHOLD))
    ok = tables.ok_rows(rows).copy()
    ok["iqr_pct"] = ok["iqr_ms"] / ok["median_ms"] * 100
    noisy = ok[ok["noisy"].map(lambda v: v is True)]
    ctx["noise_threshold"] = f"{threshold * 100:g} %"
    ctx["noisy_more"] = max(0, len(noisy) - NOISY_SHOWN)
    noisiest = noisy.sort_values("iqr_pct", ascending=False).head(NOISY_SHOWN) if not noisy.empty else noisy
    ctx["noisy"] = show(noisiest, [("case_id", "case", "text"), ("median_ms", "median (ms/batch)", "num"),
                                ("iqr_ms", "IQR (ms)", "num"), ("iqr_pct", "IQR / median (%)", "pct"),
                                ("cv", "CV (%)", "frac_pct"), ("iters", "samples", "int")])
    ctx["noisy_count"], ctx["ok_rows"] = len(noisy), len(ok)
    throttled = ok[ok["throttled"].map(lambda v: v is True)]
    ctx["throttled"] = show(throttled, [("case_id", "case", "text"), ("throttle_reasons", "NVML reasons", "text"),
                                        ("sm_clock_mhz", "SM clock (MHz)", "num")])
    ctx["throttle_known"] = bool(ok["throttled"].map(lambda v: v is not None).any())
    ctx["not_ok"] = show(out_tables["not_ok"], [("case_id", "case", "text"), ("status", "status", "text"), ("reason", "reason", "text")])
    disagree = kernels[kernels["agrees"] == "no"]
    ctx["kernel_disagreements"] = show(disagree, [("case_id", "case", "text"), ("attention", "requested", "text"),
                                                  ("attention_ran", "ran", "text")])
    ctx.update(validity.context(rows, run.meta, refused, {"transformer vs CNN": cnn_pairs, "precision": precision_pairs,
                                                           "attention": attention_pairs, "checkpointing": ckpt_pairs}))
    ctx["memory_label"] = memory_label
    ctx["run_notes"] = list(run.notes) + facts_notes
    ctx["table_files"] = [{"file": f, "what": what} for f, what in TABLE_FILES.values()]

    try:
        markdown = template.render(**ctx)
    except jinja2.TemplateError as err:
        raise ValueError(f"report template {template_path}: {err}") from None
    return Report(markdown + shards_section(run), out_tables, out_plots, ctx)  # a merged run's shards (report/shards.py)


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


# -- writing --------------------------------------------------------------------------------------

def write_report(source: Path, out: Optional[Path] = None, budget: str = DEFAULT_BUDGET,
                 template: Optional[Path] = None, with_dirs: tuple[Path, ...] = ()) -> Path:
    """Read ``source`` (results folder or pytest-benchmark JSON), build the report, write it.

    Returns the path of ``report.md``. Raises ValueError (nothing written) on bad input.
    """
    budget_mib = parse_budget(budget)
    run = load_run(Path(source))
    if run.rows.empty:  # a header-only results.csv: what a kill before the first row, or a full disk, leaves
        raise ValueError(f"{run.source} holds no rows yet (the run stopped before its first case was written): nothing "
                         "to report; finish it with `python -m bench run ... --resume RUN_DIR`")
    out_dir = Path(out) if out else run.default_out
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output {out_dir} exists and is not a folder")
    folder = Path(run.source) if run.kind == "results folder" else None
    companions = tuple(find_companions(folder, out_dir, run.meta, tuple(with_dirs)))
    report = build_report(run, budget_mib, Path(template) if template else None, companions)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, frame in report.tables.items():
        atomic_write_text(out_dir / TABLE_FILES[key][0], frame.to_csv(index=False))
    for rel, png in report.plots.items():
        atomic_write_bytes(out_dir / rel, png)
    path = out_dir / REPORT_MD
    atomic_write_text(path, report.markdown)
    return path
