"""Verdicts a busy or bimodal machine cannot fool: several processes per case (``--processes``), the
hierarchical interval of ``compare``, the ``bimodal`` flag, and ``python -m bench ab`` (two git refs
measured alternately in one job). Statistics on fixed numbers; one real A/B of one small case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.compare import stats as st
from bench.compare.ab import MIN_ROUNDS, median_ranks, paired_change
from bench.core.child import known_fields
from bench.core.measure import Measurement, Settings
from bench.core.processes import is_bimodal, measure_processes

REPO = Path(__file__).resolve().parent.parent


def _row(status="ok"):
    return {"status": status, "case_key": "k", "reason": ""}


def _process(median_s: float, n: int = 9, jitter: float = 0.01):
    rng = np.random.default_rng(int(median_s * 1e6) % 1000)
    return Measurement(_row(), list(median_s * (1 + jitter * rng.standard_normal(n))))


# -- several processes per case -------------------------------------------------------------------

def test_processes_keep_every_sample_with_its_process_and_the_middle_row():
    made = iter([_process(0.010), _process(0.016), _process(0.011)])
    m = measure_processes(lambda: next(made), 3)
    assert m.row["processes"] == 3 and len(m.samples_s) == 27 and m.process_index == [0] * 9 + [1] * 9 + [2] * 9
    medians = [float(x) for x in m.row["process_medians_ms"].split()]
    assert medians == pytest.approx([10.0, 16.0, 11.0], rel=0.02)
    assert m.row["bimodal"] is True  # 60% apart, samples within a process 1%


def test_processes_that_agree_are_not_bimodal():
    made = iter([_process(0.010), _process(0.0101), _process(0.0099)])
    assert measure_processes(lambda: next(made), 3).row["bimodal"] is False


def test_a_failed_process_makes_the_row_and_says_which():
    made = iter([_process(0.010), Measurement({**_row("error"), "reason": "boom"}), _process(0.010)])
    m = measure_processes(lambda: next(made), 3)
    assert m.row["status"] == "error" and m.row["reason"] == "process 2 of 3: boom"


@pytest.mark.parametrize("medians, within, expected", [
    ([10, 16, 10.5], [0.01, 0.01, 0.01], True),    # two speeds, tight processes
    ([10, 16, 10.5], [0.30, 0.30, 0.30], False),   # processes as wide as the gap: noise, not two modes
    ([10, 10.5, 10.2], [0.001, 0.001, 0.001], False),  # under 10% apart
])
def test_bimodal_rule(medians, within, expected):
    assert is_bimodal(medians, within) is expected


@pytest.mark.parametrize("medians, within, expected", [
    ([10, 16], [0.01, 0.01], True),       # two processes are enough to see two speeds
    ([10], [0.01], False),                # one process: nothing to compare
    ([0.5, 0.8], [0.01, 0.01], True),     # sub-millisecond processes are judged like any other
    ([0.0, 16.0], [0.01, 0.01], False),   # a zero median (no time) is no speed, never a division
    ([10, 16], [], True),                 # no within-process spread known: the 10% gap alone decides
    ([10, 16], [0.2, 0.2], False),        # a gap of exactly 3x the within-process spread (0.6 = 3 x 0.2) is not beyond it
])
def test_bimodal_rule_at_its_edges(medians, within, expected):
    assert is_bimodal(medians, within) is expected


def test_processes_is_a_timing_setting_refused_when_bad():
    with pytest.raises(ValueError, match=r"\[timing\] processes = 0"):
        Settings.from_dict({"processes": 0})


# -- compare over processes -------------------------------------------------------------------------

def _two_speeds(fast: float, slow: float, layout: list[int], n: int = 20) -> tuple[list[float], list[int]]:
    rng = np.random.default_rng(sum(layout) + n)
    samples, process = [], []
    for p, mode in enumerate(layout):
        base = slow if mode else fast
        samples += list(base * (1 + 0.01 * rng.standard_normal(n)))
        process += [p] * n
    return samples, process


def test_a_build_to_build_difference_is_no_change_over_processes():
    """The same code builds fast or slow. One process per run: a fast build against a slow one is a
    confident "slower" (what two single-process runs conclude). Three processes per run (fast, fast,
    slow against slow, slow, fast): resampling processes first leaves it undecided."""
    one_base, _ = _two_speeds(10.0, 16.0, [0])
    one_cand, _ = _two_speeds(10.0, 16.0, [1])
    assert st.compare_times(one_base, one_cand).verdict == "slower"
    base, base_p = _two_speeds(10.0, 16.0, [0, 0, 1])
    cand, cand_p = _two_speeds(10.0, 16.0, [1, 1, 0])
    over = st.compare_times(base, cand, baseline_process=base_p, candidate_process=cand_p)
    assert over.verdict == "noisy" and over.low < 1.1 < over.high
    flagged = st.compare_times(base, cand, baseline_process=base_p, candidate_process=cand_p, bimodal="the medians split")
    assert flagged.verdict == "bimodal" and "the medians split" in flagged.reason


def test_a_bimodal_flag_turns_a_would_be_change_into_bimodal_and_leaves_same_alone():
    """A run flagged bimodal cannot support a change: a confident +30% over processes becomes `bimodal` (it does not
    fail); a change within the band stays `same` (the flag says nothing against it)."""
    base, base_p = _two_speeds(10.0, 10.0, [0, 0, 0])
    slow, slow_p = _two_speeds(13.0, 13.0, [0, 0, 0])
    flagged = st.compare_times(base, slow, baseline_process=base_p, candidate_process=slow_p, bimodal="split")
    assert flagged.verdict == "bimodal" and flagged.low > 1.1  # the interval alone would say slower
    same, same_p = _two_speeds(10.1, 10.1, [0, 0, 0])
    assert st.compare_times(base, same, baseline_process=base_p, candidate_process=same_p, bimodal="split").verdict == "same"


def test_a_real_change_survives_the_hierarchical_interval():
    base, base_p = _two_speeds(10.0, 10.0, [0, 0, 0])
    cand, cand_p = _two_speeds(13.0, 13.0, [0, 0, 0])
    change = st.compare_times(base, cand, baseline_process=base_p, candidate_process=cand_p)
    assert change.verdict == "slower" and change.low > 1.1


# -- A/B: paired rounds -----------------------------------------------------------------------------

def test_paired_rounds_cancel_drift_that_hits_both_sides():
    drift = [1.0, 1.4, 0.8, 1.2, 1.0, 1.3]  # the machine's speed, round by round
    a = [10 * d for d in drift]
    same = paired_change(a, [10 * d * 1.01 for d in drift], 0.10)
    assert same.verdict == "same"
    slower = paired_change(a, [12.5 * d for d in drift], 0.10)
    assert slower.verdict == "slower" and slower.ratio == pytest.approx(1.25)


def test_too_few_rounds_to_bound_the_median_is_noisy_even_for_a_doubling():
    assert MIN_ROUNDS == 6  # at 95%: 5 rounds' smallest-to-largest interval covers the median 93.75% of the time
    # what the refusal reports: 1 - 2 (1/2)^n, the smallest-to-largest interval's coverage of n rounds
    assert median_ranks(5) == (0, pytest.approx(1 - 2 / 32)) and median_ranks(3) == (0, pytest.approx(0.75))
    assert "covers it 94% of the time" in paired_change([10.0] * 5, [20.0] * 5, 0.10).reason


@pytest.mark.parametrize("n, confidence, k, coverage", [
    (4, 0.30, 2, 1 - 2 * 5 / 16),     # the innermost pair: k reaches n / 2 when the confidence is low
    (6, 0.50, 2, 1 - 2 * 7 / 64),
    (12, 0.95, 3, 1 - 2 * 79 / 4096),
    (20, 0.99, 4, 1 - 2 * 1351 / 2**20),  # P(Bin(20, 1/2) <= 3) = (1 + 20 + 190 + 1140) / 2^20
])
def test_median_ranks_takes_the_largest_k_whose_coverage_reaches_the_confidence(n, confidence, k, coverage):
    assert median_ranks(n, confidence) == (k, pytest.approx(coverage))
    five = paired_change([10.0] * 5, [20.0] * 5, 0.10)
    assert five.verdict == "noisy" and "at least 6 are needed" in five.reason
    assert paired_change([10.0] * 6, [20.0] * 6, 0.10).verdict == "slower"


def test_the_cnns_bimodal_speed_in_three_rounds_is_not_a_slowdown():
    """Measured (same commit on both sides, one core busy): the CNN's process medians at 640x152 were
    57.1, 61.3, 55.6 ms on A and 65.2, 83.2, 81.7 on B, B landing in its slow mode twice. A bootstrap of
    three rounds called that +36% `slower` (+14 .. +47%); three rounds cannot bound a median at 95%."""
    assert paired_change([57.09, 61.25, 55.60], [65.15, 83.15, 81.66], 0.10).verdict == "noisy"
    # six rounds, B slow in two of them: the interval reaches across the band
    six = paired_change([57.1, 61.3, 55.6, 58.0, 56.2, 60.1], [65.2, 83.2, 81.7, 58.4, 57.0, 61.0], 0.10)
    assert six.verdict == "noisy" and six.low < 1.10 < six.high


@pytest.mark.parametrize("n", [6, 9, 12])
def test_the_order_statistic_interval_covers_the_median_as_often_as_it_says(n):
    """Coverage counted over 20,000 draws of n ratios from a skewed, continuous distribution."""
    k, coverage = median_ranks(n)
    rng = np.random.default_rng(n)
    draws = np.sort(rng.lognormal(0.0, 0.3, (20_000, n)), axis=1)
    hit = (draws[:, k - 1] <= 1.0) & (1.0 <= draws[:, n - k])  # the lognormal(0, s) median is exactly 1
    assert coverage >= 0.95 and abs(hit.mean() - coverage) < 0.01


def test_paired_change_bounds_six_rounds_by_the_smallest_and_largest_ratio():
    """Six rounds at 95%: k = 1 (1 - 2/64 = 96.9%), so the interval is the smallest to the largest paired ratio.
    The tighter second-smallest to second-largest (78%) would call these ratios `slower`."""
    a = [10.0, 20.0, 5.0, 8.0, 12.0, 40.0]  # the machine's speed differs by round: only B / A matters
    ratios = [1.0, 1.12, 1.13, 1.15, 1.16, 1.3]
    change = paired_change(a, [x * r for x, r in zip(a, reversed(ratios))], 0.10)
    assert (change.low, change.high) == pytest.approx((1.0, 1.3))
    assert change.verdict == "noisy" and change.ratio == pytest.approx((1.13 + 1.15) / 2)


def test_paired_change_bounds_twelve_rounds_by_the_third_ratio_from_each_end():
    """Twelve rounds: P(Bin(12, 1/2) <= 2) = 79/4096, so k = 3 covers 96.1%; k = 4 would cover 85.4%."""
    ratios = [0.90, 1.01, 1.02, 1.12, 1.13, 1.14, 1.15, 1.16, 1.17, 1.19, 1.25, 1.40]
    change = paired_change([10.0] * 12, [10.0 * r for r in ratios], 0.10)
    assert (change.low, change.high) == pytest.approx((1.02, 1.19)) and change.verdict == "noisy"
    assert change.n_baseline == change.n_candidate == 12


@pytest.mark.parametrize("n", [6, 9])
def test_paired_change_covers_the_true_ratio_as_often_as_it_says(n):
    """The coverage simulation run through ``paired_change`` itself: 3000 draws of n rounds whose B / A ratios are
    lognormal around exactly 1.2; the printed interval must hold 1.2 at least 95% of the time (minus sampling error)."""
    rng = np.random.default_rng(100 + n)
    a = rng.uniform(5.0, 50.0, (3000, n))  # each round's own speed
    b = a * 1.2 * rng.lognormal(0.0, 0.2, (3000, n))
    hits = sum(c.low <= 1.2 <= c.high for c in (paired_change(list(x), list(y), 0.10) for x, y in zip(a, b)))
    assert hits / 3000 >= 0.95 - 3 * (0.05 * 0.95 / 3000) ** 0.5


def _ab_of(monkeypatch, b_over_a, **options):
    """``run_ab`` on two cases with a stand-in for the child launcher: A's process median is 10 ms every round,
    B's is ``b_over_a[batch][round]`` times that (the two cases: batch 1 and 2). Returns the Comparison."""
    from types import SimpleNamespace

    from bench.compare import ab
    from bench.compare.rules import Rules
    from bench.core.cases import Case

    class Launcher:
        def __init__(self, device, timeout_s, code_root):
            self.side = "A" if code_root == "a" else "B"
            self.rounds: dict[str, int] = {}

        def run(self, case, device, facts, settings, tag):
            r = self.rounds[case.key] = self.rounds.get(case.key, -1) + 1
            median_s = 0.010 * (b_over_a[case.batch][r] if self.side == "B" else 1.0)
            return Measurement({"status": "ok", "case_key": case.key, "reason": ""}, [median_s] * 5)

    monkeypatch.setattr(ab, "Subprocess", Launcher)
    cases = [Case(family="cnn", preset="tiny", size="201x201", mode="infer", batch=b) for b in (1, 2)]
    facts = SimpleNamespace(type="cpu", name="cpu", torch="2.13.0", slug="cpu")
    selection = SimpleNamespace(device="cpu", settings=None, facts=facts)
    return ab.run_ab(cases, selection, ("a", "b"), ("A", "B"), 6, Rules(), 60.0, **options)


