"""``python -m bench ab BASE_REF [HEAD_REF]``: two versions of the code, measured in one job, alternately.

Two runs made at different times differ by more than the code: the machine drifts (another job,
clocks, heat) and each build of a model runs at its own speed. ``compare`` of two stored runs sees
both as a change. Here both sides run on the same machine in the same minutes: each git ref is
checked out into a temporary worktree (HEAD_REF left out: the working tree as it is, uncommitted
changes included), and every case is measured alternately, A B then B A in the next round (ABBA),
each measurement a fresh process (``bench.core.child``, run with that side's code). Drift and load
then hit both sides alike, and each round gives a paired ratio B / A of the two processes' medians.

The verdict is on those paired ratios: their median, and a distribution-free confidence interval
for it from the ratios' order statistics (the k-th smallest to the k-th largest, k as large as the
binomial coverage allows), against the same threshold as ``compare`` (``slower`` only when the
whole interval lies above it). A bootstrap of so few rounds would claim more than it knows: the
median of 3 resampled ratios spans at most the smallest to the largest, which covers the true
median 75% of the time, not 95% (measured: with 3 rounds, `ab A A` called the CNN's bimodal speed
`slower` in 1 of 24 case verdicts). At 95%, 6 rounds are the fewest that can bound the median. A side
whose speed depends on the build shows up as scattered paired ratios, so a wide interval
(``noisy``), not a change. The output is
``compare``'s: the same exit codes, markdown and JSON. (asv's ``continuous`` and Chromium's Pinpoint
work this way: both commits in one job, interleaved.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

from bench.compare import stats as st
from bench.compare.rules import Rules
from bench.compare.sides import Side
from bench.compare.verdicts import CaseResult, Comparison, memory_column
from bench.core.cases import Case
from bench.core.launchers import Subprocess
from bench.core.measure import Measurement
from bench.runs.provenance import git_commit, utc_now

DEFAULT_ROUNDS = 6


def median_ranks(n: int, confidence: float = st.CONFIDENCE) -> tuple[int, float]:
    """(k, coverage): the interval from the k-th smallest to the k-th largest of ``n`` paired ratios
    covers their true median with probability ``coverage`` = 1 - 2 P(Binomial(n, 1/2) < k), for any
    continuous distribution; k is the largest whose coverage reaches ``confidence``. k = 0 when even
    the smallest-to-largest interval falls short (its coverage is then returned for k = 1)."""
    k, coverage, tail = 0, 1 - 2 * 0.5 ** n, 0.0
    for rank in range(1, n // 2 + 1):
        tail += math.comb(n, rank - 1) / 2 ** n  # P(Binomial(n, 1/2) <= rank - 1)
        if 1 - 2 * tail < confidence:
            break
        k, coverage = rank, 1 - 2 * tail
    return k, coverage


def min_rounds(confidence: float = st.CONFIDENCE) -> int:
    """The fewest paired rounds whose median an interval can bound at ``confidence`` (6 at 95%)."""
    n = 1
    while median_ranks(n, confidence)[0] == 0:
        n += 1
    return n


MIN_ROUNDS = min_rounds()


def check_rounds(rounds: int) -> None:
    """Refuse (ValueError, one line) fewer rounds than can bound the paired median."""
    if rounds < MIN_ROUNDS:
        raise ValueError(f"--rounds {rounds}: at least {MIN_ROUNDS} rounds are needed to bound the paired median at "
                         f"{st.CONFIDENCE:.0%}")


def repo_root(start: Path = Path.cwd()) -> Path:
    try:
        out = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             check=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as err:
        raise ValueError(f"ab needs a git repository: {start} is not in one ({err})") from None
    return Path(out.stdout.strip())


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit ``ref`` names (one line naming the ref when it names none)."""
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise ValueError(f"ab: {ref!r} is not a commit, branch or tag of {repo}")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(repo: Path, ref: Optional[str], check: bool = True) -> Iterator[tuple[Path, str]]:
    """(code root, label): a temporary worktree of ``ref`` (removed afterwards), or the repository's working
    tree itself for ``None``. ``check``: refuse a side whose harness this parent cannot drive (:func:`check_harness`;
    ``ab`` runs the side's child itself); ``history backfill`` runs each commit's own ``python -m bench run`` and
    records a commit that cannot as skipped, so it passes False."""
    if ref is None:
        if check:
            check_harness(repo, "the working tree")
        yield repo, f"working tree ({git_commit() or 'no commit'}, uncommitted changes included)"
        return
    commit = resolve_ref(repo, ref)
    remove_stale_worktrees(repo)
    folder = Path(tempfile.mkdtemp(prefix=f"{_AB_PREFIX}{os.getpid()}-")) / "tree"  # the pid: whose it is, once orphaned
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(folder), commit],
                   check=True, capture_output=True, timeout=300)
    try:
        if check:
            check_harness(folder, f"{ref} ({commit[:10]})")
        yield folder, f"{ref} ({commit[:10]})"
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(folder)], capture_output=True, timeout=300)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True, timeout=300)
        shutil.rmtree(folder.parent, ignore_errors=True)  # the ae-bench-ab-* folder that held it


