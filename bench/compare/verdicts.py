"""The regression check: ``python -m bench compare BASELINE CANDIDATE``.

Matches the two runs' cases by ``case_key`` and, for each, judges the change in median time
(bootstrap interval of the ratio of medians, ``bench/compare/stats.py``) and in peak memory.
Exit status: 1 when a case is slower or uses more memory beyond its threshold (or broke: ok in
the baseline, oom/error/unsupported in the candidate), 0 otherwise, 2 for unusable input.

Memory is checked on the CUDA allocator's reserved peak, else NVML's per-process peak: both are
figures of this case alone. The CPU figure, peak RSS, is the whole process's high-water mark (the
Python interpreter, torch's libraries, and every case measured before this one in the same
process: 245 MiB for a case run first, 331 MiB for the same case run later), so it is shown and
not judged unless ``--check-rss`` asks for it.

Baselines are kept per GPU model and torch version: ``python -m bench baseline RUN`` copies a run
into ``baselines/<device-slug>-torch<version>/``, and ``compare baselines/ CANDIDATE`` picks the
folder of the candidate's machine.
"""

from __future__ import annotations

import fnmatch
import math
import shutil
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from bench.compare import stats as st
from bench.core.commandline import EXIT_FAILED, EXIT_OK
from bench.runs.writer import META_JSON, RESULTS_CSV, SAMPLES_JSONL
from bench.runs.reader import load_run

# first present in both runs wins; the allocator's reserved peak is what decides whether a batch fits
MEMORY_COLUMNS = ("reserved_peak_mib", "nvml_process_peak_mib", "rss_peak_mib")
WHOLE_PROCESS_COLUMNS = ("rss_peak_mib",)
NORMALIZE_KEY = "gemm_ms"  # compute-bound, so it follows the SM/core clock that drift changes
DRIFT_NOTE = 0.05          # a calibration that moved more than this gets a note suggesting --normalize
MARKDOWN_ROWS = 60         # a pull-request comment stays readable (and under GitHub's 65536 characters)

# how bad a case's outcome is, for "worst first": failures, then what needs a look, then the rest
_RANK = {"broken": 0, "slower": 1, "grew": 2, "noisy": 3, "missing": 4, "new": 5, "fixed": 5, "faster": 6,
         "shrank": 6, "same": 7, "ignored": 8, "skipped": 8}


@dataclass(frozen=True)
class Thresholds:
    """A case's limits: relative time and memory growth (fractions), the memory floor (MiB), and
    the within-run spread (IQR / median) above which a run's time cannot support a verdict."""

    time: float = st.TIME_THRESHOLD
    memory: float = st.MEMORY_THRESHOLD
    memory_floor_mib: float = st.MEMORY_FLOOR_MIB
    max_spread: float = st.MAX_SPREAD
    ignore: bool = False


_NUMERIC_KEYS = ("time", "memory", "memory_floor_mib", "max_spread")


@dataclass
class Rules:
    """Thresholds per case: the defaults, overridden by the first ``[[group]]`` whose pattern matches."""

    default: Thresholds = field(default_factory=Thresholds)
    groups: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)

    def for_case(self, case_id: str, case_key: str) -> Thresholds:
        for patterns, overrides in self.groups:
            if any(fnmatch.fnmatchcase(case_id, p) or fnmatch.fnmatchcase(case_key, p) for p in patterns):
                return replace(self.default, **overrides)
        return self.default