def test_ab_whose_rounds_scatter_is_inconclusive_not_a_pass(monkeypatch):
    from bench.core.commandline import EXIT_INCONCLUSIVE

    scattered = [0.9, 1.0, 1.3, 1.4, 1.5, 1.6]  # a 1.35x median whose interval reaches across +10%: noisy
    result = _ab_of(monkeypatch, {1: scattered, 2: scattered})
    assert [c.verdict for c in result.cases] == ["noisy", "noisy"] and result.exit_status == EXIT_INCONCLUSIVE
    assert result.headline().startswith("INCONCLUSIVE: 0 of 2")
    assert _ab_of(monkeypatch, {1: scattered, 2: scattered}, allow_inconclusive=True).exit_status == 0
    steady = _ab_of(monkeypatch, {1: scattered, 2: [1.0] * 6})  # one of two judged: the default 50% met
    assert steady.exit_status == 0 and sorted(c.verdict for c in steady.cases) == ["noisy", "same"]
    assert _ab_of(monkeypatch, {1: scattered, 2: [1.0] * 6}, min_judged=0.6).exit_status == EXIT_INCONCLUSIVE


def test_a_child_of_an_older_checkout_drops_empty_new_fields_and_refuses_set_ones():
    from bench.core.cases import Case

    fields = Case(family="cnn", preset="tiny", size="201x201", mode="infer", batch=2).fields()
    assert known_fields(Case, {**fields, "from_the_future": None}) == fields
    with pytest.raises(SystemExit, match="from_the_future"):
        known_fields(Case, {**fields, "from_the_future": 3})


