"""The regression check: ``python -m bench compare BASELINE CANDIDATE``.

Matches the two runs' cases by ``case_key`` and, for each, judges the change in median time
(bootstrap interval of the ratio of medians, ``bench/compare/stats.py``) and in peak memory.
Exit status: 1 when a case is slower or uses more memory beyond its threshold (or broke: ok in
the baseline, oom/error/unsupported in the candidate; or is missing: in the baseline, not in the
candidate, unless ``--allow-missing``); else 4 (inconclusive) when fewer than ``--min-judged`` of the
cases ok in both runs got a time verdict (``same``, ``faster``, ``slower``; ``noisy`` and ``bimodal``
say nothing), unless ``--allow-inconclusive``; 0 otherwise; 2 for unusable input.

Memory is checked on the CUDA allocator's reserved peak, else NVML's per-process peak: both are
figures of this case alone. The CPU figure, peak RSS, is the whole process's high-water mark (the
Python interpreter, torch's libraries, and every case measured before this one in the same
process: 245 MiB for a case run first, 331 MiB for the same case run later), so it is shown and
not judged unless ``--check-rss`` asks for it.

Baselines are kept per GPU model and torch version: ``python -m bench baseline RUN`` copies a run
into ``baselines/<device-slug>-torch<version>/``, and ``compare baselines/ CANDIDATE`` picks the
folder of the candidate's machine.

Here: the per-case verdicts and the result (text, markdown, JSON). The thresholds and their TOML
config are in ``rules.py``, opening the two runs and their machine facts in ``sides.py``, the
baseline store in ``baseline.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from bench.compare import stats as st
from bench.compare.rules import Rules
from bench.compare.sides import Side, number
from bench.core.commandline import EXIT_FAILED, EXIT_INCONCLUSIVE, EXIT_OK
from bench.runs.markdown import markdown_table

# first present in both runs wins; the allocator's reserved peak is what decides whether a batch fits
MEMORY_COLUMNS = ("reserved_peak_mib", "nvml_process_peak_mib", "rss_peak_mib")
WHOLE_PROCESS_COLUMNS = ("rss_peak_mib",)
NORMALIZE_KEY = "gemm_ms"  # compute-bound, so it follows the SM/core clock that drift changes
DRIFT_NOTE = 0.05          # a calibration that moved more than this gets a note suggesting --normalize
MARKDOWN_ROWS = 60         # a pull-request comment stays readable (and under GitHub's 65536 characters)

# how bad a case's outcome is, for "worst first": failures, then what needs a look, then the rest
_RANK = {"broken": 0, "slower": 1, "grew": 2, "noisy": 3, "bimodal": 3, "missing": 4, "new": 5, "fixed": 5, "faster": 6,
         "shrank": 6, "same": 7, "ignored": 8, "skipped": 8}


@dataclass
class CaseResult:
    """One case's outcome. ``outcome``: compared, broken, fixed, skipped, missing, new or ignored."""

    case_key: str
    case_id: str
    outcome: str
    time: Optional[st.TimeChange] = None
    memory: Optional[st.MemoryChange] = None
    note: str = ""
    fails: bool = False

    @property
    def verdict(self) -> str:
        """The headline: the worst of the time and memory verdicts, or the outcome."""
        if self.outcome != "compared":
            return self.outcome
        verdicts = [self.time.verdict if self.time else "same"]
        if self.memory and self.memory.verdict in ("grew", "shrank"):
            verdicts.append(self.memory.verdict)
        return min(verdicts, key=lambda v: _RANK[v])

    def sort_key(self) -> tuple:
        ratio = self.time.ratio if self.time and math.isfinite(self.time.ratio) else 1.0
        mem = self.memory.ratio if self.memory and self.memory.ratio else 1.0
        return (not self.fails, _RANK[self.verdict], -max(ratio, mem), self.case_id)

    def as_dict(self) -> dict:
        return {"case_key": self.case_key, "case_id": self.case_id, "verdict": self.verdict, "outcome": self.outcome,
                "fails": self.fails, "note": self.note, "time": self.time.as_dict() if self.time else None,
                "memory": self.memory.as_dict() if self.memory else None}


