"""The fault table: each way a sweep can go wrong, done for real, and what survived.

``python -m bench.selfcheck.faults [OUT.md]`` runs every scenario on this machine (a few minutes on two CPU
cores) and writes the table; ``tests/test_faults.py`` runs the same scenarios and asserts that
no row is ever lost. Every scenario drives the real command line in a child process.
"""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
FAST = ["--min-time", "0"]


@dataclass
class FaultResult:
    scenario: str
    rows_before: int       # rows on disk before the fault
    rows_after: int        # rows on disk after the fault (and the recovery, where there is one)
    rows_lost: int         # measured rows that are no longer on disk: must be 0
    exit_status: str       # the command's exit status(es)
    message: str           # what the user was told

    def markdown_row(self) -> str:
        return (f"| {self.scenario} | {self.rows_before} | {self.rows_after} | {self.rows_lost} | {self.exit_status} | "
                f"{self.message.replace('|', '/')} |")


def bench_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def csv_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def only_run_dir(results: Path) -> Path:
    runs = [p for p in results.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder in {results}, found {runs}"
    return runs[0]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _lost(before: list[dict], after: list[dict]) -> int:
    """Rows measured before that are not on disk after (matched by case key)."""
    after_keys = {r["case_key"] for r in after}
    return sum(1 for r in before if r["case_key"] not in after_keys)


def a_case_that_raises(work: Path) -> FaultResult:
    proc = bench_cli("run", "--matrix", "smoke", "--families", "tests.plugins:raising,cnn", "--modes", "infer",
                     "--sizes", "201x201", "--results", "r", "--launcher", "in-process", *FAST, cwd=work)
    rows = csv_rows(only_run_dir(work / "r") / "results.csv")
    error = next(r for r in rows if r["status"] == "error")
    return FaultResult("a case that raises (in-process)", 0, len(rows), 0, str(proc.returncode), f"error row: {error['reason']}")


def a_child_killed_with_sigkill(work: Path) -> FaultResult:
    proc = bench_cli("run", "--matrix", "smoke", "--families", "tests.plugins:killed,cnn", "--modes", "infer",
                     "--sizes", "201x201", "--results", "r", "--launcher", "subprocess", *FAST, cwd=work)
    rows = csv_rows(only_run_dir(work / "r") / "results.csv")
    error = next(r for r in rows if r["status"] == "error")
    return FaultResult("a case whose process is killed with SIGKILL (subprocess launcher)", 0, len(rows), 0,
                       str(proc.returncode), f"error row: {error['reason']}")


def a_case_that_hangs(work: Path, timeout_s: float = 10) -> FaultResult:
    proc = bench_cli("run", "--matrix", "smoke", "--families", "tests.plugins:hangs,cnn", "--modes", "infer",
                     "--sizes", "201x201", "--results", "r", "--launcher", "subprocess", "--case-timeout", str(timeout_s),
                     *FAST, cwd=work)
    rows = csv_rows(only_run_dir(work / "r") / "results.csv")
    timeout = next(r for r in rows if r["status"] == "timeout")
    return FaultResult(f"a case that hangs past its timeout ({timeout_s:g} s)", 0, len(rows), 0, str(proc.returncode),
                       f"timeout row: {timeout['reason']}")


def _interrupt_after(args: list[str], cwd: Path, rows_wanted: int, sig: int) -> tuple[subprocess.Popen, str, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 180
    run_csv: Optional[Path] = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((cwd / "r").glob("*/results.csv")) if (cwd / "r").exists() else []
        if found and len(csv_rows(found[0])) >= rows_wanted:
            run_csv = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc, err, run_csv or next((cwd / "r").glob("*/results.csv"))


def interrupted_then_resumed(work: Path, sig: int = signal.SIGINT) -> FaultResult:
    # longer cases than FAST (up to the smoke matrix's 20 iterations): a poller on a busy machine still catches the sweep half-way
    args = ["run", "--matrix", "smoke", "--results", "r", "--launcher", "in-process", "--min-time", "0.5"]
    proc, err, run_csv = _interrupt_after(args, work, 2, sig)
    if proc.returncode == 0:
        raise RuntimeError("the sweep finished before the signal arrived; the machine is too busy for this scenario")
    before = csv_rows(run_csv)
    resume_hint = next((line for line in err.splitlines() if line.startswith("resume with:")), "")
    again = bench_cli(*shlex.split(resume_hint.removeprefix("resume with: "))[3:], cwd=work)  # after `PYTHON -m bench`
    after = csv_rows(run_csv)
    keys = [r["case_key"] for r in after]
    assert len(keys) == len(set(keys)), "a case appears twice after resume"
    name = signal.Signals(sig).name
    return FaultResult(f"{name} half-way, then `--resume`", len(before), len(after), _lost(before, after),
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
                       _lost(before, after), str(proc.returncode), told)


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
    proc = bench_cli("run", "--matrix", "smoke", "--modes", "infer", "--resume", str(run_dir), *FAST, cwd=work)
    assert path.read_bytes() == damaged, "the damaged file was changed"
    rows = len(lines) - 1
    return FaultResult("a results.csv damaged in the middle, then `--resume`", rows, rows, 0, str(proc.returncode),
                       last_line(proc.stderr))


def a_corrupt_autosave_json(work: Path) -> FaultResult:
    """A truncated pytest-benchmark JSON given to ``report``: exit 2, one line, nothing written."""
    path = work / "0001_run.json"
    path.write_text('{"machine_info": {"ae_bench": {"name": "x"}}, "benchmarks": [{"name": "test_speed[')
    proc = bench_cli("report", str(path), cwd=work)
    written = sorted(p.name for p in work.iterdir() if p.name != path.name)
    return FaultResult("a corrupt (truncated) autosave JSON given to `report`", 0, 0, 0, str(proc.returncode),
                       last_line(proc.stderr) + (f" (files written: {written})" if written else ""))


SCENARIOS: list[Callable[[Path], FaultResult]] = [
    a_case_that_raises, a_child_killed_with_sigkill, a_case_that_hangs, interrupted_then_resumed,
    lambda work: interrupted_then_resumed(work, signal.SIGTERM), a_truncated_results_csv, a_corrupt_results_csv,
    a_corrupt_autosave_json,
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
            f"(see `bench/selfcheck/faults.py`), and `tests/test_faults.py` asserts the same.\n\n{fault_table(results)}\n")
    atomic_write_text(out, text)
    print(f"written to {out}")
    return 0 if all(r.rows_lost == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
