"""The regression check (``python -m bench compare``): verdicts on real runs of this CPU, the
statistics' edge cases on constructed samples, thresholds, reports, and every unusable input.

Real runs use one torch thread. On a shared 2-core machine two OpenMP threads wait on each
other at every barrier whenever another job takes a core (a 5 ms case was seen at 340 ms);
one thread slows down in proportion instead, which is the noise the check is meant to survive.
No test here asserts how two real runs of this machine compare in time (CI keeps one of its two
cores busy): that is measured by ``pytest bench --ae-selfcheck`` (bench/test_selfcheck.py), which
records the figures; here real runs are compared with themselves or with known changes of themselves.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from bench.compare import stats as st
from bench.core.cases import Case
from bench.cli import main
from bench.core.commandline import EXIT_INCONCLUSIVE
from bench.trackers.device import device_facts
from bench.core.measure import Settings, measure_case
from bench.runs.writer import RunWriter
from bench.runs.provenance import run_meta
from bench.runs.reader import load_run
from bench.runs.schema import empty_row

CPU = torch.device("cpu")
STABLE = Case(family="transformer", preset="tiny", size="201x201", attention="flash", mode="infer", batch=2)
# 30 timed iterations of ~5 ms: about 0.3 s a run with the memory pass and the FLOP count
SHORT = Settings(warmup=2, min_iters=30, max_iters=30, min_time_s=0.0, memory_iters=1)
GPU = {"type": "cuda", "name": "NVIDIA GeForce RTX 4070", "torch": "2.13.0+cu128", "slug": "nvidia-geforce-rtx-4070"}


# ------------------------------------------------------------------------------------ helpers


def compare(baseline: object, candidate: object, *options: object) -> tuple[int, dict]:
    """Run ``python -m bench compare`` in-process: the exit status, and the JSON report written
    beside the candidate (empty on exit 2)."""
    out = Path(str(candidate)).parent / "report.json"
    status = main(["compare", str(baseline), str(candidate), *map(str, options), "--json", str(out), "-q"])
    return status, json.loads(out.read_text()) if status in (0, 1, EXIT_INCONCLUSIVE) else {}


def case_of(report: dict, case_id: str) -> dict:
    return next(c for c in report["cases"] if c["case_id"] == case_id)


def write_run(folder: Path, cases: dict[str, dict], device: Optional[dict] = None,
              calibration: Optional[dict] = None) -> Path:
    """A results folder with one row per ``case_id -> {"samples_ms": [...], column: value, ...}``."""
    device = device or GPU
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"created": "2026-01-01T00:00:00+00:00", "commit": "abc1234", "matrix": "test", "command": "test",
            "device": device, "calibration": calibration if calibration is not None else {"gemm_ms": 10.0}}
    writer = RunWriter(folder, meta)
    for case_id, spec in cases.items():
        spec = dict(spec)
        samples = spec.pop("samples_ms", None)
        row = empty_row()
        row.update(case_key=f"key-{case_id}", case_id=case_id, status="ok", reason="", device=device["type"],
                   device_name=device["name"], torch=device["torch"], threads=2)
        if samples is not None:
            row["median_ms"] = float(np.median(samples))
        row.update(spec)
        writer.append(row, [s / 1e3 for s in samples] if samples is not None else None)
    return folder


def steady(median: float, n: int = 40, cv: float = 0.01, seed: int = 0) -> list[float]:
    """``n`` per-iteration times (ms) around ``median`` with a relative spread ``cv``."""
    return list(np.random.default_rng(seed).normal(median, median * cv, n))


# ---------------------------------------------------------------------------- real runs (CPU)


def _measure(case: Case, facts, folder: Path, key_of: Optional[Case] = None) -> tuple[Path, list[float]]:
    """Measure ``case`` into a results folder; ``key_of`` records it under another case's identity."""
    m = measure_case(case, CPU, facts, SHORT, folder.name)
    assert m.row["status"] == "ok", m.row["reason"]
    if key_of is not None:
        m.row.update(case_key=key_of.key, case_id=key_of.id, attention=key_of.attention)
    RunWriter(folder, run_meta(facts, "test", ["test"], calibration={})).append(m.row, m.samples_s)
    return folder, [s * 1e3 for s in m.samples_s]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, list[float]]:
    """One real run of a tiny case on this CPU (one thread) and its samples in ms."""
    facts = device_facts(CPU)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(STABLE, facts, tmp_path_factory.mktemp("real") / "run")
    finally:
        torch.set_num_threads(threads)