_AB_PREFIX = "ae-bench-ab-"


def remove_stale_worktrees(repo: Path) -> list[Path]:
    """Remove the worktrees an ``ab`` killed with SIGKILL left registered (their folder is named for their pid,
    which is gone), then prune the registrations whose folder is gone. Another live ``ab``'s worktree stays.
    Returns the folders removed."""
    from bench.runs.lock import pid_alive

    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list", "--porcelain"], capture_output=True, text=True,
                            timeout=60)
    removed = []
    for line in listed.stdout.splitlines():
        path = Path(line[len("worktree "):]) if line.startswith("worktree ") else None
        match = re.fullmatch(rf"{_AB_PREFIX}(\d+)-.*", path.parent.name) if path is not None else None
        if match and path.name == "tree" and not pid_alive(int(match.group(1))):
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True,
                           timeout=300)
            shutil.rmtree(path.parent, ignore_errors=True)
            removed.append(path)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True, timeout=300)
    return removed


# Run in a side's code root: which protocol its child speaks, and which of its harness modules came from elsewhere
# (the editable install's finder serves a module the checkout lacks, e.g. bench.core of a commit before bench/core/).
_PROBE = """
import json, os, sys
root = os.path.realpath(sys.argv[1])
try:
    import bench.core.child as child, bench.core.measure, bench.core.cases
except BaseException as err:
    print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
    raise SystemExit(0)
outside = sorted(name for name, mod in list(sys.modules.items()) if name.split(".")[0] in ("bench", "ae_models")
                 and getattr(mod, "__file__", None) and not os.path.realpath(mod.__file__).startswith(root + os.sep))
print(json.dumps({"outside": outside, "protocol": getattr(child, "PROTOCOL", 2 if hasattr(child, "watch_parent") else 1)}))
"""


def check_harness(root: Path, label: str, timeout_s: float = 300.0) -> None:
    """Refuse (ValueError, one line) a side whose own harness cannot measure: its ``bench.core.child`` missing, served
    from another checkout (the editable install), or speaking another protocol than this parent (39031ba's child
    read its case from stdin: every measurement would hang until the case timeout, and the side measure nothing)."""
    from bench.core.child import PROTOCOL

    done = subprocess.run([sys.executable, "-c", _PROBE, str(Path(root).resolve())], cwd=root, capture_output=True,
                          text=True, timeout=timeout_s, env={**_plain_env(), "PYTHONPATH": str(Path(root).resolve())})
    lines = done.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"ab: {label}'s harness cannot start: {tail}") from None
    if "error" in found:
        raise ValueError(f"ab: {label} has no bench.core.child to measure with (a commit from before the "
                         f"one-case-per-child harness): {found['error']}")
    if found["outside"]:
        raise ValueError(f"ab: {label} lacks its own harness: {', '.join(found['outside'][:3])} would come from "
                         f"another checkout (the installed bench), not from {label}; pick a BASE with bench/core/child.py")
    if found["protocol"] != PROTOCOL:
        raise ValueError(f"ab: {label}'s bench.core.child speaks protocol {found['protocol']}, this harness {PROTOCOL} "
                         "(it reads its case another way): its measurements would hang until the case timeout; pick a "
                         "later BASE")