@pytest.mark.slow
def test_ab_of_one_commit_against_itself_runs_both_sides_alternately(tmp_path):
    """A real A/B: a scratch clone of this working tree, tag A, `ab A A` on one small case, 6 rounds."""
    from bench.selfcheck.regression import scratch_repo

    repo = scratch_repo(REPO, tmp_path)
    out = tmp_path / "ab.json"
    done = subprocess.run([sys.executable, "-m", "bench", "ab", "A", "A", "--matrix", "smoke", "--families", "cnn",
                           "--sizes", "201x201", "--modes", "infer", "--rounds", "6", "--min-time", "0.05", "--json", str(out)],
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1, 4), done.stderr[-2000:]  # 4: inconclusive (its one case noisy)
    report = json.loads(out.read_text())
    (case,) = report["cases"]
    assert case["case_id"] == "cnn-tiny-201x201-fp32-infer-b2" and case["outcome"] == "compared"
    assert case["time"]["n_baseline"] == 6 and "paired median of 6 rounds" in case["time"]["reason"]
    order = [line.split()[3] for line in done.stderr.splitlines() if line.startswith("[") and " round " in line]
    assert order == ["A", "B", "B", "A"] * 3  # ABBA
    expected = {"slower": 1, "noisy": 4, "bimodal": 4}.get(case["verdict"], 0)  # one case: its verdict decides
    assert done.returncode == expected, (done.returncode, case["verdict"])
    assert not (repo / ".git" / "worktrees").exists() or not any((repo / ".git" / "worktrees").iterdir())  # cleaned up