def load_rules(path: Optional[Path], cli: dict[str, Optional[float]]) -> Rules:
    """Thresholds from a TOML file (``[defaults]`` and ``[[group]]`` tables), then the command
    line's values over the defaults; groups still override both for their cases."""
    defaults: dict[str, Any] = {}
    groups: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"config {path} is not valid TOML: {err}") from None
        unknown = sorted(set(data) - {"defaults", "group"})
        if unknown:
            raise ValueError(f"config {path}: unknown table(s) {', '.join(unknown)}; expected [defaults] and [[group]]")
        defaults = _threshold_values(data.get("defaults", {}), f"config {path} [defaults]", allow=_NUMERIC_KEYS)
        raw_groups = data.get("group", [])
        if not isinstance(raw_groups, list):
            raise ValueError(f"config {path}: 'group' must be [[group]] tables")
        for i, group in enumerate(raw_groups, 1):
            where = f"config {path} group {i}"
            if not isinstance(group, dict) or "match" not in group:
                raise ValueError(f"{where}: needs match = \"pattern\" or a list of patterns (fnmatch on case id or key)")
            patterns = group["match"] if isinstance(group["match"], list) else [group["match"]]
            if not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise ValueError(f"{where}: match must be a non-empty string or list of strings")
            rest = {k: v for k, v in group.items() if k != "match"}
            groups.append((tuple(patterns), _threshold_values(rest, where, allow=_NUMERIC_KEYS + ("ignore",))))
    defaults.update({k: v for k, v in cli.items() if v is not None})
    return Rules(Thresholds(**defaults), groups)


def _threshold_values(table: Any, where: str, allow: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(allow))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allow)}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "ignore":
            if not isinstance(value, bool):
                raise ValueError(f"{where}: ignore must be true or false")
            out[key] = value
        else:
            out[key] = parse_fraction(value, f"{where} {key}") if key != "memory_floor_mib" else _non_negative(value, where)
    return out


def _non_negative(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where}: memory_floor_mib must be a number of MiB >= 0, got {value!r}")
    return float(value)


def parse_fraction(value: Any, what: str) -> float:
    """``"10%"``, ``10%``-style strings or fractions (``0.1``) -> 0.1; rejects the rest with one line."""
    text = str(value).strip()
    try:
        out = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"bad {what} {value!r}: expected a fraction such as 0.1 or a percentage such as 10%") from None
    if isinstance(value, bool) or not 0 < out < 10 or not math.isfinite(out):
        raise ValueError(f"bad {what} {value!r}: expected a fraction above 0 (0.1) or a percentage (10%)")
    return out


# ------------------------------------------------------------------------------------------ input


@dataclass
class Side:
    """One side of the comparison: a saved run's rows by ``case_key``, per-iteration samples (ms),
    and the machine facts the check needs (from ``meta.json`` or pytest-benchmark's machine_info)."""

    path: Path
    kind: str
    rows: dict[str, dict[str, Any]]
    samples_ms: dict[str, list[float]]
    device_type: str = ""
    device_name: str = ""
    torch: str = ""
    slug: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    commit: str = ""
    created: str = ""

    @property
    def machine_key(self) -> str:
        """``<device-slug>-torch<version>``: the baseline folder for runs of this machine."""
        return machine_key(self.slug, self.torch)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "device": self.device_name, "device_type": self.device_type,
                "torch": self.torch, "machine_key": self.machine_key, "commit": self.commit, "created": self.created,
                "calibration": self.calibration, "cases": len(self.rows)}


def machine_key(slug: str, torch_version: str) -> str:
    """The naming of pytest-benchmark's storage in ``bench/conftest.py``: the local build tag dropped."""
    return f"{slug or 'unknown'}-torch{(torch_version or 'unknown').split('+')[0]}"


def open_run(path: Path, role: str = "run", prefer: Optional[str] = None) -> Side:
    """Read the saved run ``path`` names (see :func:`find_run`) through :func:`bench.runs.reader.load_run`.

    ``role`` ("baseline", "candidate") names it in messages; ``prefer`` is a machine key to look
    for as a sub-folder first. Raises ValueError with one line for unusable input.
    """
    found = find_run(Path(path), role, prefer)
    try:
        saved = load_run(found)
    except ValueError as err:
        raise ValueError(f"{role}: {err}") from None
    records = saved.rows.astype(object).where(saved.rows.notna(), None).to_dict("records")
    rows = {str(r["case_key"]): r for r in records}  # a key written twice (a resumed run): the later row wins
    if not rows:
        raise ValueError(f"{role} {found} has no cases")
    device = saved.meta.get("device") or {}
    first = records[0]
    device_type = str(device.get("type") or first.get("device") or "")
    device_name = str(device.get("name") or first.get("device_name") or "")
    slug = str(device.get("slug") or "")
    if not slug and device_type == "cuda" and device_name:  # a GPU's slug is its name's; a CPU's needs its core count
        from bench.trackers.device import DeviceFacts

        slug = DeviceFacts(type="cuda", name=device_name).slug
    return Side(path=found, kind="results" if saved.kind.startswith("results") else "pytest-benchmark", rows=rows,
                samples_ms=dict(saved.samples_ms), device_type=device_type, device_name=device_name,
                torch=str(device.get("torch") or first.get("torch") or ""), slug=slug,
                calibration=dict(saved.meta.get("calibration") or {}), commit=str(saved.meta.get("commit") or ""),
                created=str(saved.meta.get("created") or ""))