@dataclass
class Comparison:
    baseline: Side
    candidate: Side
    cases: list[CaseResult]
    settings: dict[str, Any]
    notes: list[str]

    def judged(self) -> tuple[int, int]:
        """(judged, compared): of the cases ok in both runs, how many got a time verdict that says something."""
        compared = [c for c in self.cases if c.outcome == "compared"]
        return sum(c.time is not None and c.time.verdict in st.JUDGED_VERDICTS for c in compared), len(compared)

    @property
    def inconclusive(self) -> bool:
        """No case fails, and fewer than the ``min_judged`` share of the compared cases (or none) could be judged."""
        judged, compared = self.judged()
        return not any(c.fails for c in self.cases) and (compared == 0 or
                                                         judged < self.settings.get("min_judged", st.MIN_JUDGED) * compared)

    @property
    def exit_status(self) -> int:
        if any(c.fails for c in self.cases):
            return EXIT_FAILED
        return EXIT_INCONCLUSIVE if self.inconclusive and not self.settings.get("allow_inconclusive") else EXIT_OK

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for case in self.cases:
            out[case.verdict] = out.get(case.verdict, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: _RANK[kv[0]]))

    def headline(self) -> str:
        failing = [c for c in self.cases if c.fails]
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items())
        if failing:
            return f"FAIL: {len(failing)} of {len(self.cases)} cases regressed ({counts})"
        if self.inconclusive:
            judged, compared = self.judged()
            allowed = " (allowed: --allow-inconclusive)" if self.settings.get("allow_inconclusive") else ""
            return (f"INCONCLUSIVE{allowed}: {judged} of {compared} compared cases could be judged, fewer than "
                    f"{self.settings.get('min_judged', st.MIN_JUDGED):.0%} ({counts}); rerun on a quieter machine")
        return f"PASS: no regression in {len(self.cases)} cases ({counts})"

    def as_json(self) -> dict:
        status = "fail" if self.exit_status == EXIT_FAILED else "inconclusive" if self.inconclusive else "pass"
        return {"status": status, "exit_status": self.exit_status,
                "headline": self.headline(), "counts": self.counts(), "settings": self.settings, "notes": self.notes,
                "baseline": self.baseline.describe(), "candidate": self.candidate.describe(),
                "cases": [c.as_dict() for c in self.cases]}

    def markdown(self, limit: int = MARKDOWN_ROWS) -> str:
        s = self.settings
        b, c = self.baseline, self.candidate
        lines = [f"### ae-bench regression check: {self.headline()}", "",
                 markdown_table(["", "baseline", "candidate"], [
                     ["run", f"`{b.path}` ({b.kind})", f"`{c.path}` ({c.kind})"],
                     ["device", b.device_name, c.device_name],
                     ["torch", b.torch, c.torch],
                     ["commit", b.commit or "?", c.commit or "?"],
                     ["calibration GEMM", _ms(b.calibration.get(NORMALIZE_KEY)), _ms(c.calibration.get(NORMALIZE_KEY))]]),
                 "",
                 f"Time fails a case when the {s['confidence']:.0%} bootstrap interval of its ratio of medians lies "
                 f"entirely above +{s['time_threshold']:.0%} ({s['resamples']} resamples, seed {s['seed']}; per-group "
                 f"thresholds may differ); `noisy` when the interval reaches across the threshold or a run's IQR exceeds "
                 f"{s['max_spread']:.0%} of its median. Memory fails when `{'`, `'.join(s['memory_columns'])}` grows more "
                 f"than {s['memory_threshold']:.0%} and {s['memory_floor_mib']:g} MiB."
                 + (f" Candidate times divided by the calibration GEMM ratio {s['normalize_factor']:.3f}."
                    if s.get("normalize_factor") else ""), ""]
        lines += [f"> {note}" for note in self.notes]
        if self.notes:
            lines.append("")
        cells = [_markdown_cells(case) for case in self.cases[:limit]]
        if len(self.cases) > limit:
            rest: dict[str, int] = {}
            for case in self.cases[limit:]:
                rest[case.verdict] = rest.get(case.verdict, 0) + 1
            cells.append([f"... {len(self.cases) - limit} more: " + ", ".join(f"{n} {v}" for v, n in rest.items())
                          + " (all cases in the JSON report)", "", "", "", "", ""])
        lines.append(markdown_table(["case", "verdict", "median ms (base -> cand)", "time change (interval)",
                                     "peak MiB (base -> cand)", "note"], cells))
        return "\n".join(lines) + "\n"