def _rescaled_copy(run: Path, folder: Path, factor: float) -> Path:
    """``run`` with every sample (and the median) multiplied by ``factor``: a known change, whatever the machine did."""
    rows = load_run(run).rows
    samples = {json.loads(line)["case_key"]: json.loads(line)["samples_ms"]
               for line in (run / "samples.jsonl").read_text().splitlines()}
    writer = RunWriter(folder, json.loads((run / "meta.json").read_text()))
    for row in rows.to_dict("records"):
        row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        row["median_ms"] = row["median_ms"] * factor
        writer.append(row, [s * factor / 1e3 for s in samples[row["case_key"]]])
    return folder


def test_a_real_run_against_itself_is_same_with_a_ratio_of_one(real_run):
    """Real runs of this CPU, without a timing assertion: the same samples on both sides (the run folder
    read twice) must be ``same`` at exactly 1.0. Run-to-run timing on this machine is measured, not
    asserted, by ``pytest bench --ae-selfcheck`` (bench/test_selfcheck.py): CI keeps a core busy."""
    run, _ = real_run
    status, report = compare(run, run)
    case = case_of(report, STABLE.id)
    # the interval is a bootstrap of each side: as wide as the run's own noise, so a run disturbed by
    # another job may be `noisy` against itself (then nothing was judged: inconclusive); never `slower` or `faster`,
    # never a failure
    assert (status, case["verdict"]) in ((0, "same"), (EXIT_INCONCLUSIVE, "noisy")), case["time"]["reason"]
    assert case["time"]["ratio"] == 1.0 and case["time"]["low"] <= 1.0 <= case["time"]["high"]


@pytest.mark.parametrize("factor, status, verdict", [(2.0, 1, "slower"), (0.5, 0, "faster")])
def test_a_real_run_slowed_by_a_known_factor_gets_that_verdict(real_run, tmp_path, factor, status, verdict):
    run, samples = real_run
    if st.spread(samples) > st.MAX_SPREAD:  # the real run itself was disturbed: its IQR alone makes it noisy
        verdict, status = "noisy", EXIT_INCONCLUSIVE  # its one case could not be judged
    got, report = compare(run, _rescaled_copy(run, tmp_path / "cand", factor))
    case = case_of(report, STABLE.id)
    assert (got, case["verdict"]) == (status, verdict), case["time"]["reason"]
    assert case["time"]["ratio"] == pytest.approx(factor)


# ------------------------------------------------------------------- statistics, constructed


def test_samples_that_are_not_finite_are_left_out_on_both_sides():
    """A NaN or inf sample (a timer that failed) is no time: dropped before the medians, counted out of n."""
    nan, inf = float("nan"), float("inf")
    change = st.compare_times([5.0] * 20 + [nan, inf], [5.0] * 20 + [nan, None])
    assert (change.verdict, change.ratio, change.n_baseline, change.n_candidate) == ("same", 1.0, 20, 20)


def test_identical_samples_are_same_with_a_zero_width_interval():
    change = st.compare_times([5.0] * 20, [5.0] * 20)
    assert (change.verdict, change.ratio, change.low, change.high) == ("same", 1.0, 1.0, 1.0)


def test_too_few_samples_are_noisy_even_for_a_doubling():
    change = st.compare_times([5.0, 5.1, 4.9], [10.0, 10.1, 9.9])
    assert change.verdict == "noisy" and "too few samples" in change.reason
    assert change.ratio == pytest.approx(2.0)


def test_a_constant_doubling_is_slower_and_its_reverse_faster():
    assert st.compare_times([5.0] * 10, [10.0] * 10).verdict == "slower"
    assert st.compare_times([10.0] * 10, [5.0] * 10).verdict == "faster"


