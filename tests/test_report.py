"""The report (``python -m bench report``, ``bench/report/build.py``): built from a real small run.

A session fixture measures nine tiny cases on the CPU (plus one unsupported fp16 case), writes
the run folder, and builds the report once; the tests check each section, each table's figures
against the rows, each plot, and what happens with missing pieces and bad input.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import torch

import ae_models
import ae_models.registry
from bench import cli
from bench.core import model_probe
from bench.core.cases import expand, parse_matrix
from bench.core.loop import sweep
from bench.core.measure import Settings
from bench.core.selection import Selection
from bench.core.session import start_run
from bench.report import claims as report_claims
from bench.report.build import build_report, parse_budget, write_report
from bench.report.display import fmt_num, md_table
from bench.runs.model_facts import ATTENTION_MAPS_PNG, read_model_facts
from bench.runs.reader import load_run
from bench.runs.seed_claims import load_claims
from bench.trackers.device import device_facts

REPO = Path(__file__).resolve().parent.parent
# The committed CPU reference run, named: never the newest folder of results/, which after the README's
# first command is the user's own run (a narrowed or resumed one fails these checks). A new reference
# run is committed together with this line.
REFERENCE_RUN = REPO / "results" / "20261130-000938-cpu-2c-intel-r-xeon-r-processor"
SECTIONS = ("## 1. What to run on", "## 2. How sure are we", "## 3. Trade-offs", "## 4. Transformer vs CNN",
            "## 5. The seed's claims, checked", "## 6. Reconstruction quality", "## 7. Run facts")

# Small enough for 2 busy cores: every case is the tiny preset at batch 2 or 4.
MATRIX = {"group": [
    {"families": ["transformer"], "presets": ["tiny"], "sizes": ["201x201"], "precisions": ["fp32"],
     "attention": ["eager", "flash"], "modes": ["infer"], "batch": [2, 4]},
    {"families": ["transformer"], "presets": ["tiny"], "sizes": ["201x201"], "precisions": ["fp32"],
     "attention": ["eager"], "checkpointing": [False, True], "modes": ["train"], "batch": [2]},
    {"families": ["transformer"], "presets": ["tiny"], "sizes": ["201x201"], "precisions": ["amp-bf16", "fp16"],
     "attention": ["eager"], "modes": ["infer"], "batch": [2]},
    {"families": ["cnn"], "presets": ["tiny"], "sizes": ["201x201"], "precisions": ["fp32"], "modes": ["infer", "train"],
     "batch": [2]},
]}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A real run folder of a tiny CPU sweep, started as every run is (so with its model facts):
    results.csv, samples.jsonl, meta.json, model_facts.json and plots/attention_maps.png."""
    torch.set_num_threads(1)  # as tests/conftest.py: the model facts computed again in a test must match bit for bit
    device = torch.device("cpu")
    facts = device_facts(device)
    matrix = parse_matrix(MATRIX, name="report-test")
    cases = expand(matrix, device=facts)
    settings = Settings(warmup=1, min_iters=3, max_iters=5, min_time_s=0.0, memory_iters=1)
    run = start_run(Selection(device, facts, matrix, cases, settings), tmp_path_factory.mktemp("report-run"), "test",
                    ["python", "-m", "bench", "run", "--matrix", "report-test"], launcher="in-process")
    sweep(run, cases, progress=None)
    return run.run_dir


@pytest.fixture
def no_model_building(monkeypatch):
    """Every way to build a model raises: what runs under this builds none."""
    def refuse(*args, **kwargs):
        raise AssertionError("the report built a model")

    monkeypatch.setattr(ae_models.registry, "build_model", refuse)
    monkeypatch.setattr(ae_models, "build_model", refuse)


@pytest.fixture(scope="session")
def report_dir(run_dir, tmp_path_factory) -> Path:
    """The report written into a copy of the run folder (other tests edit copies of the run)."""
    folder = tmp_path_factory.mktemp("report") / run_dir.name
    shutil.copytree(run_dir, folder)
    write_report(folder)
    return folder


@pytest.fixture(scope="session")
def report_md(report_dir) -> str:
    return (report_dir / "report.md").read_text()


@pytest.fixture(scope="session")
def rows(run_dir) -> pd.DataFrame:
    return load_run(run_dir).rows


def section(markdown: str, heading: str) -> str:
    """The text of one ``## N.`` section."""
    start = markdown.index(heading)
    nxt = markdown.find("\n## ", start + 1)
    return markdown[start: nxt if nxt > 0 else None]


def by_id(rows: pd.DataFrame, case_id: str) -> pd.Series:
    match = rows[rows["case_id"] == case_id]
    assert len(match) == 1, case_id
    return match.iloc[0]


# -- sections ---------------------------------------------------------------------------------

def test_the_run_measured_every_case_but_the_unsupported_one(rows):
    assert sorted(rows["status"].value_counts().items()) == [("ok", 9), ("unsupported", 1)]


def test_report_has_every_section_in_order(report_md):
    positions = [report_md.index(heading) for heading in SECTIONS]
    assert positions == sorted(positions)


def test_run_facts_say_how_to_reproduce_from_meta(report_md, run_dir):
    meta = json.loads((run_dir / "meta.json").read_text())
    facts = section(report_md, "## 7. Run facts")
    assert f"`{meta['command']}`" in facts
    assert meta["device"]["name"] in facts
    assert meta["created"] in facts
    assert "python -m bench report" in facts


# -- tables against the rows --------------------------------------------------------------------

def test_throughput_table_holds_each_ok_rows_images_per_s(report_dir, rows):
    table = pd.read_csv(report_dir / "throughput.csv")
    ok = rows[rows["status"] == "ok"]
    assert table.shape[0] == ok.drop_duplicates(["family", "mode", "attention", "checkpointing", "batch"]).shape[0]
    for _, row in ok.iterrows():
        line = table[(table["family"] == row["family"]) & (table["mode"] == row["mode"])
                     & (table["attention"] == row["attention"]) & (table["batch"] == row["batch"])
                     & (table["checkpointing"] == row["checkpointing"])]
        assert line[f"{row['size']} {row['precision']}"].item() == pytest.approx(row["images_per_s"], rel=1e-9)