def find_run(path: Path, role: str = "run", prefer: Optional[str] = None) -> Path:
    """The saved run a path names: a ``.json`` file, a results folder, a baseline store's folder
    for machine ``prefer``, or else the latest run under a folder, by name (run ids and
    pytest-benchmark's NNNN_ prefixes both sort in time order; file times do not survive a git
    checkout)."""
    if not path.exists():
        raise ValueError(f"{role} {path} does not exist")
    if path.is_file():
        if path.name == RESULTS_CSV:
            return path.parent
        if path.suffix != ".json":
            raise ValueError(f"{role} {path} is neither a pytest-benchmark .json file nor a results folder")
        return path
    if (path / RESULTS_CSV).is_file():
        return path
    if prefer and (path / prefer).is_dir():
        return find_run(path / prefer, role)
    stored = sorted(p.name for p in path.iterdir() if p.is_dir() and "-torch" in p.name)
    if prefer and stored:  # a baseline store without this machine: another machine's run is no baseline
        raise ValueError(f"{role} store {path} has no baseline for this machine, {prefer} (it has {', '.join(stored)}); "
                         f"keep one with `python -m bench baseline RUN --store {path}`")
    runs = [p.parent for p in path.rglob(RESULTS_CSV)]
    inside = set(runs)
    runs += [p for p in path.rglob("*.json") if not inside.intersection(p.parents)]  # a run folder's own JSON is not a run
    if not runs:
        hint = f" (and no sub-folder {prefer}/)" if prefer else ""
        raise ValueError(f"{role} {path} holds no saved run: no {RESULTS_CSV} and no pytest-benchmark .json{hint}")
    latest = max(runs, key=lambda p: (p.name, str(p)))
    if len(runs) > 1:
        print(f"ae-bench: {role}: {path} holds {len(runs)} saved runs; using the latest, {latest}", file=sys.stderr)
    return latest