def test_a_three_percent_change_within_a_ten_percent_threshold_is_same():
    change = st.compare_times(steady(10.0), steady(10.3, seed=1))
    assert change.verdict == "same" and change.ratio == pytest.approx(1.03, abs=0.01)
    assert change.low > 1.0  # significant, and still within the threshold: not a failure


def test_a_bimodal_noisy_candidate_is_noisy_not_slower():
    rng = np.random.default_rng(2)
    candidate = list(rng.normal(8.0, 0.1, 20)) + list(rng.normal(13.0, 0.1, 20))  # half fast, half slow
    change = st.compare_times(steady(10.0), candidate)
    assert change.verdict == "noisy" and change.low < 0.9 and change.high > 1.2  # the median flips between the modes


def test_a_run_slowed_as_a_whole_by_another_job_is_noisy_by_its_spread():
    disturbed = list(np.random.default_rng(3).uniform(6.5, 11.5, 40))  # 5 ms work, time-sliced with another job
    change = st.compare_times(steady(5.0), disturbed)
    assert change.low > 1.1  # the interval alone would call it slower
    assert change.verdict == "noisy" and "would be slower" in change.reason and "IQR" in change.reason


@pytest.mark.parametrize("ratio, low, high, verdict", [
    (1.30, 1.25, 1.35, "slower"),   # the whole interval beyond +10%
    (1.12, 1.05, 1.20, "noisy"),    # the ratio beyond, the interval across: cannot tell
    (1.05, 1.02, 1.08, "same"),     # significant but within the threshold
    (0.80, 0.75, 0.85, "faster"),
    (1.00, 0.85, 1.20, "noisy"),    # too wide
])
def test_the_verdict_is_where_the_interval_lies_against_the_threshold_band(ratio, low, high, verdict):
    assert st.time_verdict(ratio, low, high, 0.10)[0] == verdict


UP, DOWN = 1 + 0.10, 1 / (1 + 0.10)  # the band's edges, computed as the rule computes them


@pytest.mark.parametrize("ratio, low, high, verdict", [
    (1.20, UP, 1.30, "noisy"),      # an interval that touches +10% is not wholly above it
    (0.80, 0.70, DOWN, "noisy"),    # ... nor wholly below -9.1%
    (1.00, DOWN, UP, "same"),       # the band includes its edges
    (1.05, UP, UP, "same"),
    (0.95, DOWN, DOWN, "same"),
])
def test_the_band_edges_belong_to_same_never_to_a_change(ratio, low, high, verdict):
    assert st.time_verdict(ratio, low, high, 0.10)[0] == verdict


@pytest.mark.parametrize("ratio, low, high, reason", [
    (1.30, 1.25, 1.35, "median +30.0% (+25.0% .. +35.0%): slower by more than 10%"),
    (0.80, 0.75, 0.85, "median -20.0% (-25.0% .. -15.0%): faster by more than 9%"),
    (1.05, 1.02, 1.08, "median +5.0% (+2.0% .. +8.0%): within +-10%"),
    (1.00, 0.85, 1.20, "median +0.0% (-15.0% .. +20.0%): the interval reaches across +-10%, cannot tell"),
])
def test_the_verdicts_reason_states_the_median_and_its_interval(ratio, low, high, reason):
    assert st.time_verdict(ratio, low, high, 0.10)[1] == reason


def test_the_interval_is_reproducible_with_the_fixed_seed():
    base, cand = steady(10.0, cv=0.05), steady(11.0, cv=0.05, seed=1)
    assert st.median_ratio_interval(base, cand) == st.median_ratio_interval(base, cand)
    assert st.median_ratio_interval(base, cand, seed=1) != st.median_ratio_interval(base, cand)