def test_memory_table_holds_the_tensor_and_rss_peaks_on_cpu(report_dir, rows):
    table = pd.read_csv(report_dir / "memory.csv")
    row = by_id(rows, "cnn-tiny-201x201-fp32-train-b2")
    line = table[(table["family"] == "cnn") & (table["mode"] == "train")]
    assert line["tensor_peak_mib 201x201 fp32"].item() == pytest.approx(row["tensor_peak_mib"], rel=1e-9)
    assert line["rss_peak_mib 201x201 fp32"].item() == pytest.approx(row["rss_peak_mib"], rel=1e-9)
    assert not any(c.startswith("alloc_peak_mib") for c in table.columns)  # no CUDA figure on a CPU run


def test_latency_table_has_the_rows_percentiles_and_the_slowest_sample(report_dir, run_dir, rows):
    table = pd.read_csv(report_dir / "latency.csv").set_index("case_id")
    samples = {json.loads(l)["case_key"]: json.loads(l)["samples_ms"] for l in (run_dir / "samples.jsonl").read_text().splitlines()}
    for _, row in rows[rows["status"] == "ok"].iterrows():
        for column in ("min_ms", "p10_ms", "median_ms", "p90_ms"):
            assert table.loc[row["case_id"], column] == pytest.approx(row[column], rel=1e-9)
        assert table.loc[row["case_id"], "max_ms"] == pytest.approx(max(samples[row["case_key"]]))


def test_attention_kernel_table_compares_requested_and_ran(report_dir):
    table = pd.read_csv(report_dir / "attention_kernels.csv", keep_default_na=False)
    ok = table[table["status"] == "ok"]
    assert set(ok["agrees"]) == {"yes"}
    assert (ok["attention"] == ok["attention_ran"]).all()
    assert "cnn" not in " ".join(table["case_id"])


def test_unsupported_case_is_listed_with_its_reason(report_dir, report_md, rows):
    row = rows[rows["status"] == "unsupported"].iloc[0]
    table = pd.read_csv(report_dir / "not_ok.csv")
    assert table.to_dict("records") == [{"case_id": row["case_id"], "status": "unsupported", "reason": row["reason"]}]
    assert row["reason"] in section(report_md, "## 2. How sure are we")


def test_headline_is_the_fastest_case_per_size_and_mode_within_budget(report_dir, report_md, rows):
    ok = rows[(rows["status"] == "ok") & (rows["tensor_peak_mib"] <= parse_budget("8GiB"))]  # a CPU's peak: live tensors
    expected = ok.loc[ok.groupby(["size", "mode"])["images_per_s"].idxmax()]
    table = pd.read_csv(report_dir / "headline.csv")
    assert sorted(table["case_id"]) == sorted(expected["case_id"])
    text = section(report_md, "## 1. What to run on")
    for _, row in expected.iterrows():
        assert f"| {row['case_id']} |" in text
        assert f"| {fmt_num(row['images_per_s'])} |" in text


def test_headline_says_when_nothing_fits_the_budget(run_dir, tmp_path):
    report = build_report(load_run(run_dir), parse_budget("1MiB"))
    text = section(report.markdown, "## 1. What to run on")
    assert "No ok case fits the budget" in text
    assert "201x201, infer: none of the" in text


def test_transformer_vs_cnn_ratios_are_the_rows_ratios(report_dir, report_md, rows):
    table = pd.read_csv(report_dir / "vs_cnn.csv")
    assert len(table) == 4  # eager and flash at b2 infer, eager and ckpt eager at b2 train; b4 has no CNN case
    for _, pair in table.iterrows():
        mine, cnn = by_id(rows, pair["case_id"]), by_id(rows, pair["baseline_case_id"])
        assert (cnn["size"], cnn["precision"], cnn["mode"], cnn["batch"], cnn["preset"]) == \
               (mine["size"], mine["precision"], mine["mode"], mine["batch"], mine["preset"])
        assert pair["speed_ratio"] == pytest.approx(mine["images_per_s"] / cnn["images_per_s"])
        assert pair["memory_ratio"] == pytest.approx(mine["tensor_peak_mib"] / cnn["tensor_peak_mib"])
        assert pair["params_ratio"] == pytest.approx(mine["params"] / cnn["params"])
    assert "every matched pair is in `vs_cnn.csv`" in section(report_md, "## 4. Transformer vs CNN").replace("\n", " ").lower()


def test_precision_and_attention_are_ratios_to_fp32_and_eager_on_the_same_case(report_dir, rows):
    precision = pd.read_csv(report_dir / "precision.csv")
    assert list(precision["case_id"]) == ["transformer-tiny-201x201-amp-bf16-eager-infer-b2"]
    assert precision["speed_ratio"].item() == pytest.approx(
        by_id(rows, "transformer-tiny-201x201-amp-bf16-eager-infer-b2")["images_per_s"]
        / by_id(rows, "transformer-tiny-201x201-fp32-eager-infer-b2")["images_per_s"])
    attention = pd.read_csv(report_dir / "attention.csv")
    assert sorted(attention["case_id"]) == ["transformer-tiny-201x201-fp32-flash-infer-b2",
                                            "transformer-tiny-201x201-fp32-flash-infer-b4"]


def test_checkpointing_reports_memory_saved_and_time_lost_in_train_mode(report_dir, report_md, rows):
    table = pd.read_csv(report_dir / "checkpointing.csv")
    with_ckpt = by_id(rows, "transformer-tiny-201x201-fp32-eager-ckpt-train-b2")
    without = by_id(rows, "transformer-tiny-201x201-fp32-eager-train-b2")
    assert table["time_lost_pct"].item() == pytest.approx((with_ckpt["median_ms"] / without["median_ms"] - 1) * 100)
    assert table["memory_saved_pct"].item() == pytest.approx((1 - with_ckpt["tensor_peak_mib"] / without["tensor_peak_mib"]) * 100)
    assert table["memory_saved_pct"].item() > 0  # live tensors: checkpointing keeps fewer activations
    assert "`checkpointing.csv`" in section(report_md, "## 3. Trade-offs")  # the pair; the summary needs 3 clean pairs
    summary = section(report_md, "## 3. Trade-offs").split("### Gradient checkpointing")[1]
    assert f"{table['memory_saved_pct'].item():.1f} %" in summary