def number(value: Any) -> Optional[float]:
    """A cell as a float, or None for empty, missing or not-a-number."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


# ----------------------------------------------------------------------------------------- result


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

    @property
    def exit_status(self) -> int:
        return EXIT_FAILED if any(c.fails for c in self.cases) else EXIT_OK

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
        return f"PASS: no regression in {len(self.cases)} cases ({counts})"

    def as_json(self) -> dict:
        return {"status": "fail" if self.exit_status else "pass", "exit_status": self.exit_status,
                "headline": self.headline(), "counts": self.counts(), "settings": self.settings, "notes": self.notes,
                "baseline": self.baseline.describe(), "candidate": self.candidate.describe(),
                "cases": [c.as_dict() for c in self.cases]}

    def markdown(self, limit: int = MARKDOWN_ROWS) -> str:
        s = self.settings
        b, c = self.baseline, self.candidate
        lines = [f"### ae-bench regression check: {self.headline()}", "",
                 "| | baseline | candidate |", "| --- | --- | --- |",
                 f"| run | `{b.path}` ({b.kind}) | `{c.path}` ({c.kind}) |",
                 f"| device | {b.device_name} | {c.device_name} |",
                 f"| torch | {b.torch} | {c.torch} |",
                 f"| commit | {b.commit or '?'} | {c.commit or '?'} |",
                 f"| calibration GEMM | {_ms(b.calibration.get(NORMALIZE_KEY))} | {_ms(c.calibration.get(NORMALIZE_KEY))} |",
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
        lines += ["| case | verdict | median ms (base -> cand) | time change (interval) | peak MiB (base -> cand) | note |",
                  "| --- | --- | --- | --- | --- | --- |"]
        shown = self.cases[:limit]
        for case in shown:
            lines.append(_markdown_row(case))
        if len(self.cases) > limit:
            rest: dict[str, int] = {}
            for case in self.cases[limit:]:
                rest[case.verdict] = rest.get(case.verdict, 0) + 1
            lines.append(f"| ... {len(self.cases) - limit} more: " + ", ".join(f"{n} {v}" for v, n in rest.items())
                         + " (all cases in the JSON report) | | | | | |")
        return "\n".join(lines) + "\n"


def _markdown_row(case: CaseResult) -> str:
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
    return f"| `{case.case_id}` | {verdict} | {time_cells[0]} | {time_cells[1]} | {mem_cell} | {note.replace('|', '/')} |"


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


# ------------------------------------------------------------------------------------------- logic


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
                 confidence: float = st.CONFIDENCE, resamples: int = st.RESAMPLES, seed: int = st.SEED) -> Comparison:
    """Judge every case of ``candidate`` against ``baseline``; cases worst first. Raises ValueError
    for runs that cannot be compared (other machine, nothing in common, no calibration)."""
    rules = rules or Rules()
    notes = check_machines(baseline, candidate, allow_different_machines)
    common = [k for k in candidate.rows if k in baseline.rows]
    if not common:
        raise ValueError(f"the runs have no case in common (matched by case_key): baseline {baseline.path} has "
                         f"{len(baseline.rows)} cases, candidate {candidate.path} {len(candidate.rows)}")
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
            cases.append(CaseResult(key, str(baseline.rows[key].get("case_id") or key), "missing",
                                    note="in the baseline only: narrowed matrix, or a case that stopped running"))
    for key in candidate.rows:
        if key not in baseline.rows:
            cases.append(CaseResult(key, str(candidate.rows[key].get("case_id") or key), "new",
                                    note="in the candidate only: no baseline yet"))
    cases.sort(key=CaseResult.sort_key)
    settings = {"time_threshold": rules.default.time, "memory_threshold": rules.default.memory,
                "memory_floor_mib": rules.default.memory_floor_mib, "max_spread": rules.default.max_spread,
                "groups": [{"match": list(p), **o} for p, o in rules.groups], "confidence": confidence,
                "resamples": resamples, "seed": seed, "normalize_factor": factor, "check_rss": check_rss,
                "fail_on_noisy": fail_on_noisy,
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
    time = st.compare_times(b_samples, c_samples, limits.time, confidence, resamples, seed, max_spread=limits.max_spread)
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


# ----------------------------------------------------------------------------------------- command


def _finite(value: Any) -> Any:
    """NaN and infinities (a figure that could not be formed) as null: strict JSON for bots and jq."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------- baseline

_RUN_FILES = (RESULTS_CSV, SAMPLES_JSONL, META_JSON)


def save_baseline(run_path: Path, store: Path) -> Path:
    """Copy a saved run into ``store/<device-slug>-torch<version>/``, replacing the run kept there."""
    run = open_run(run_path, "run")
    if not run.slug:
        raise ValueError(f"run {run.path} does not record its device slug; it cannot be filed under a machine")
    dest = Path(store) / run.machine_key
    dest.mkdir(parents=True, exist_ok=True)
    for old in list(dest.glob("*.json")) + [dest / name for name in _RUN_FILES]:
        old.unlink(missing_ok=True)  # only the files a saved run is made of: anything else a person put there stays
    if run.kind == "results":
        for name in _RUN_FILES:
            if (run.path / name).exists():
                shutil.copy2(run.path / name, dest / name)
    else:
        shutil.copy2(run.path, dest / run.path.name)
    return dest