def test_memory_verdicts_need_both_the_relative_threshold_and_the_floor():
    assert st.compare_memory(1000.0, 1100.0, "reserved_peak_mib").verdict == "grew"
    assert st.compare_memory(1000.0, 1040.0, "reserved_peak_mib").verdict == "same"   # under 5%
    assert st.compare_memory(10.0, 11.5, "reserved_peak_mib").verdict == "same"       # 15%, but 1.5 MiB: allocator rounding
    assert st.compare_memory(1000.0, 800.0, "reserved_peak_mib").verdict == "shrank"
    assert st.compare_memory(300.0, 400.0, "rss_peak_mib", checked=False).verdict == "unchecked"
    assert st.compare_memory(None, 400.0, None).verdict == "n/a"


# ---------------------------------------------------------------- the command, constructed runs


def test_memory_growth_fails_and_is_listed_before_unchanged_cases(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5), "reserved_peak_mib": 1000.0},
                                      "b": {"samples_ms": steady(5), "reserved_peak_mib": 1000.0}})
    cand = write_run(tmp_path / "c", {"a": {"samples_ms": steady(5, seed=1), "reserved_peak_mib": 1000.0},
                                      "b": {"samples_ms": steady(5, seed=1), "reserved_peak_mib": 1100.0}})
    status, report = compare(base, cand)
    assert status == 1
    assert [c["case_id"] for c in report["cases"]] == ["b", "a"]
    assert report["cases"][0]["verdict"] == "grew" and report["cases"][0]["memory"]["ratio"] == pytest.approx(1.1)


def test_memory_falls_back_to_nvml_and_whole_process_rss_is_judged_only_when_asked(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5), "nvml_process_peak_mib": 900.0},
                                      "r": {"samples_ms": steady(5), "rss_peak_mib": 300.0}})
    cand = write_run(tmp_path / "c", {"a": {"samples_ms": steady(5, seed=1), "nvml_process_peak_mib": 1000.0},
                                      "r": {"samples_ms": steady(5, seed=1), "rss_peak_mib": 400.0}})
    status, report = compare(base, cand)
    assert status == 1 and case_of(report, "a")["memory"]["column"] == "nvml_process_peak_mib"
    assert case_of(report, "r")["memory"]["verdict"] == "unchecked"
    status, report = compare(base, cand, "--check-rss")
    assert case_of(report, "r")["memory"]["verdict"] == "grew"


def test_a_case_that_ran_in_the_baseline_and_ooms_in_the_candidate_fails(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5)}})
    cand = write_run(tmp_path / "c", {"a": {"status": "oom", "reason": "CUDA out of memory"}})
    status, report = compare(base, cand)
    assert status == 1 and report["cases"][0]["verdict"] == "broken"
    assert report["cases"][0]["time"] is None  # strict JSON: nothing measured is null, never NaN
    json.loads((tmp_path / "report.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))


def test_normalize_divides_out_a_runner_whose_clock_drifted(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5)}}, calibration={"gemm_ms": 10.0})
    cand = write_run(tmp_path / "c", {"a": {"samples_ms": steady(6.5, seed=1)}}, calibration={"gemm_ms": 13.0})
    assert compare(base, cand)[0] == 1
    status, report = compare(base, cand, "--normalize")
    assert status == 0 and report["cases"][0]["verdict"] == "same"
    assert report["settings"]["normalize_factor"] == pytest.approx(1.3)


def test_a_config_file_sets_thresholds_per_group_by_case_id_pattern(tmp_path):
    base = write_run(tmp_path / "b", {"cnn-x-train": {"samples_ms": steady(5)}, "vit-x-train": {"samples_ms": steady(5)},
                                      "vit-x-infer": {"samples_ms": steady(5)}})
    cand = write_run(tmp_path / "c", {"cnn-x-train": {"samples_ms": steady(6.5)}, "vit-x-train": {"samples_ms": steady(6.5)},
                                      "vit-x-infer": {"samples_ms": steady(6.5)}})
    config = tmp_path / "thresholds.toml"
    config.write_text('[defaults]\ntime = "20%"\n\n[[group]]\nmatch = "cnn-*"\ntime = 0.5\n\n'
                      '[[group]]\nmatch = ["*-infer"]\nignore = true\n')
    status, report = compare(base, cand, "--config", config)
    assert status == 1
    assert {c["case_id"]: c["verdict"] for c in report["cases"]} == {
        "vit-x-train": "slower", "cnn-x-train": "same", "vit-x-infer": "ignored"}


