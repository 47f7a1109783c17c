"""The fault table: each way a sweep can go wrong, done for real, and what survived.

``python -m bench.selfcheck.faults [OUT.md]`` runs every scenario on this machine (about ten minutes
on two CPU cores) and writes the table; ``tests/test_faults.py`` runs the same scenarios and
asserts what each must show. Every scenario drives the real command line in a child process, and
every count in the table is of rows on disk (``results.csv``), before and after the fault. The
scenarios of a user's bad day (hostile models, full disks, a second writer, ...) are in
:mod:`bench.selfcheck.hostile`.
"""

from __future__ import annotations

import shlex
import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable

from bench.selfcheck import hostile
from bench.selfcheck.drive import (  # noqa: F401 - REPO, bench_cli, csv_rows and only_run_dir are used by other tests too
    CASE_TIMEOUT_S, FAST, REPO, FaultResult, bench_cli, csv_rows, interrupt_after, last_line, lost, one_failing_case,
    only_run_dir, rows_under,
)


def a_case_that_raises(work: Path) -> FaultResult:
    return one_failing_case(work, "a case that raises (in-process)", "tests.plugins:raising", "error",
                            "--launcher", "in-process")


def a_child_killed_with_sigkill(work: Path) -> FaultResult:
    return one_failing_case(work, "a case whose process is killed with SIGKILL (subprocess launcher)", "tests.plugins:killed",
                            "error", "--launcher", "subprocess")


def a_case_that_hangs(work: Path, timeout_s: float = CASE_TIMEOUT_S) -> FaultResult:
    """The default launcher with ``--case-timeout``: each case in a child (even on a CPU), the hung one killed."""
    return one_failing_case(work, f"a case that hangs past `--case-timeout {timeout_s:g}` (default launcher)",
                            "tests.plugins:hangs", "timeout", "--case-timeout", str(timeout_s))


def interrupted_then_resumed(work: Path, sig: int = signal.SIGINT) -> FaultResult:
    # longer cases than FAST (up to the smoke matrix's 20 iterations): a poller on a busy machine still catches the sweep half-way
    args = ["run", "--matrix", "smoke", "--results", "r", "--launcher", "in-process", "--min-time", "0.5"]
    proc, err, run_csv, before = interrupt_after(args, work, 2, sig)
    if proc.returncode == 0:
        raise RuntimeError("the sweep finished before the signal arrived; the machine is too busy for this scenario")
    resume_hint = next((line for line in err.splitlines() if line.startswith("resume with:")), "")
    again = bench_cli(*shlex.split(resume_hint.removeprefix("resume with: "))[3:], cwd=work)  # after `PYTHON -m bench`
    after = csv_rows(run_csv)
    keys = [r["case_key"] for r in after]
    assert len(keys) == len(set(keys)), "a case appears twice after resume"
    name = signal.Signals(sig).name
    return FaultResult(f"{name} half-way, then `--resume`", len(before), len(after), lost(before, after),
                       f"{proc.returncode} then {again.returncode}", f"{last_line(err.split('resume with:')[0])} / {resume_hint}")


def a_truncated_results_csv(work: Path) -> FaultResult:
    """A kill in the middle of a write leaves half a line: resume cuts it and measures that case again."""
    bench_cli("run", "--matrix", "smoke", "--modes", "infer", "--results", "r", "--launcher", "in-process", *FAST, cwd=work)
    run_dir = only_run_dir(work / "r")
    path = run_dir / "results.csv"
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # half of the last row
    before = csv_rows(path)[:-1]  # the whole rows
    proc = bench_cli("run", "--matrix", "smoke", "--modes", "infer", "--resume", str(run_dir), "--launcher", "in-process",
                     *FAST, cwd=work)
    after = csv_rows(path)
    keys = [r["case_key"] for r in after]
    assert len(keys) == len(set(keys)) and all(len(r) == len(after[0]) for r in after)
    told = next((line for line in proc.stderr.splitlines() if line.startswith("ae-bench: resuming")), "")
    return FaultResult("a truncated results.csv (half a last line), then `--resume`", len(before), len(after),
                       lost(before, after), str(proc.returncode), told)