def _markdown_cells(case: CaseResult) -> list[str]:
    verdict = f"**{case.verdict}**" if case.fails else case.verdict
    time_cells = ["", ""]
    if case.time is not None:
        t = case.time
        time_cells = [f"{_num(t.baseline_median_ms)} -> {_num(t.candidate_median_ms)}",
                      f"{st.percent_change(t.ratio)} ({st.percent_change(t.low)} .. {st.percent_change(t.high)})" if math.isfinite(t.low) else st.percent_change(t.ratio)]
    mem_cell = ""
    if case.memory is not None and case.memory.column:
        m = case.memory
        mem_cell = f"{_num(m.baseline_mib, 1)} -> {_num(m.candidate_mib, 1)}" + (" (rss, not checked)" if m.verdict == "unchecked" else "")
        if m.verdict in ("grew", "shrank"):
            mem_cell += f" **{m.verdict} {st.percent_change(m.ratio)}**" if m.verdict == "grew" else f" {m.verdict} {st.percent_change(m.ratio)}"
    note = case.note or (case.time.reason if case.time is not None and case.time.verdict == "noisy" else "")
    return [f"`{case.case_id}`", verdict, time_cells[0], time_cells[1], mem_cell, note]


def _num(value: Optional[float], decimals: Optional[int] = None) -> str:
    """A figure for the table: fixed ``decimals``, or about three significant digits."""
    if value is None or not math.isfinite(value):
        return "?"
    if decimals is None:
        decimals = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{decimals}f}"


def _ms(value: Any) -> str:
    value = number(value)
    return f"{value:.3f} ms" if value is not None else "none recorded"


def check_machines(baseline: Side, candidate: Side, allow: bool) -> list[str]:
    """Refuse runs from two GPU models or torch versions (ValueError), unless ``allow``; then a note."""
    notes = []
    for what, b, c in (("device", baseline.device_name, candidate.device_name), ("torch", baseline.torch, candidate.torch)):
        if not b or not c:
            missing = "baseline" if not b else "candidate"
            problem = f"cannot tell which {what} the {missing} ran on"
        elif b != c:
            problem = f"the runs are from different machines: {what} {b!r} (baseline) vs {c!r} (candidate)"
        else:
            continue
        if not allow:
            raise ValueError(f"{problem}; compare runs of one GPU model and torch version, "
                             "or pass --allow-different-machines")
        notes.append(f"{problem}; compared anyway (--allow-different-machines): differences may be the machine")
    return notes


def check_timers(baseline: Side, candidate: Side, common: list[str], allow: bool) -> list[str]:
    """Refuse (ValueError) cases timed by two different timers, unless ``allow``; then a note.

    Per-step synchronised wall clock (older pytest runs: ``sync-perf-counter``) and CUDA events
    differ by the launch and synchronisation overhead, most on launch-bound cases: a verdict between
    them would measure the timers. A run that did not record its timer gets a note.
    """
    def timer(side: Side, key: str) -> str:
        value = side.rows[key].get("timer")
        return "" if value is None or value != value else str(value).strip()  # NaN: not recorded

    ran = [k for k in common if baseline.rows[k].get("status") == "ok" and candidate.rows[k].get("status") == "ok"]
    differ = [k for k in ran if timer(baseline, k) and timer(candidate, k) and timer(baseline, k) != timer(candidate, k)]
    if differ:
        first = differ[0]
        problem = (f"the runs were timed by different timers: {timer(baseline, first)!r} (baseline) vs "
                   f"{timer(candidate, first)!r} (candidate) in {len(differ)} of {len(ran)} case(s), e.g. "
                   f"{candidate.rows[first].get('case_id') or first}")
        if not allow:
            raise ValueError(f"{problem}; compare runs of one timer, or pass --allow-different-timers")
        return [f"{problem}; compared anyway (--allow-different-timers): launch-bound cases differ by the timer alone"]
    unknown = [role for role, side in (("baseline", baseline), ("candidate", candidate)) if any(not timer(side, k) for k in ran)]
    if unknown:
        return [f"the {' and '.join(unknown)} did not record its timer for every case: cannot tell whether both runs were "
                "timed the same way"]
    return []