def test_markdown_and_json_reports_are_written_worst_first(tmp_path, capsys):
    base = write_run(tmp_path / "b", {"fast": {"samples_ms": steady(5)}, "slow": {"samples_ms": steady(5)}})
    cand = write_run(tmp_path / "c", {"fast": {"samples_ms": steady(5, seed=1)}, "slow": {"samples_ms": steady(8)}})
    md, js = tmp_path / "out" / "report.md", tmp_path / "out" / "report.json"
    assert main(["compare", str(base), str(cand), "--markdown", str(md), "--json", str(js)]) == 1
    text = md.read_text()
    assert text.startswith("### ae-bench regression check: FAIL: 1 of 2 cases regressed")
    assert text.index("`slow` | **slower**") < text.index("`fast` | same")
    assert capsys.readouterr().out.strip() == text.strip()
    assert json.loads(js.read_text())["cases"][0]["case_id"] == "slow"


def test_a_pytest_benchmark_json_compares_with_a_results_folder(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5)}})
    extra = {"case_key": "key-a", "case_id": "a", "status": "ok", "device": "cuda", "device_name": GPU["name"],
             "torch": GPU["torch"], "median_ms": 5.0, "samples_ms": steady(5, seed=1)}
    saved = tmp_path / "0001_abc.json"
    saved.write_text(json.dumps({
        "machine_info": {"ae_bench": {"device": "cuda", "name": GPU["name"], "torch": GPU["torch"], "slug": GPU["slug"]}},
        "commit_info": {"id": "abc1234"}, "datetime": "2026-01-01T00:00:00", "benchmarks": [{"name": "test_speed[a]", "extra_info": extra}],
        "ae_bench": {"calibration": {"gemm_ms": 10.0}}}))
    status, report = compare(base, saved)
    assert status == 0 and report["cases"][0]["verdict"] == "same"
    assert report["candidate"]["kind"] == "pytest-benchmark"


def test_a_baseline_saved_per_machine_is_found_in_the_store(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"a": {"samples_ms": steady(5)}})
    assert main(["baseline", str(run), "--store", str(tmp_path / "baselines")]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == tmp_path / "baselines" / "nvidia-geforce-rtx-4070-torch2.13.0"
    assert (folder / "results.csv").is_file() and (folder / "samples.jsonl").is_file()
    other = write_run(tmp_path / "baselines" / "nvidia-h200-torch2.13.0", {"a": {"samples_ms": steady(50)}},
                      device={**GPU, "name": "NVIDIA H200", "slug": "nvidia-h200"})
    assert other.is_dir()
    cand = write_run(tmp_path / "cand", {"a": {"samples_ms": steady(5, seed=1)}})
    status, report = compare(tmp_path / "baselines", cand)
    assert status == 0 and report["baseline"]["path"] == str(folder)


# ------------------------------------------------------- cases in one run only, and their status across runs


def test_a_case_missing_from_the_candidate_fails_unless_allowed(tmp_path):
    """A pull request that drops or renames a case must not escape the check by it."""
    base = write_run(tmp_path / "b", {"kept": {"samples_ms": steady(5)}, "dropped": {"samples_ms": steady(5)}})
    cand = write_run(tmp_path / "c", {"kept": {"samples_ms": steady(5, seed=1)}})
    status, report = compare(base, cand)
    missing = case_of(report, "dropped")
    assert status == 1 and report["status"] == "fail"
    assert (missing["verdict"], missing["fails"], missing["time"]) == ("missing", True, None)
    assert "--allow-missing" in missing["note"] and report["cases"][0]["case_id"] == "dropped"  # failures first
    assert report["counts"] == {"missing": 1, "same": 1}
    status, report = compare(base, cand, "--allow-missing")
    assert status == 0 and case_of(report, "dropped")["verdict"] == "missing" and not case_of(report, "dropped")["fails"]
    assert report["settings"]["allow_missing"] is True


def test_a_missing_case_the_config_ignores_does_not_fail(tmp_path):
    base = write_run(tmp_path / "b", {"kept": {"samples_ms": steady(5)}, "old-x": {"samples_ms": steady(5)}})
    cand = write_run(tmp_path / "c", {"kept": {"samples_ms": steady(5, seed=1)}})
    config = tmp_path / "t.toml"
    config.write_text('[[group]]\nmatch = "old-*"\nignore = true\n')
    status, report = compare(base, cand, "--config", config)
    assert status == 0 and not case_of(report, "old-x")["fails"] and "ignored by the config" in case_of(report, "old-x")["note"]


def test_a_new_case_passes_and_is_listed(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5)}})
    cand = write_run(tmp_path / "c", {"a": {"samples_ms": steady(5, seed=1)}, "added": {"samples_ms": steady(50)}})
    status, report = compare(base, cand)
    added = case_of(report, "added")
    assert status == 0 and (added["verdict"], added["fails"], added["time"]) == ("new", False, None)
    assert "no baseline yet" in added["note"] and report["counts"] == {"new": 1, "same": 1}