# -- validity: live tensors, the memory model, impossible values, noisy pairs -----------------------

def test_every_ok_row_has_a_live_tensor_peak_and_the_memory_models_prediction(report_dir, report_md, rows):
    ok = rows[rows["status"] == "ok"]
    assert (ok["tensor_peak_mib"] > 0).all() and ok["predicted_tensor_mib"].notna().all()
    recomputed = 100 * (ok["predicted_tensor_mib"] - ok["tensor_peak_mib"]) / ok["tensor_peak_mib"]
    assert (ok["prediction_error_pct"] - recomputed).abs().max() < 0.01  # the CSV keeps 6 significant digits
    assert (ok[ok["family"] == "transformer"]["prediction_error_pct"].abs() < 5).all()
    table = pd.read_csv(report_dir / "memory_model.csv")
    assert len(table) == len(ok) and list(table["abs_error"]) == sorted(table["abs_error"], reverse=True)
    text = section(report_md, "## 2. How sure are we")
    assert table["case_id"].iloc[0] in text and f"{len(ok)} of {len(ok)} ok rows carry a prediction" in text
    assert "live tensors (device-independent)" in section(report_md, "## 4. Transformer vs CNN")


def test_a_row_above_100_percent_mfu_is_refused_and_in_no_result(run_dir, tmp_path, rows):
    ok = rows[(rows["status"] == "ok") & (rows["mode"] == "infer")]
    winner = ok.loc[ok["images_per_s"].idxmax(), "case_id"]  # the headline's infer case, until refused

    def edit(frame):
        frame.loc[frame["case_id"] == winner, "mfu"] = "2.65"

    folder = _copy_with(run_dir, tmp_path, edit)
    markdown = write_report(folder).read_text()
    assert winner not in set(pd.read_csv(folder / "headline.csv")["case_id"])
    for name in ("vs_cnn.csv", "precision.csv", "attention.csv", "checkpointing.csv", "latency.csv"):
        table = pd.read_csv(folder / name)
        assert winner not in set(table["case_id"]) | set(table.get("baseline_case_id", [])), name
    invalid = pd.read_csv(folder / "invalid.csv")
    assert list(invalid["case_id"]) == [winner] and "MFU 265.0% is above 100%" in invalid["reason"].item()
    assert winner not in set(pd.read_csv(folder / "not_ok.csv")["case_id"])
    text = section(markdown, "## 2. How sure are we")
    assert winner in text and "1 of them were refused by this report" in text
    assert "1 invalid" in markdown.splitlines()[2]
    shown = [float(m) for m in re.findall(r"\| ([0-9.]+) % \|$", section(markdown, "## 1. What to run on"), re.M)]
    assert shown and max(shown) <= 100  # no MFU above 100% anywhere in the headline


def _quiet(frame):
    frame["noisy"] = "False"


def _judged_by_the_rule(claim) -> None:
    """A ratio claim's verdict is the rule's for its measured figure and the seed's range (no either-or)."""
    rules = report_claims.rules_of(load_claims())
    assert claim["verdict"] == report_claims.ratio_verdict(claim["measured_value"], claim["claimed_low"],
                                                         claim["claimed_high"], rules), claim.to_dict()
    assert claim["verdict"] in ("holds", "does not hold")  # a figure was measured, so it is judged


def test_speed_ratios_and_verdicts_are_taken_over_pairs_with_neither_side_noisy(run_dir, tmp_path):
    folder = _copy_with(run_dir, tmp_path / "quiet", _quiet)
    write_report(folder)
    pairs = pd.read_csv(folder / "vs_cnn.csv")
    eager = pairs[pairs["attention"] == "eager"]
    assert len(eager) == 3 and eager["clean"].all()
    claims = pd.read_csv(folder / "claims.csv").set_index("claim")
    speed = claims.loc["Transformer (tiny): speed vs CNN (transformer)"]
    assert speed["measured_value"] == pytest.approx(eager["speed_ratio"].median())
    _judged_by_the_rule(speed)

    def one_noisy(frame):
        _quiet(frame)
        frame.loc[frame["case_id"] == "cnn-tiny-201x201-fp32-train-b2", "noisy"] = "True"

    folder = _copy_with(run_dir, tmp_path / "noisy", one_noisy)
    markdown = write_report(folder).read_text()
    pairs = pd.read_csv(folder / "vs_cnn.csv")
    assert list(pairs[~pairs["clean"]]["baseline_case_id"]) == ["cnn-tiny-201x201-fp32-train-b2"] * 2
    claims = pd.read_csv(folder / "claims.csv").set_index("claim")
    speed = claims.loc["Transformer (tiny): speed vs CNN (transformer)"]
    assert speed["verdict"] == "too noisy to judge" and pd.isna(speed["measured_value"])
    assert "1 clean pair(s), 2 left out as noisy" in speed["measured"]
    memory = claims.loc["Transformer (tiny): memory vs CNN (transformer)"]  # memory is not from the timed loop
    assert memory["measured_value"] == pytest.approx(pairs[pairs["attention"] == "eager"]["memory_ratio"].median())
    _judged_by_the_rule(memory)
    text = section(markdown, "## 4. Transformer vs CNN")
    assert "| transformer | tiny | eager | 3 | 1 | 2 | too noisy to judge |" in text
    assert "- transformer vs CNN: 2 of 4" in section(markdown, "## 2. How sure are we")


# -- the seed's claims ------------------------------------------------------------------------------

def test_claims_are_quoted_with_their_source(report_md):
    text = section(report_md, "## 5. The seed's claims, checked")
    claims = load_claims()
    assert claims["source"] in text
    for row in claims["parameter_counts"]["row"]:
        assert f"| {row['parameters']} |" in text
    table = section(text, "### 5.2")
    shown = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert shown and all(any(v in line for v in report_claims.JUDGED) for line in shown)  # the judged claims only