def memory_column(base: dict, cand: dict) -> Optional[str]:
    """The first of :data:`MEMORY_COLUMNS` that both rows have."""
    for column in MEMORY_COLUMNS:
        if number(base.get(column)) is not None and number(cand.get(column)) is not None:
            return column
    return None


def normalize_factor(baseline: Side, candidate: Side) -> float:
    """Candidate GEMM time / baseline GEMM time: how much slower the candidate's machine ran."""
    for run, role in ((baseline, "baseline"), (candidate, "candidate")):
        value = number(run.calibration.get(NORMALIZE_KEY))
        if value is None or value <= 0:
            raise ValueError(f"--normalize needs a calibration in both runs; the {role} {run.path} has no {NORMALIZE_KEY}")
    return float(candidate.calibration[NORMALIZE_KEY]) / float(baseline.calibration[NORMALIZE_KEY])


def compare_runs(baseline: Side, candidate: Side, rules: Optional[Rules] = None, *, normalize: bool = False,
                 allow_different_machines: bool = False, check_rss: bool = False, fail_on_noisy: bool = False,
                 confidence: float = st.CONFIDENCE, resamples: int = st.RESAMPLES, seed: int = st.SEED,
                 allow_different_timers: bool = False, allow_missing: bool = False, min_judged: float = st.MIN_JUDGED,
                 allow_inconclusive: bool = False) -> Comparison:
    """Judge every case of ``candidate`` against ``baseline``; cases worst first. A case of the baseline that
    the candidate lacks (dropped, renamed, a narrowed matrix) fails unless ``allow_missing``. Raises ValueError
    for runs that cannot be compared (other machine, other timer, nothing in common, no calibration)."""
    rules = rules or Rules()
    notes = check_machines(baseline, candidate, allow_different_machines)
    common = [k for k in candidate.rows if k in baseline.rows]
    if not common:
        raise ValueError(f"the runs have no case in common (matched by case_key): baseline {baseline.path} has "
                         f"{len(baseline.rows)} cases, candidate {candidate.path} {len(candidate.rows)}")
    notes += check_timers(baseline, candidate, common, allow_different_timers)
    factor = normalize_factor(baseline, candidate) if normalize else None
    if factor is None:
        b_gemm, c_gemm = number(baseline.calibration.get(NORMALIZE_KEY)), number(candidate.calibration.get(NORMALIZE_KEY))
        if b_gemm and c_gemm and abs(c_gemm / b_gemm - 1) > DRIFT_NOTE:
            notes.append(f"the calibration GEMM moved {st.percent_change(c_gemm / b_gemm)} between the runs: the machine itself "
                         "may have changed speed; --normalize divides that out")
    elif abs(factor - 1) > DRIFT_NOTE:
        notes.append(f"the calibration GEMM moved {st.percent_change(factor)} between the runs; candidate times divided by {factor:.3f}")
    threads = {baseline.rows[k].get("threads") for k in common} | {candidate.rows[k].get("threads") for k in common}
    if len({number(t) for t in threads if number(t) is not None}) > 1:
        notes.append("the runs used different torch thread counts (threads column)")

    cases = []
    for key in common:
        cases.append(_compare_case(key, baseline, candidate, rules, factor, check_rss, fail_on_noisy,
                                   confidence, resamples, seed))
    for key in baseline.rows:
        if key not in candidate.rows:
            case_id = str(baseline.rows[key].get("case_id") or key)
            ignored = rules.for_case(case_id, key).ignore
            cases.append(CaseResult(key, case_id, "missing", fails=not (allow_missing or ignored),
                                    note="in the baseline only: dropped, renamed or a narrowed matrix"
                                         + (" (ignored by the config)" if ignored else " (allowed: --allow-missing)"
                                            if allow_missing else "; --allow-missing to accept")))
    for key in candidate.rows:
        if key not in baseline.rows:
            cases.append(CaseResult(key, str(candidate.rows[key].get("case_id") or key), "new",
                                    note="in the candidate only: no baseline yet"))
    cases.sort(key=CaseResult.sort_key)
    settings = {"time_threshold": rules.default.time, "memory_threshold": rules.default.memory,
                "memory_floor_mib": rules.default.memory_floor_mib, "max_spread": rules.default.max_spread,
                "groups": [{"match": list(p), **o} for p, o in rules.groups], "confidence": confidence,
                "resamples": resamples, "seed": seed, "normalize_factor": factor, "check_rss": check_rss,
                "fail_on_noisy": fail_on_noisy, "allow_missing": allow_missing, "min_judged": min_judged,
                "allow_inconclusive": allow_inconclusive,
                "memory_columns": [c for c in MEMORY_COLUMNS if check_rss or c not in WHOLE_PROCESS_COLUMNS]}
    return Comparison(baseline, candidate, cases, settings, notes)