def test_a_case_that_failed_in_the_baseline_and_runs_now_is_fixed_and_passes(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5)}, "f": {"status": "oom", "reason": "CUDA out of memory"}})
    cand = write_run(tmp_path / "c", {"a": {"samples_ms": steady(5, seed=1)}, "f": {"samples_ms": steady(500)}})
    status, report = compare(base, cand)
    fixed = case_of(report, "f")
    assert status == 0 and (fixed["verdict"], fixed["fails"], fixed["time"]) == ("fixed", False, None)
    assert fixed["note"] == "oom in the baseline, ok in the candidate"


def test_a_case_that_runs_in_neither_is_skipped_and_passes(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5)},
                                      "u": {"status": "unsupported", "reason": "fp16 on CPU"}})
    cand = write_run(tmp_path / "c", {"a": {"samples_ms": steady(5, seed=1)},
                                      "u": {"status": "unsupported", "reason": "fp16 on CPU"}})
    status, report = compare(base, cand)
    skipped = case_of(report, "u")
    assert status == 0 and (skipped["verdict"], skipped["fails"], skipped["time"]) == ("skipped", False, None)
    assert skipped["note"] == "unsupported in both runs"


def test_a_noisy_case_passes_unless_fail_on_noisy(tmp_path):
    rng = np.random.default_rng(2)
    bimodal = list(rng.normal(8.0, 0.1, 20)) + list(rng.normal(13.0, 0.1, 20))  # the median flips between the modes
    base = write_run(tmp_path / "b", {"n": {"samples_ms": steady(10.0)}, "a": {"samples_ms": steady(5)}})
    cand = write_run(tmp_path / "c", {"n": {"samples_ms": bimodal}, "a": {"samples_ms": steady(5, seed=1)}})
    status, report = compare(base, cand)
    assert status == 0 and case_of(report, "n")["verdict"] == "noisy" and not case_of(report, "n")["fails"]
    assert report["headline"].startswith("PASS")
    status, report = compare(base, cand, "--fail-on-noisy")
    noisy = case_of(report, "n")
    assert status == 1 and noisy["verdict"] == "noisy" and noisy["fails"]
    assert not case_of(report, "a")["fails"] and report["settings"]["fail_on_noisy"] is True


def _noisy_pair(folder: Path, n_cases: int, factor: float, judged: int = 0) -> tuple[Path, Path]:
    """BASE and SLOW: ``n_cases`` cases whose samples scatter widely (IQR ~40% of the median, a runner with other
    work), every sample of SLOW ``factor`` times BASE's; the first ``judged`` cases steady instead (1% spread)."""
    base, slow = {}, {}
    for i in range(n_cases):
        rng = np.random.default_rng(10 + i)
        samples = list(rng.lognormal(np.log(20.0), 0.01 if i < judged else 0.3, 60))
        base[f"c{i}"] = {"samples_ms": samples}
        slow[f"c{i}"] = {"samples_ms": [x * factor for x in samples]}
    return write_run(folder / "BASE", base), write_run(folder / "SLOW", slow)