def test_parameter_counts_are_computed_from_the_model_definitions(report_dir):
    table = pd.read_csv(report_dir / "claims.csv")
    params = table[table["claim"].str.contains(": parameters")]
    assert len(params) == 10  # five presets x (patch, flat)
    for _, claim in params.iterrows():
        preset, family = re.match(r"(\w+): parameters \((.+)\)", claim["claim"]).groups()
        assert claim["measured_value"] == model_probe.parameter_count(family, preset, "201x201", 512)
        assert "computed from the model definition" in claim["basis"]
        expected = report_claims.params_verdict(claim["measured_value"], claim["claimed_low"], report_claims.rules_of(load_claims()))
        assert claim["verdict"] == expected


def test_flat_layout_at_1280x152_is_about_900m_parameters_mostly_projections(report_dir, report_md):
    table = pd.read_csv(report_dir / "claims.csv")
    flat = table[table["claim"].str.startswith("parameters of the seed's layout")].iloc[0]
    assert 880e6 < flat["measured_value"] < 920e6
    assert flat["verdict"] == "does not hold"
    assert model_probe.flat_projection_count("xlarge", "1280x152", 2048) == pytest.approx(797e6, rel=0.01)
    assert "797M" in report_md and "902M" in report_md
    attention = table[table["claim"] == "attention of the seed's layout"].iloc[0]
    assert attention["measured_value"] == 0  # W_q and W_k get exactly zero gradient over one token


def test_cpu_run_judges_memory_ratios_on_live_tensors_but_not_absolute_gpu_memory(report_dir):
    table = pd.read_csv(report_dir / "claims.csv")
    memory = table[table["claim"].str.contains("memory")]
    assert set(table["verdict"]) <= set(report_claims.VERDICTS)
    absolute = memory[memory["claim"].str.contains("at the recommended batch")]
    assert (absolute["verdict"] == "not measurable on this device").all()
    ratios = memory.set_index("claim")
    for claim in ("Transformer (tiny): memory vs CNN (transformer)", "Gradient Checkpointing: memory",
                  "Mixed Precision (AMP): memory"):
        _judged_by_the_rule(ratios.loc[claim])  # judged, with a number, by the rule
        assert "live tensors (device-independent)" in ratios.loc[claim, "measured"]


@pytest.mark.parametrize("measured, low, high, verdict", [
    (0.8, 0.8, 0.8, "holds"), (0.6, 0.8, 0.8, "holds"), (0.59, 0.8, 0.8, "does not hold"),  # ±25% of 0.8 = ±0.2
    (0.45, 0.4, 0.4, "holds"), (0.29, 0.4, 0.4, "does not hold"),  # the ±0.1 absolute floor for small ratios
    (1.2, 1.3, 1.4, "holds"), (1.8, 1.3, 1.4, "does not hold"), (float("nan"), 1.0, 1.0, "not measured in this run"),
])
def test_ratio_verdict_rule(measured, low, high, verdict):
    assert report_claims.ratio_verdict(measured, low, high, report_claims.rules_of(load_claims())) == verdict


@pytest.mark.parametrize("measured, verdict", [(650_000, "holds"), (350_000, "holds"), (660_000, "does not hold")])
def test_params_verdict_rule_is_30_percent(measured, verdict):
    assert report_claims.params_verdict(measured, 500_000, report_claims.rules_of(load_claims())) == verdict


# -- plots ----------------------------------------------------------------------------------------

def test_every_referenced_png_exists_and_opens(report_dir, report_md):
    paths = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report_md)
    assert {Path(p).stem for p in paths} == {"throughput_bars", "throughput_vs_batch", "memory_vs_batch", "transformer_vs_cnn",
                                             "latency_distribution", "attention_maps"}
    for rel in paths:
        image = matplotlib.image.imread(report_dir / rel)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_attention_maps_are_labelled_as_an_untrained_model(report_md):
    assert "untrained transformer-tiny at 201x201" in section(report_md, "## 7. Run facts")


# -- the report reads files, and builds no model -------------------------------------------------------

def test_the_run_wrote_its_model_facts_when_it_started(run_dir):
    facts = read_model_facts(run_dir)
    assert facts.params("transformer", "tiny", "201x201", 0) == model_probe.parameter_count("transformer", "tiny", "201x201", 0)
    assert facts.params("transformer-flat", "xlarge", "1280x152", 2048) == model_probe.parameter_count(
        "transformer-flat", "xlarge", "1280x152", 2048)
    probe = facts.flat_probe("tiny", "201x201", 128)
    assert probe["map_shape"][-2:] == [1, 1] and probe["map_values"] == [1.0] and probe["qk_grad_norm"] == 0
    assert facts.attention_maps["path"] == ATTENTION_MAPS_PNG
    assert (run_dir / ATTENTION_MAPS_PNG).is_file()
    assert facts.data["not_computed"] == []


def test_report_command_builds_no_model(run_dir, tmp_path, no_model_building):
    out = tmp_path / "out"
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "797M" in markdown and "902M" in markdown  # the flat layout's counts, read from model_facts.json
    assert (out / "plots" / "attention_maps.png").read_bytes() == (run_dir / "plots" / "attention_maps.png").read_bytes()
    claims = pd.read_csv(out / "claims.csv")
    assert not claims["basis"].str.contains("not computed").any()


