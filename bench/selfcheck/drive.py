"""What the fault scenarios share: the command line run for real in a child process, rows counted
on disk, folders compared byte for byte. Used by :mod:`bench.selfcheck.faults` and
:mod:`bench.selfcheck.hostile` (and by ``tests/test_faults.py`` through them).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
FAST = ["--min-time", "0"]
ONE_CASE = ["--matrix", "smoke", "--sizes", "201x201", "--modes", "infer"]  # one case per family in --families
CASE_TIMEOUT_S = 45  # for a case that hangs: generous, so the next case's child never runs into it on a busy machine


@dataclass
class FaultResult:
    scenario: str
    rows_before: int       # rows on disk before the fault (counted)
    rows_after: int        # rows on disk after the fault (and the recovery, where there is one; counted)
    rows_lost: int         # rows on disk before that are not on disk after, matched by case key: must be 0
    exit_status: str       # the command's exit status(es)
    message: str           # what the user was told
    facts: dict = field(default_factory=dict)  # what else the scenario observed, for the tests to assert

    def markdown_row(self) -> str:
        return (f"| {self.scenario} | {self.rows_before} | {self.rows_after} | {self.rows_lost} | {self.exit_status} | "
                f"{self.message.replace('|', '/')} |")


def cli_env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def cli_command(args: tuple[str, ...] | list[str], inject: Optional[list[str]] = None) -> list[str]:
    """``python -m bench ARGS``, or through :mod:`bench.selfcheck.inject` with a fault planted. A ``run``
    leaves out the plan for its report's first screen unless asked (``--plan-for``): the scenarios are
    about the sweep, and the plan's tracing would add seconds to each of them."""
    args = list(args)
    if args[:1] == ["run"] and not any(a == "--plan-for" or a.startswith("--plan-for=") for a in args):
        args += ["--plan-for", "none"]
    if inject:
        return [sys.executable, "-m", "bench.selfcheck.inject", *inject, "--", *args]
    return [sys.executable, "-m", "bench", *args]


def bench_cli(*args: str, cwd: Path, timeout: float = 300, inject: Optional[list[str]] = None,
              env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(args, inject), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env())


def start_cli(*args: str, cwd: Path, env: Optional[dict] = None) -> subprocess.Popen:
    return subprocess.Popen(cli_command(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or cli_env())


def csv_rows(path: Path) -> list[dict]:
    """The records of a results.csv (read as the csv module reads it: newline="")."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def rows_under(root: Path) -> list[dict]:
    """Every row of every results.csv under ``root`` (none if it does not exist)."""
    root = Path(root)
    return [row for path in sorted(root.rglob("results.csv")) for row in csv_rows(path)] if root.exists() else []


def samples_keys(run_dir: Path) -> set[str]:
    path = run_dir / "samples.jsonl"
    if not path.exists():
        return set()
    return {json.loads(line)["case_key"] for line in path.read_text().split("\n") if line.strip()}


def ok_rows_without_samples(run_dir: Path) -> int:
    have = samples_keys(run_dir)
    return sum(1 for r in csv_rows(run_dir / "results.csv") if r.get("status") == "ok" and r["case_key"] not in have)


def only_run_dir(results: Path) -> Path:
    runs = [p for p in results.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder in {results}, found {runs}"
    return runs[0]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def lost(before: list[dict], after: list[dict]) -> int:
    """Rows on disk before that are not on disk after (matched by case key)."""
    after_keys = {r.get("case_key") for r in after}
    return sum(1 for r in before if r.get("case_key") not in after_keys)


def duplicates(rows: list[dict]) -> int:
    keys = [r["case_key"] for r in rows]
    return len(keys) - len(set(keys))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) and a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def traceback_in(text: str) -> bool:
    return "Traceback (most recent call last)" in text


def wait_for(condition: Callable[[], bool], timeout_s: float = 180, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"gave up waiting for {what} after {timeout_s:g} s")


def processes_with(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def interrupt_after(args: list[str], cwd: Path, rows_wanted: int, sig: int,
                    results: str = "r") -> tuple[subprocess.Popen, str, Path, list[dict]]:
    """Start ``python -m bench ARGS``, send ``sig`` once ``rows_wanted`` rows are on disk; returns the
    process, its stderr, the run's results.csv and the rows seen on disk just before the signal."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env())
    deadline = time.monotonic() + 180
    run_csv: Optional[Path] = None
    seen: list[dict] = []
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((cwd / results).glob("*/results.csv")) if (cwd / results).exists() else []
        seen = csv_rows(found[0]) if found else []
        if len(seen) >= rows_wanted:
            run_csv = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc, err, run_csv or next((cwd / results).glob("*/results.csv")), seen


def one_failing_case(work: Path, scenario: str, family: str, status: str, *options: str) -> FaultResult:
    """``family`` then a good CNN case in one sweep: the first costs one ``status`` row, the sweep goes on."""
    before = rows_under(work / "r")
    proc = bench_cli("run", *ONE_CASE, "--families", f"{family},cnn", "--results", "r", *options, *FAST, cwd=work)
    run_dir = only_run_dir(work / "r")
    rows = csv_rows(run_dir / "results.csv")
    bad = next((r for r in rows if r["status"] == status), {"reason": f"(no {status} row; stderr: {last_line(proc.stderr)})"})
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").exists() else {}
    return FaultResult(scenario, len(before), len(rows), lost(before, rows), str(proc.returncode),
                       f"{status} row: {bad['reason']}",
                       {"statuses": [r["status"] for r in rows], "reasons": [r["reason"] for r in rows],
                        "report": (run_dir / "report.md").is_file(), "launcher": meta.get("launcher"), "reason": bad["reason"],
                        "stderr": proc.stderr, "run_dir": run_dir})