def test_a_regression_on_a_noisy_runner_is_inconclusive_never_a_pass(tmp_path, capsys):
    """The issue's CI gate: every sample of SLOW 1.5x BASE's, but each run's spread too wide to support a change,
    so all 4 cases are `noisy`. That is not a pass: INCONCLUSIVE, its own exit status (4), unless allowed."""
    base, slow = _noisy_pair(tmp_path, 4, 1.5)
    status, report = compare(base, slow)
    assert (status, report["status"]) == (EXIT_INCONCLUSIVE, "inconclusive") and EXIT_INCONCLUSIVE not in (0, 1, 2, 3)
    assert report["counts"] == {"noisy": 4} and not any(c["fails"] for c in report["cases"])
    assert report["headline"].startswith("INCONCLUSIVE: 0 of 4 compared cases could be judged")
    assert "INCONCLUSIVE" in capsys.readouterr().out
    status, report = compare(base, slow, "--allow-inconclusive")
    assert status == 0 and report["headline"].startswith("INCONCLUSIVE (allowed: --allow-inconclusive)")


@pytest.mark.parametrize("n_cases, judged, status", [(2, 1, 0), (3, 1, EXIT_INCONCLUSIVE), (4, 2, 0), (4, 1, EXIT_INCONCLUSIVE)])
def test_the_judged_share_decides_between_pass_and_inconclusive(tmp_path, n_cases, judged, status):
    """At least half of the compared cases judged (the default --min-judged 50%) passes; fewer is inconclusive."""
    base, same = _noisy_pair(tmp_path, n_cases, 1.0, judged=judged)
    got, report = compare(base, same)
    assert sum(c["verdict"] == "same" for c in report["cases"]) == judged  # the steady ones: judged the same
    assert got == status and report["headline"].startswith("PASS" if status == 0 else "INCONCLUSIVE")


def test_min_judged_is_the_stated_share(tmp_path):
    base, same = _noisy_pair(tmp_path, 4, 1.0, judged=3)
    assert compare(base, same, "--min-judged", "75%")[0] == 0
    assert compare(base, same, "--min-judged", "0.8")[0] == EXIT_INCONCLUSIVE


def test_a_regression_fails_even_when_too_few_other_cases_were_judged(tmp_path):
    """Exit 1 before exit 4: one steady case 1.5x slower among three noisy ones is a regression."""
    base, slow = _noisy_pair(tmp_path, 4, 1.5, judged=1)
    status, report = compare(base, slow)
    assert status == 1 and report["status"] == "fail" and case_of(report, "c0")["verdict"] == "slower"


def test_a_comparison_with_no_case_ok_on_both_sides_is_inconclusive(tmp_path):
    base = write_run(tmp_path / "b", {"u": {"status": "unsupported", "reason": "fp16 on CPU"}})
    cand = write_run(tmp_path / "c", {"u": {"status": "unsupported", "reason": "fp16 on CPU"}})
    status, report = compare(base, cand)
    assert status == EXIT_INCONCLUSIVE and report["headline"].startswith("INCONCLUSIVE: 0 of 0")


# --------------------------------------------------------------------- unusable input: exit 2


def _runs(tmp_path: Path) -> tuple[Path, Path]:
    return (write_run(tmp_path / "b", {"a": {"samples_ms": steady(5)}}),
            write_run(tmp_path / "c", {"a": {"samples_ms": steady(5, seed=1)}}))


def _bad_schema(tmp_path: Path) -> list[str]:
    base, cand = _runs(tmp_path)
    csv = cand / "results.csv"
    csv.write_text("\n".join(",".join(line.split(",")[:10]) for line in csv.read_text().splitlines()) + "\n")
    return [str(base), str(cand)]


def _foreign_json(tmp_path: Path) -> list[str]:
    base, _ = _runs(tmp_path)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"machine_info": {}, "benchmarks": [{"name": "test_x", "extra_info": {}}]}))
    return [str(base), str(other)]