def test_importing_the_report_imports_no_model_code():
    code = ("import sys, bench.report.build, bench.report.claims, bench.report.plots; "
            "print(' '.join(m for m in ('ae_models.transformer', 'ae_models.cnn', 'ae_models.layers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""


def test_the_report_command_module_imports_no_torch():
    code = "import sys, bench.report.command; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_run_without_model_facts_renders_and_says_which_facts_are_missing(run_dir, tmp_path, no_model_building):
    folder = tmp_path / run_dir.name
    shutil.copytree(run_dir, folder)
    (folder / "model_facts.json").unlink()
    (folder / "plots" / "attention_maps.png").unlink()
    markdown = write_report(folder).read_text()
    assert all(heading in markdown for heading in SECTIONS)
    assert "no model_facts.json: " in markdown and f"`python -m bench.core.model_probe {folder}`" in markdown
    assert "Not drawn: figure not computed: the run has no model_facts.json" in markdown
    claims = pd.read_csv(folder / "claims.csv")
    computed = claims[claims["claim"].str.contains(": parameters|seed's layout")]
    assert len(computed) == 13  # 10 counts, the flat layout's count, its training memory, its attention
    assert (computed["verdict"] == "not measured in this run").all()
    assert computed["basis"].str.contains("not computed: the run has no model_facts.json").all()


def test_model_facts_command_writes_the_facts_of_a_run_already_on_disk(run_dir, rows, tmp_path):
    folder = tmp_path / run_dir.name
    shutil.copytree(run_dir, folder)
    (folder / "model_facts.json").unlink()
    (folder / "plots" / "attention_maps.png").unlink()
    assert model_probe.main([str(folder)]) == 0
    written = read_model_facts(folder)
    for _, row in rows[rows["status"] == "ok"].iterrows():  # the rows hold the latent as built, not 0 (the default)
        assert written.params(row["family"], row["preset"], row["size"], int(row["latent"])) == row["params"], row["case_id"]
    assert written.data["flat_attention_probe"] == read_model_facts(run_dir).data["flat_attention_probe"]
    assert written.attention_maps == read_model_facts(run_dir).attention_maps
    assert (folder / "plots" / "attention_maps.png").is_file()


def test_the_reference_run_reports_without_building_a_model(tmp_path, no_model_building):
    out = tmp_path / "reference"
    assert cli.main(["report", str(REFERENCE_RUN), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert all(heading in markdown for heading in SECTIONS)
    if not (REFERENCE_RUN / "model_facts.json").exists():
        assert "no model_facts.json" in markdown
    if "tensor_peak_mib" not in (REFERENCE_RUN / "results.csv").read_text().splitlines()[0]:
        # a run made before the live-tensor peak: it reads, its CPU peak is the RSS, and no memory claim is judged on it
        assert "memory (× CNN peak MiB, process RSS)" in markdown
        claims = pd.read_csv(out / "claims.csv").set_index("claim")
        assert claims.loc["Gradient Checkpointing: memory", "verdict"] == "not measurable on this device"


def test_a_corrupt_model_facts_file_is_one_line_and_overwrites_nothing(report_dir, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(report_dir, folder)
    (folder / "model_facts.json").write_text('{"format": 1, "parameters": [')
    before = (folder / "report.md").read_text()
    assert cli.main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model_facts.json is not valid JSON" in err
    assert (folder / "report.md").read_text() == before


# -- missing pieces ---------------------------------------------------------------------------------

def _copy_with(run_dir: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / run_dir.name
    shutil.copytree(run_dir, folder)
    frame = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(folder / "results.csv", index=False)
    return folder


def test_run_with_failures_oom_and_no_samples_still_renders_and_says_what_is_missing(run_dir, tmp_path):
    def edit(frame):
        cnn = frame["family"] == "cnn"
        frame.loc[cnn, "status"] = "error"
        frame.loc[cnn, "reason"] = "RuntimeError: broken on purpose [cnn.py:1]"
        oom = frame["case_id"] == "transformer-tiny-201x201-fp32-eager-ckpt-train-b2"
        frame.loc[oom, "status"] = "oom"
        frame.loc[oom, "reason"] = "CUDA out of memory (fabricated)"

    folder = _copy_with(run_dir, tmp_path, edit)
    (folder / "samples.jsonl").unlink()
    (folder / "meta.json").unlink()
    markdown = write_report(folder).read_text()
    assert all(heading in markdown for heading in SECTIONS)
    assert "no pair: the run has no ok case with a CNN counterpart" in markdown
    assert "broken on purpose" in markdown and "CUDA out of memory (fabricated)" in markdown
    assert "no meta.json in the folder" in markdown
    assert "Not drawn: no per-iteration samples" in markdown
    assert "| reproduce the run | not recorded |" in markdown
    claims = pd.read_csv(folder / "claims.csv")
    speed = claims[claims["claim"] == "Transformer (tiny): speed vs CNN (transformer)"]
    assert speed["verdict"].item() == "not measured in this run"


def test_run_where_nothing_ran_still_renders(run_dir, tmp_path):
    def edit(frame):
        frame["status"] = "error"
        frame["reason"] = "ValueError: nothing ran (fabricated)"

    folder = _copy_with(run_dir, tmp_path, edit)
    markdown = write_report(folder).read_text()
    assert "0 measured case(s)" in markdown
    assert "_No ok case fits the budget (or none ran)._" in markdown
    # only the figure of the model, drawn when the run started: nothing measured is plotted
    assert [Path(p).stem for p in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)] == ["attention_maps"]


def test_gpu_rows_get_memory_and_batch_verdicts(run_dir, tmp_path):
    """A CUDA run judges the seed's memory claims on the NVML peak (rows edited to look like one)."""
    def edit(frame):
        frame["device"] = "cuda"
        frame["nvml_process_peak_mib"] = frame["rss_peak_mib"]
        train = frame["case_id"] == "transformer-tiny-201x201-fp32-eager-train-b2"
        frame.loc[train, "batch"] = "64"
        frame.loc[train, "nvml_process_peak_mib"] = "1500"

    folder = _copy_with(run_dir, tmp_path, edit)
    write_report(folder)
    claims = pd.read_csv(folder / "claims.csv").set_index("claim")
    assert claims.loc["tiny: memory at the recommended batch", "verdict"] == "holds"  # 1500 MiB within 1-2 GB
    assert claims.loc["tiny: recommended batch fits 8 GiB (8,192 MiB)", "verdict"] == "holds"
    assert claims.loc["tiny: memory at the recommended batch", "measured_value"] == 1500


# -- the command ----------------------------------------------------------------------------------

def test_custom_template_is_used(report_dir, tmp_path, capsys):
    template = tmp_path / "mine.md"
    template.write_text("cases: {{ ok_count }}\n{{ headline | md_table }}\n")
    out = tmp_path / "out"
    assert cli.main(["report", str(report_dir), "--template", str(template), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text.startswith("cases: 9\n| input size (WxH) |")
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nothing-here", "does not exist"),
    (lambda d: d.mkdir() or d, "is not a results folder: no results.csv"),
    (lambda d: (d.parent / "bad.json").write_text('{"benchmarks": [{"name": ') and d.parent / "bad.json", "is not valid JSON"),
    (lambda d: (d.parent / "other.json").write_text('{"benchmarks": [{"name": "x", "extra_info": {}}]}') and d.parent / "other.json",
     "none of its 1 benchmarks has an ae-bench row in extra_info"),
])
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys, make, message):
    target = make(tmp_path / "input")
    assert cli.main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


@pytest.mark.parametrize("corrupt, message", [
    (lambda text: text[: len(text) - 120], "is truncated or corrupt"),
    (lambda text: text.replace(",ok,", ",done,", 1), "is not one of ok"),
    (lambda text: "", "is empty"),
])
def test_corrupt_csv_overwrites_nothing(report_dir, tmp_path, capsys, corrupt, message):
    folder = tmp_path / "run"
    shutil.copytree(report_dir, folder)
    csv_path = folder / "results.csv"
    csv_path.write_text(corrupt(csv_path.read_text()))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert cli.main(["report", str(folder)]) == 2
    assert message in capsys.readouterr().err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_broken_template_overwrites_nothing(report_dir, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(report_dir, folder)
    before = (folder / "report.md").read_text()
    template = tmp_path / "broken.md"
    template.write_text("{{ no_such_value }}\n")
    assert cli.main(["report", str(folder), "--template", str(template)]) == 2
    assert "no_such_value" in capsys.readouterr().err
    assert (folder / "report.md").read_text() == before


def test_budget_accepts_binary_and_decimal_units():
    assert parse_budget("8GiB") == 8192
    assert parse_budget("6144 MiB") == 6144
    assert parse_budget("8GB") == pytest.approx(8e9 / 2**20)
    assert parse_budget("8TiB") == 8 * 2**20
    assert parse_budget("1.5gib") == 1536


@pytest.mark.parametrize("text", ["8", "0", "-1GiB", "8 gigs", ""])
def test_a_bad_budget_is_one_line(text):
    with pytest.raises(ValueError, match="bad memory budget") as err:
        parse_budget(text)
    assert "\n" not in str(err.value)


def test_md_table_escapes_pipes():
    assert md_table(pd.DataFrame({"a": ["x|y"]})) == "| a |\n|---|\n| x\\|y |"


# -- the pytest entry point ------------------------------------------------------------------------

@pytest.mark.slow
def test_pytest_session_writes_the_report_and_its_json_makes_the_same_one(tmp_path):
    """``pytest bench`` ends with the report in the run folder; the saved JSON regenerates it."""
    json_path = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "pytest", "bench/test_speed.py", "--ae-matrix", "smoke", "-q", "-p", "no:cacheprovider",
           "-k", "cnn-tiny-201x201-fp32-infer or transformer-tiny-201x201-fp32-flash-infer",
           f"--benchmark-json={json_path}", "--ae-results", str(tmp_path / "results")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = (tmp_path / "results").iterdir()
    assert f"report: {run / 'report.md'}" in done.stdout  # the line bench.core.session.end_run prints
    assert (run / "model_facts.json").is_file()  # written when the session's run started
    folder_md = (run / "report.md").read_text()
    assert (run / "plan.csv").is_file()  # the first screen's plan, written before the report
    assert cli.main(["report", str(json_path), "--with", str(run)]) == 0  # a JSON file carries no plan: given here
    json_md = (tmp_path / "bench-report" / "report.md").read_text()
    assert "| cnn tiny, latent " in section(folder_md, "## 1. What to run on")  # fp32 flash does not run on CUDA: the transformer has no answer here
    # The same rows, so the same headline and ratios; the JSON report also knows how the run was made.
    def answer(markdown: str) -> str:  # the plan is linked from where each report lies
        return re.sub(r"\[[^\]]*plan\.md\]\([^)]*\)", "PLAN", section(markdown, "## 1. What to run on"))

    assert answer(json_md) == answer(folder_md)
    assert section(json_md, "## 4. Transformer vs CNN") == section(folder_md, "## 4. Transformer vs CNN")
    assert "--ae-matrix smoke" in section(json_md, "## 7. Run facts")
    # A session that also ran other benchmarks (bench/test_blocks.py) saves them beside the cases:
    # the report and the regression check read the cases and leave the others out.
    mixed = json.loads(json_path.read_text())
    mixed["benchmarks"].append({"name": "test_block_forward[small-800tok-ours]", "extra_info": {},
                                "stats": mixed["benchmarks"][0]["stats"]})
    mixed_path = tmp_path / "mixed.json"
    mixed_path.write_text(json.dumps(mixed))
    assert cli.main(["report", str(mixed_path)]) == 0
    assert "1 other benchmark(s) of the session" in (tmp_path / "mixed-report" / "report.md").read_text()
    # The same samples on both sides: nothing can be slower; on a busy runner the cases may be too noisy to
    # judge (INCONCLUSIVE, exit 4), never a failure. The plumbing is what this checks: the cases only, compared.
    assert cli.main(["compare", str(run), str(mixed_path), "-q", "--allow-inconclusive"]) == 0


# -- the README's figures, as literals (not recomputed with the code under test) ------------------------

# README "Parameter counts at 201x201 and latent 512" (`python -m ae_models 201x201 --latent 512`), and the
# verdict each gets against the seed's "~500K ... ~128M" within 30%: literals, so a change to the models,
# to the counting or to the verdict rule shows up here.
README_PARAMETERS = {  # preset: (transformer, transformer-flat, cnn)
    "tiny": (597_768, 47_985_617, 660_241),
    "small": (1_985_296, 47_985_617, 1_054_849),
    "medium": (7_131_936, 47_985_617, 2_623_201),
    "large": (26_911_552, 47_985_617, 8_876_449),
    "xlarge": (104_416_128, 47_985_617, 33_849_121),
}
README_VERDICTS = {"transformer": "holds", "transformer-flat": "does not hold"}  # every preset


def test_the_readme_states_the_parameter_figures_asserted_here():
    readme = (REPO / "README.md").read_text()
    for preset, counts in README_PARAMETERS.items():
        assert f"| {preset} | " + " | ".join(f"{n:,}" for n in counts) + " |" in readme, preset
    assert "902,053,888 parameters" in readme


@pytest.mark.parametrize("preset", list(README_PARAMETERS))
def test_parameter_counts_are_the_readmes_exact_figures(preset):
    for family, expected in zip(("transformer", "transformer-flat", "cnn"), README_PARAMETERS[preset]):
        assert model_probe.parameter_count(family, preset, "201x201", 512) == expected, (family, preset)


def test_the_ae_models_command_prints_the_readmes_table():
    done = subprocess.run([sys.executable, "-m", "ae_models", "201x201", "--latent", "512"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for preset, counts in README_PARAMETERS.items():
        assert f"| {preset} | " + " | ".join(f"{n:,}" for n in counts) + " |" in done.stdout, preset


def test_the_reports_parameter_claims_hold_the_readmes_figures_and_fixed_verdicts(report_dir):
    table = pd.read_csv(report_dir / "claims.csv").set_index("claim")
    for preset, counts in README_PARAMETERS.items():
        for family, expected in zip(("transformer", "transformer-flat"), counts):
            claim = table.loc[f"{preset}: parameters ({family})"]
            assert claim["measured_value"] == expected, (preset, family)
            assert claim["verdict"] == README_VERDICTS[family], (preset, family)
    flat = table[table.index.str.startswith("parameters of the seed's layout")].iloc[0]
    assert flat["measured_value"] == 902_053_888  # README: at 1280x152 and latent 2048


# -- the first screen: the plan joined to the run's speeds ------------------------------------------

@pytest.fixture(scope="session")
def answered(run_dir, tmp_path_factory) -> Path:
    """A copy of the run with the plan a run writes at its end (bench/plan/partial.py, predicted for an RTX 4060)."""
    from bench.plan.partial import write_answer_plan

    folder = tmp_path_factory.mktemp("answered") / run_dir.name
    shutil.copytree(run_dir, folder)
    facts = device_facts(torch.device("cpu"))
    cases = expand(parse_matrix(MATRIX, name="report-test"), device=facts)
    selection = Selection(torch.device("cpu"), facts, parse_matrix(MATRIX, name="report-test"), cases, Settings())
    write_answer_plan(selection, folder, load_run(folder).rows.to_dict("records"), "rtx4060")
    write_report(folder)
    return folder


def test_the_answer_is_the_card_models_fastest_configuration_the_plan_fits(answered):
    """Each group's pick is the card model's fastest of the configurations the plan fits, at the batch shown
    (the run is on a CPU, so its own measured order decides nothing)."""
    from bench.runs.contract import config_key
    from bench.trackers.card_model import card_for_target, images_per_s

    plan = pd.read_csv(answered / "plan.csv")
    chosen = pd.read_csv(answered / "answer.csv")
    rows = load_run(answered).rows
    card = card_for_target(plan["target"].iloc[0])
    ok = rows[rows["status"] == "ok"].assign(config_key=lambda f: f["case_key"].map(config_key))
    fits = plan[(plan["status"] == "ok") & (plan["max_batch"] >= 1)].set_index("config_key")
    assert not chosen.empty and card is not None
    for _, pick in chosen.iterrows():
        mine = fits.loc[pick["config_key"]]
        assert pick["batch"] <= mine["recommended_batch"] and pick["max_batch"] <= mine["max_batch"]
        assert pick["memory_from"] == "predicted (memory model)" and pick["chosen_by"].startswith("card model")
        assert pick["headroom_mib"] == pytest.approx(mine["budget_mib"] - pick["card_mib"]) and pick["headroom_mib"] > 0

        def predicted(key: str, batch: int) -> float:  # the card model at the batch shown, from the plan's tensors
            runs = ok[ok["config_key"] == key]
            tensors = fits.loc[key, "fixed_mib"] + fits.loc[key, "per_image_mib"] * batch
            return images_per_s(card, runs["precision"].iloc[0], runs["gflop_per_image"].median(), tensors, batch)

        assert pick["speed"] == pytest.approx(predicted(pick["config_key"], pick["batch"]))
        # the plan tried the group's configurations in the card model's order: none it fits ranks above the pick
        group = ok[(ok["size"] == pick["size"]) & (ok["mode"] == pick["mode"]) & (ok["family"] == pick["family"])]
        for key in set(group["config_key"]) & set(fits.index) - {pick["config_key"]}:
            assert predicted(key, pick["batch"]) <= pick["speed"] * (1 + 1e-9) or "ckpt" in key, key


def test_the_first_screen_names_the_card_and_says_its_speeds_are_predicted_on_it(answered):
    text = section((answered / "report.md").read_text(), "## 1. What to run on")
    assert text.startswith("## 1. What to run on NVIDIA GeForce RTX 4060 (8.00 GiB)")
    assert "**speeds are predicted on the NVIDIA GeForce RTX 4060** by the card model" in text
    assert "| 201x201 | infer | cnn tiny, latent " in text and "| 201x201 | train | transformer tiny, latent 128 |" in text
    assert "[plan.md](plan.md)" in text and "A partial plan" in (answered / "plan.md").read_text()
    assert "**This run covers** families transformer, cnn; presets tiny; latents 128; sizes 201x201" in text
    report = (answered / "report.md").read_text()
    assert "**The order measured on this CPU** (the host's ranking" in section(report, "## 3. Trade-offs")
    assert "Spearman rank correlation" in section(report, "## 2. How sure are we")


def test_a_resumed_runs_first_screen_covers_every_group_the_run_measured(run_dir, tmp_path):
    """The process that resumes a run measured one case; the plan (and so the first screen) still covers every
    (model, size, mode) group of the run's folder, and meta.json says the run was resumed."""
    from types import SimpleNamespace

    from bench.core.resume import record_resume
    from bench.plan.partial import plan_for_run

    folder = tmp_path / run_dir.name
    shutil.copytree(run_dir, folder)
    rows = load_run(folder).rows
    ok = rows[(rows["status"] == "ok") & rows["mode"].isin(["train", "infer"])]
    last = ok.iloc[[-1]].to_dict("records")  # all that the resuming process measured
    facts = device_facts(torch.device("cpu"))
    cases = expand(parse_matrix(MATRIX, name="report-test"), device=facts)
    selection = Selection(torch.device("cpu"), facts, parse_matrix(MATRIX, name="report-test"), cases, Settings())
    record_resume(folder, ["python", "-m", "bench", "run", "--resume", str(folder)], len(rows) - 1, 1)
    assert plan_for_run(SimpleNamespace(run_dir=folder, rows=last), selection, "rtx4060")[0].startswith("batch-size plan")
    write_report(folder)
    answered_groups = set(map(tuple, pd.read_csv(folder / "answer.csv")[["family", "size", "mode"]].values.tolist()))
    assert answered_groups == set(map(tuple, ok[["family", "size", "mode"]].values.tolist()))
    (resume,) = json.loads((folder / "meta.json").read_text())["resumes"]
    assert resume["cases_done_before"] == len(rows) - 1 and "--resume" in resume["command"]


def test_bad_plan_for_is_one_line_naming_the_option(capsys):
    assert cli.main(["run", "--matrix", "smoke", "--plan-for", "rtx9999", "--results", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ae-bench: error: --plan-for: unknown") and "rtx9999" in err[0]


# What a user reads before scrolling: the title down to the first figure (the answer's table and its notes).
# A laptop's browser at default zoom shows ~40 lines (a ~900 px viewport at ~22 px a line); table rows count one
# line each, prose wraps at 120 characters. The limit is on this screen, not on the file: the sections below it
# are reference, read by heading, and grow with what the run measured.
FIRST_SCREEN_LINES = 40
MAX_TABLE_ROWS = 20  # a markdown table longer than a screen is a CSV's job (the report links the CSVs)


def first_screen_lines(markdown: str) -> int:
    screen = markdown[: markdown.index("\n![")]  # up to the first figure ...
    screen = screen[: screen.rindex("\n\n**")]  # ... and its caption
    return sum(1 if line.startswith("|") else math.ceil(len(line) / 120) for line in screen.splitlines() if line.strip())


def table_lengths(markdown: str) -> list[int]:
    """Rows of each markdown table (its header and rule left out)."""
    runs, current = [], 0
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current += 1
        elif current:
            runs.append(current - 2)
            current = 0
    return runs


def test_the_committed_reference_report_opens_with_the_answer_for_an_8_gib_rtx_4060():
    """The acceptance of the report's first screen, on the committed reference run (its files only)."""
    markdown = (REFERENCE_RUN / "report.md").read_text()
    assert first_screen_lines(markdown) <= FIRST_SCREEN_LINES, "the answer must fit the first screen; notes go below it"
    assert max(table_lengths(markdown)) <= MAX_TABLE_ROWS, "long tables go to CSVs"
    first = section(markdown, "## 1. What to run on")
    assert first.startswith("## 1. What to run on NVIDIA GeForce RTX 4060 (8.00 GiB)")
    for size in ("201x201", "1280x152"):
        for mode in ("infer", "train"):
            for family in ("transformer", "cnn"):
                assert re.search(rf"^\| {size} \| {mode} \| {family} tiny, latent \d+ \|", first, re.M), (size, mode, family)
    assert "| speed predicted on NVIDIA GeForce RTX 4060 (images/s, roofline bound) |" in first
    assert "**speeds are predicted on the NVIDIA GeForce RTX 4060** by the card model" in first
    assert "memory predicted (memory model)" in first
    assert "**This run covers** families transformer, cnn; presets tiny; latents 128; sizes 201x201, 640x152, 1280x152" in first
    # no kernel or precision chosen by the CPU's speed: every pick is the card model's, and where this CPU's own
    # fastest differs (section 3 says "no"), the first screen does not show the CPU's choice
    answer_csv = pd.read_csv(REFERENCE_RUN / "answer.csv")
    assert (answer_csv["chosen_by"].str.startswith("card model")).all()
    host = section(markdown, "## 3. Trade-offs")
    assert "**The order measured on this CPU** (the host's ranking, not the card's)" in host
    assert "Spearman rank correlation" in section(markdown, "## 2. How sure are we")


def test_a_quality_run_beside_the_run_joins_its_report_and_a_wrong_with_is_one_line(run_dir, tmp_path):
    folder = tmp_path / "results" / run_dir.name
    shutil.copytree(run_dir, folder)
    meta = json.loads((folder / "meta.json").read_text())
    quality = tmp_path / "results" / "quality-here"
    quality.mkdir()
    (quality / "quality_meta.json").write_text(json.dumps({"commit": meta["commit"], "device": meta["device"]}))
    (quality / "quality.md").write_text("# quality\n")
    (quality / "quality_verdicts.csv").write_text("claim,size,verdict,reason,transformer_case\n"
                                                  "a claim,201x201,not judged,models did not learn,t-case\n")
    text = section(write_report(folder).read_text(), "## 6. Reconstruction quality")
    assert "[../quality-here/quality.md](../quality-here/quality.md) (beside the run: same commit and device)" in text
    assert "| a claim | 201x201 | t-case | not judged | models did not learn |" in text
    other = dict(meta, commit="0000000")
    (quality / "quality_meta.json").write_text(json.dumps({"commit": other["commit"], "device": meta["device"]}))
    assert "quality-here" not in section(write_report(folder).read_text(), "## 6. Reconstruction quality")
    with pytest.raises(ValueError, match="--with .*: not a plan"):
        write_report(folder, with_dirs=(tmp_path,))