def _plain_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def paired_change(a_medians: list[float], b_medians: list[float], threshold: float,
                  confidence: float = st.CONFIDENCE) -> st.TimeChange:
    """The verdict from paired rounds: ratio = median of B/A over the rounds, its interval the order
    statistics of :func:`median_ranks`; fewer pairs than that interval needs is ``noisy``."""
    pairs = [(a, b) for a, b in zip(a_medians, b_medians) if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)]
    a_med = statistics.median([a for a, _ in pairs]) if pairs else math.nan
    b_med = statistics.median([b for _, b in pairs]) if pairs else math.nan
    k, coverage = median_ranks(len(pairs), confidence)
    if k == 0:
        return st.TimeChange("noisy", f"{len(pairs)} paired round(s) cannot bound the median at {confidence:.0%} (the "
                             f"smallest to the largest ratio covers it {max(coverage, 0):.0%} of the time): at least "
                             f"{min_rounds(confidence)} are needed", math.nan, math.nan, math.nan, confidence, threshold,
                             a_med, b_med, len(pairs), len(pairs))
    ratios = sorted(b / a for a, b in pairs)
    low, high = ratios[k - 1], ratios[-k]
    ratio = statistics.median(ratios)
    verdict, reason = st.time_verdict(ratio, low, high, threshold)
    reason = reason.replace("median ", f"paired median of {len(pairs)} rounds ", 1)
    return st.TimeChange(verdict, reason, ratio, low, high, confidence, threshold, a_med, b_med, len(pairs), len(pairs))


def run_ab(cases: list[Case], selection, roots: tuple[Path, Path], labels: tuple[str, str], rounds: int,
           rules: Rules, timeout_s: float, log: Callable[[str], None] = lambda line: None, *,
           min_judged: float = st.MIN_JUDGED, allow_inconclusive: bool = False) -> Comparison:
    """Measure every case on both sides, ``rounds`` times, ABBA; judge each case on its paired rounds (fewer
    than ``min_judged`` of them judged: inconclusive, see :class:`Comparison`)."""
    check_rounds(rounds)
    sides = {"A": Subprocess(str(selection.device), timeout_s, code_root=roots[0]),
             "B": Subprocess(str(selection.device), timeout_s, code_root=roots[1])}
    settings = selection.settings
    got: dict[tuple[str, str], list[Measurement]] = {}
    todo = [c for c in cases if not c.skip]
    total, done = rounds * len(todo) * 2, 0
    for r in range(rounds):
        for case in todo:
            for side in ("AB" if r % 2 == 0 else "BA"):
                m = sides[side].run(case, selection.device, selection.facts, settings, f"ab-{side}")
                got.setdefault((case.key, side), []).append(m)
                done += 1
                median = statistics.median(m.samples_s) * 1e3 if m.samples_s else math.nan
                log(f"[{done}/{total}] round {r + 1} {side} {case.id}: {m.row.get('status')}, median {median:.2f} ms/batch")
    results, sided = [], {"A": {}, "B": {}}
    for case in todo:
        runs = {s: got[(case.key, s)] for s in "AB"}
        for s in "AB":
            ok = [m for m in runs[s] if m.row.get("status") == "ok" and m.samples_s]
            sided[s][case.key] = (runs[s][-1].row, [x * 1e3 for m in ok for x in m.samples_s],
                                  [i for i, m in enumerate(ok) for _ in m.samples_s])
        results.append(_judge(case, runs, rules))
    side_a, side_b = (_side(labels[i], roots[i], sided[s], selection) for i, s in enumerate("AB"))
    results.sort(key=CaseResult.sort_key)
    limits = rules.default
    settings_out = {"time_threshold": limits.time, "memory_threshold": limits.memory, "memory_floor_mib": limits.memory_floor_mib,
                    "max_spread": limits.max_spread, "confidence": st.CONFIDENCE, "resamples": st.RESAMPLES, "seed": st.SEED,
                    "normalize_factor": None, "rounds": rounds, "order": "ABBA", "memory_columns": ["reserved_peak_mib",
                                                                                                  "nvml_process_peak_mib"],
                    "groups": [{"match": list(p), **o} for p, o in rules.groups], "min_judged": min_judged,
                    "allow_inconclusive": allow_inconclusive}
    notes = [f"A/B in one job: {rounds} rounds, A and B alternated (ABBA), each measurement a fresh process; the time "
             "verdict is on the paired ratios B/A of the two processes' medians, its interval their order statistics "
             f"(distribution-free, at least {st.CONFIDENCE:.0%} coverage of the median)"]
    return Comparison(side_a, side_b, results, settings_out, notes)