def a_corrupt_results_csv(work: Path) -> FaultResult:
    """A damaged line in the middle is not guessed at: exit 2, one line, file untouched."""
    bench_cli("run", "--matrix", "smoke", "--modes", "infer", "--sizes", "201x201", "--results", "r", "--launcher",
              "in-process", *FAST, cwd=work)
    run_dir = only_run_dir(work / "r")
    path = run_dir / "results.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
    path.write_text("".join(lines))
    damaged = path.read_bytes()
    before = csv_rows(path)
    proc = bench_cli("run", "--matrix", "smoke", "--modes", "infer", "--sizes", "201x201", "--resume", str(run_dir), *FAST,
                     cwd=work)
    assert path.read_bytes() == damaged, "the damaged file was changed"
    after = csv_rows(path)
    return FaultResult("a results.csv damaged in the middle, then `--resume`", len(before), len(after), lost(before, after),
                       str(proc.returncode), last_line(proc.stderr))


def a_corrupt_autosave_json(work: Path) -> FaultResult:
    """A truncated pytest-benchmark JSON given to ``report``: exit 2, one line, nothing written."""
    path = work / "0001_run.json"
    path.write_text('{"machine_info": {"ae_bench": {"name": "x"}}, "benchmarks": [{"name": "test_speed[')
    before = rows_under(work)
    proc = bench_cli("report", str(path), cwd=work)
    written = sorted(p.name for p in work.iterdir() if p.name != path.name)
    after = rows_under(work)
    return FaultResult("a corrupt (truncated) autosave JSON given to `report`", len(before), len(after), lost(before, after),
                       str(proc.returncode), last_line(proc.stderr) + (f" (files written: {written})" if written else ""))


def a_factory_that_exits(work: Path) -> FaultResult:
    """A plug-in whose factory calls ``os._exit(0)`` (issue 35): it ended the run with 0, no row and no report, while
    the run built it in its own process for the model facts. Now it is one error row, and the run exits 1."""
    return one_failing_case(work, "a model factory that calls `os._exit(0)` (in-process)", "tests.plugins_exit:os_exit",
                            "error", "--launcher", "in-process")


def a_factory_that_hangs(work: Path, timeout_s: float = CASE_TIMEOUT_S) -> FaultResult:
    """A plug-in whose factory never returns: it hung the run before its first case, outside any timeout."""
    return one_failing_case(work, f"a model factory that hangs, `--case-timeout {timeout_s:g}`",
                            "tests.plugins_exit:hangs_in_factory", "timeout", "--case-timeout", str(timeout_s))


def a_last_line_cut_inside_its_timestamp(work: Path) -> FaultResult:
    """A kill that cut the last row inside its last field (every field still there): `report` refuses it, naming
    `--resume`, instead of reading a cut timestamp as a whole row."""
    bench_cli("run", "--matrix", "smoke", "--modes", "infer", "--sizes", "201x201", "--results", "r", "--launcher",
              "in-process", *FAST, cwd=work)
    path = only_run_dir(work / "r") / "results.csv"
    path.write_text(path.read_text().rstrip()[:-3])
    before = csv_rows(path)
    proc = bench_cli("report", str(path.parent), cwd=work)
    after = csv_rows(path)
    return FaultResult("a last line cut inside its timestamp, given to `report`", len(before), len(after),
                       lost(before, after), str(proc.returncode), last_line(proc.stderr))


SCENARIOS: list[Callable[[Path], FaultResult]] = [
    a_case_that_raises, a_child_killed_with_sigkill, a_case_that_hangs, interrupted_then_resumed,
    lambda work: interrupted_then_resumed(work, signal.SIGTERM), a_truncated_results_csv, a_corrupt_results_csv,
    a_corrupt_autosave_json, a_factory_that_exits, a_factory_that_hangs, a_last_line_cut_inside_its_timestamp,
    *hostile.SCENARIOS,
]


def fault_table(results: list[FaultResult]) -> str:
    lines = ["| fault | rows before | rows after | rows lost | exit status | message |", "| --- | --- | --- | --- | --- | --- |"]
    return "\n".join(lines + [r.markdown_row() for r in results])


def main(argv: list[str]) -> int:
    from bench.runs.provenance import utc_now
    from bench.runs.files import atomic_write_text

    out = Path(argv[0]) if argv else REPO / "results" / "fault-table.md"
    results = []
    for scenario in SCENARIOS:
        with tempfile.TemporaryDirectory(prefix="ae-bench-fault-") as tmp:
            result = scenario(Path(tmp))
            print(result.markdown_row(), flush=True)
            results.append(result)
    text = (f"# Fault table\n\nMade by `python -m bench.selfcheck.faults` on {utc_now()}; every fault was really done "
            f"through the command line (see `bench/selfcheck/faults.py` and `bench/selfcheck/hostile.py`), every row count "
            f"is of rows on disk before and after it, and `tests/test_faults.py` asserts the same.\n\n"
            f"{fault_table(results)}\n")
    atomic_write_text(out, text)
    print(f"written to {out}")
    return 0 if all(r.rows_lost == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