def test_ab_refuses_a_ref_that_names_no_commit(capsys):
    from bench import cli

    assert cli.main(["ab", "no-such-ref-anywhere", "--matrix", "smoke", "--families", "cnn", "--modes", "infer",
                     "--sizes", "201x201"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'no-such-ref-anywhere' is not a commit" in err[0]


def test_the_regression_checks_table_puts_each_verdict_under_its_own_case():
    """A comparison lists its cases worst first, so two repetitions list them in different orders."""
    from bench.selfcheck.regression import verdict_table

    reps = [{"rep": 1, "rc": 1, "wall_s": 60.0, "cases": {"b": ("slower", 0.3), "a": ("noisy", 0.2)}},
            {"rep": 2, "rc": 0, "wall_s": 120.0, "cases": {"a": ("same", 0.01), "b": ("noisy", 0.15)}}]
    header, _, one, two = verdict_table(reps)
    assert header == "| repetition | exit | wall | `a` | `b` |"
    assert one == "| 1 | 1 | 1.0 min | noisy (+20%) | slower (+30%) |"
    assert two == "| 2 | 0 | 2.0 min | same (+1%) | noisy (+15%) |"


# -- issue 35 item 1: ab never passes without measuring a side ------------------------------------------------------


def _ab_with_statuses(monkeypatch, statuses: dict[str, list[dict]]):
    """``run_ab`` of two cases whose side ``A``/``B`` measurements return the rows ``statuses[side][batch - 1]``."""
    from types import SimpleNamespace

    from bench.compare import ab
    from bench.compare.rules import Rules
    from bench.core.cases import Case

    class Launcher:
        def __init__(self, device, timeout_s, code_root):
            self.side = "A" if code_root == "a" else "B"

        def run(self, case, device, facts, settings, tag):
            row = {"case_key": case.key, "reason": "", **statuses[self.side][case.batch - 1]}
            return Measurement(row, [0.010] * 5 if row["status"] == "ok" else [])

    monkeypatch.setattr(ab, "Subprocess", Launcher)
    cases = [Case(family="cnn", preset="tiny", size="201x201", mode="infer", batch=b) for b in (1, 2)]
    facts = SimpleNamespace(type="cpu", name="cpu", torch="2.13.0", slug="cpu")
    return ab.run_ab(cases, SimpleNamespace(device="cpu", settings=None, facts=facts), ("a", "b"), ("A", "B"), 6,
                     Rules(), 60.0)


OK = {"status": "ok"}
TIMEOUT = {"status": "timeout", "reason": "no result after 60 s; child killed. Last output: (none)"}


def test_ab_whose_base_timed_out_is_not_fixed_and_never_a_pass(monkeypatch):
    """A timeout in A is no measurement of A: not 'fixed'. One case judged, the other A-timed-out: 1 of 1 compared
    (pass by its case); both A-timed-out: nothing compared, INCONCLUSIVE (4), never PASS."""
    from bench.core.commandline import EXIT_INCONCLUSIVE

    both = _ab_with_statuses(monkeypatch, {"A": [TIMEOUT, TIMEOUT], "B": [OK, OK]})
    assert [c.outcome for c in both.cases] == ["skipped", "skipped"] and "no measurement in A" in both.cases[0].note
    assert both.exit_status == EXIT_INCONCLUSIVE and not both.headline().startswith("PASS")
    harness = {"status": "error", "reason": "child exited with status 1 without a result. Last output: x"}
    assert _ab_with_statuses(monkeypatch, {"A": [harness, harness], "B": [OK, OK]}).exit_status == EXIT_INCONCLUSIVE
    own = {"status": "oom", "reason": "CUDA out of memory"}  # A's own verdict on its code: B fixed it
    assert [c.outcome for c in _ab_with_statuses(monkeypatch, {"A": [own, OK], "B": [OK, OK]}).cases][0] == "fixed"


def test_ab_where_both_sides_timed_out_is_inconclusive(monkeypatch):
    from bench.core.commandline import EXIT_INCONCLUSIVE

    result = _ab_with_statuses(monkeypatch, {"A": [TIMEOUT, TIMEOUT], "B": [TIMEOUT, TIMEOUT]})
    assert result.exit_status == EXIT_INCONCLUSIVE and result.headline().startswith("INCONCLUSIVE")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e300"])
def test_ab_refuses_a_case_timeout_that_measures_nothing(value, capsys):
    from bench import cli

    assert cli.main(["ab", "HEAD", "--case-timeout", value, "--matrix", "smoke", "--families", "cnn", "--modes",
                     "infer", "--sizes", "201x201"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--case-timeout" in err[0]


def _commit_tree(tmp_path, files: dict[str, str]) -> Path:
    root = tmp_path / "side"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_base_without_its_own_child_is_refused_in_one_line(tmp_path):
    """The repository's first commit had bench/ but no bench/core/: the editable install served today's child."""
    from bench.compare.ab import check_harness

    root = _commit_tree(tmp_path, {"bench/__init__.py": "", "ae_models/__init__.py": ""})
    with pytest.raises(ValueError, match="lacks its own harness|has no bench.core.child") as err:
        check_harness(root, "first (36ff112228)")
    assert "\n" not in str(err.value)


def test_a_base_whose_child_reads_its_case_from_stdin_is_refused(tmp_path):
    """39031ba's child read the case from stdin (protocol 1): the parent never writes it, every measurement hangs."""
    from bench.compare.ab import check_harness

    files = {"bench/__init__.py": "", "bench/core/__init__.py": "", "bench/core/measure.py": "",
             "bench/core/cases.py": "", "ae_models/__init__.py": "",
             "bench/core/child.py": "import sys, json\ndef main(argv):\n    return json.loads(sys.stdin.read())\n"}
    with pytest.raises(ValueError, match="protocol 1, this harness 2"):
        check_harness(_commit_tree(tmp_path, files), "39031ba")
    files["bench/core/child.py"] = "def watch_parent(folder):\n    pass\n"  # 4d39e09 .. today: the file protocol
    check_harness(_commit_tree(tmp_path / "ok", files), "4d39e09")