def _compare_case(key: str, baseline: Side, candidate: Side, rules: Rules, factor: Optional[float],
                  check_rss: bool, fail_on_noisy: bool, confidence: float, resamples: int, seed: int) -> CaseResult:
    base, cand = baseline.rows[key], candidate.rows[key]
    case_id = str(cand.get("case_id") or key)
    limits = rules.for_case(case_id, key)
    if limits.ignore:
        return CaseResult(key, case_id, "ignored", note="ignored by the config")
    b_ok, c_ok = base.get("status") == "ok", cand.get("status") == "ok"
    if not b_ok and not c_ok:
        return CaseResult(key, case_id, "skipped", note=f"{cand.get('status')} in both runs")
    if not c_ok:
        return CaseResult(key, case_id, "broken", fails=True,
                          note=f"ok in the baseline, {cand.get('status')} in the candidate: {cand.get('reason') or ''}".strip())
    if not b_ok:
        return CaseResult(key, case_id, "fixed", note=f"{base.get('status')} in the baseline, ok in the candidate")

    b_samples = baseline.samples_ms.get(key) or []
    c_samples = candidate.samples_ms.get(key) or []
    if factor:
        c_samples = [x / factor for x in c_samples]
    split = [f"the {name} run's process medians ({row.get('process_medians_ms')} ms) split" for name, row in
             (("baseline", base), ("candidate", cand)) if row.get("bimodal") in (True, "True")]
    time = st.compare_times(b_samples, c_samples, limits.time, confidence, resamples, seed, max_spread=limits.max_spread,
                            baseline_process=baseline.samples_process.get(key),
                            candidate_process=candidate.samples_process.get(key), bimodal="; ".join(split))
    if not b_samples or not c_samples:  # pytest JSON saved without samples: show the medians, judge nothing
        b_med, c_med = number(base.get("median_ms")), number(cand.get("median_ms"))
        if b_med and c_med:
            c_med = c_med / factor if factor else c_med
            time = replace(time, ratio=c_med / b_med, baseline_median_ms=b_med, candidate_median_ms=c_med)

    column = memory_column(base, cand)
    memory = st.compare_memory(number(base.get(column)) if column else None, number(cand.get(column)) if column else None,
                               column, limits.memory, limits.memory_floor_mib,
                               checked=check_rss or column not in WHOLE_PROCESS_COLUMNS)
    fails = time.verdict == "slower" or memory.verdict == "grew" or (fail_on_noisy and time.verdict == "noisy")
    return CaseResult(key, case_id, "compared", time, memory, fails=fails)


def finite_json(value: Any) -> Any:
    """NaN and infinities (a figure that could not be formed) as null: strict JSON for bots and jq."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value