def _other_gpu(tmp_path: Path) -> list[str]:
    base, _ = _runs(tmp_path)
    cand = write_run(tmp_path / "h200", {"a": {"samples_ms": steady(5)}}, device={**GPU, "name": "NVIDIA H200"})
    return [str(base), str(cand)]


def _other_torch(tmp_path: Path) -> list[str]:
    base, _ = _runs(tmp_path)
    cand = write_run(tmp_path / "t", {"a": {"samples_ms": steady(5)}}, device={**GPU, "torch": "2.12.0+cu128"})
    return [str(base), str(cand)]


def _nothing_in_common(tmp_path: Path) -> list[str]:
    base, _ = _runs(tmp_path)
    return [str(base), str(write_run(tmp_path / "z", {"z": {"samples_ms": steady(5)}}))]


def _no_calibration(tmp_path: Path) -> list[str]:
    base, _ = _runs(tmp_path)
    return [str(base), str(write_run(tmp_path / "n", {"a": {"samples_ms": steady(5)}}, calibration={})), "--normalize"]


def _store_without_this_machine(tmp_path: Path) -> list[str]:
    write_run(tmp_path / "baselines" / "nvidia-h200-torch2.13.0", {"a": {"samples_ms": steady(5)}},
              device={**GPU, "name": "NVIDIA H200", "slug": "nvidia-h200"})
    return [str(tmp_path / "baselines"), str(_runs(tmp_path)[1])]


def _bad_config(tmp_path: Path) -> list[str]:
    config = tmp_path / "c.toml"
    config.write_text("[defaults]\ntime_limit = 0.1\n")
    return [*map(str, _runs(tmp_path)), "--config", str(config)]


@pytest.mark.parametrize("make, message", [
    (lambda t: [str(t / "nope"), str(t / "nope2")], "baseline .*nope does not exist"),
    (lambda t: [str(_runs(t)[0]), str(t / "c" / "samples.jsonl")], "candidate .* is neither a pytest-benchmark .json file nor a results folder"),
    (_bad_schema, "candidate: .*results.csv is not an ae-bench results.csv: its header lacks"),
    (_foreign_json, "candidate: .*other.json: none of its 1 benchmarks has an ae-bench row"),
    (_other_gpu, "different machines: device 'NVIDIA GeForce RTX 4070' \\(baseline\\) vs 'NVIDIA H200'.*--allow-different-machines"),
    (_other_torch, "different machines: torch '2.13.0\\+cu128' \\(baseline\\) vs '2.12.0\\+cu128'"),
    (_nothing_in_common, "no case in common"),
    (_no_calibration, "--normalize needs a calibration in both runs; the candidate .* has no gemm_ms"),
    (_store_without_this_machine, "store .* has no baseline for this machine, nvidia-geforce-rtx-4070-torch2.13.0 "
                                  "\\(it has nvidia-h200-torch2.13.0\\)"),
    (_bad_config, "unknown key\\(s\\) time_limit"),
    (lambda t: [*map(str, _runs(t)), "--time-threshold", "fast"], "bad --time-threshold 'fast'"),
    (lambda t: [*map(str, _runs(t)), "--min-judged", "150%"], "bad --min-judged '150%'.* up to 1"),
], ids=["missing", "not-a-run", "schema", "foreign-json", "other-gpu", "other-torch", "no-common-case",
        "no-calibration", "store-without-this-machine", "bad-config", "bad-threshold", "bad-min-judged"])
def test_unusable_input_exits_2_with_one_line(tmp_path, capsys, make, message):
    import re

    assert main(["compare", *make(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ae-bench: error: ")
    assert re.search(message, err[0]), err[0]


def test_different_machines_compare_when_allowed_with_a_note(tmp_path):
    base, cand = _other_gpu(tmp_path)
    status, report = compare(base, cand, "--allow-different-machines")
    assert status == 0 and "different machines" in report["notes"][0]


@pytest.mark.parametrize("command", ["compare", "baseline"])
def test_the_commands_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "[default: " in capsys.readouterr().out