def not_measured(row: dict) -> bool:
    """A row the harness made, not the case: a timeout, or a child that died or ended without a result (its
    status says nothing about the code measured)."""
    reason = str(row.get("reason") or "")
    return row.get("status") == "timeout" or (row.get("status") == "error" and reason.startswith(("child killed by ",
                                                                                                   "child exited with ")))


def _judge(case: Case, runs: dict[str, list[Measurement]], rules: Rules) -> CaseResult:
    limits = rules.for_case(case.id, case.key)
    if limits.ignore:
        return CaseResult(case.key, case.id, "ignored", note="ignored by the config")
    bad = {s: [m for m in runs[s] if m.row.get("status") != "ok"] for s in "AB"}
    if bad["A"] and bad["B"]:
        return CaseResult(case.key, case.id, "skipped", note=f"{bad['B'][0].row.get('status')} on both sides")
    unmeasured = [m for m in bad["A"] if not_measured(m.row)]
    if unmeasured:  # A's harness or its limit, not A's code, ended it: nothing measured, so nothing "fixed" either
        return CaseResult(case.key, case.id, "skipped", note=f"no measurement in A: {unmeasured[0].row.get('status')} "
                                                               f"({(unmeasured[0].row.get('reason') or '')[:120]})")
    if bad["B"]:
        return CaseResult(case.key, case.id, "broken", fails=True,
                          note=f"ok in A, {bad['B'][0].row.get('status')} in B: {bad['B'][0].row.get('reason') or ''}".strip())
    if bad["A"]:
        return CaseResult(case.key, case.id, "fixed", note=f"{bad['A'][0].row.get('status')} in A, ok in B")
    a = [statistics.median(m.samples_s) * 1e3 for m in runs["A"]]
    b = [statistics.median(m.samples_s) * 1e3 for m in runs["B"]]
    time = paired_change(a, b, limits.time)
    base, cand = runs["A"][-1].row, runs["B"][-1].row
    column = memory_column(base, cand)
    if column == "rss_peak_mib":
        column = None  # whole-process RSS: not judged (as compare without --check-rss)
    value = (lambda row: float(row[column]) if column and row.get(column) not in (None, "") else None)
    memory = st.compare_memory(value(base), value(cand), column, limits.memory, limits.memory_floor_mib)
    fails = time.verdict == "slower" or memory.verdict == "grew"
    return CaseResult(case.key, case.id, "compared", time, memory, fails=fails)


def _side(label: str, root: Path, data: dict, selection) -> Side:
    facts = selection.facts
    return Side(path=Path(label), kind="ab", rows={k: v[0] for k, v in data.items()},
                samples_ms={k: v[1] for k, v in data.items()}, samples_process={k: v[2] for k, v in data.items()},
                device_type=facts.type, device_name=facts.name, torch=facts.torch, slug=facts.slug,
                commit=label, created=utc_now())
