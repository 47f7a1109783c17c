"""The faults of a user's bad day (issue 16), each done for real through the command line: plug-in
models that exit, flood their output or return NaN (``tests/plugins.py``), two writers on one
folder, a parent killed under its child, a stop between a row's two writes, a full or read-only
disk, bad values, a refused resume, a U+2028 in a family name. Rows are counted on disk before
and after each; :mod:`bench.selfcheck.faults` puts them in the fault table.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from bench.selfcheck.drive import (
    FAST, ONE_CASE, FaultResult, bench_cli, cli_command, cli_env, csv_rows, duplicates, interrupt_after, last_line, lost,
    ok_rows_without_samples, one_failing_case, only_run_dir, processes_with, rows_under, snapshot, start_cli, traceback_in,
    wait_for,
)

THREE_CNN_CASES = ["run", "--matrix", "smoke", "--families", "cnn", "--sizes", "201x201", "--modes", "infer,train,embed",
                   "--launcher", "in-process", *FAST]
TWO_CNN_CASES = ["run", "--matrix", "smoke", "--families", "cnn", "--sizes", "201x201", "--modes", "infer,train",
                 "--launcher", "in-process", *FAST]


def _resume_hint(stderr: str) -> str:
    return next((line.removeprefix("resume with: ").removeprefix("when the folder is writable again, resume with: ")
                 for line in stderr.splitlines() if "resume with: " in line), "")


# -- 1. a case that ends the process ---------------------------------------------------------------

def a_case_that_calls_sys_exit(work: Path) -> FaultResult:
    return one_failing_case(work, "a case that calls `sys.exit(0)` (in-process)", "tests.plugins:exits", "error",
                            "--launcher", "in-process")


def a_case_that_calls_os_exit(work: Path) -> FaultResult:
    return one_failing_case(work, "a case that calls `os._exit(0)` (in-process)", "tests.plugins:exits_hard", "error",
                            "--launcher", "in-process")


def a_child_that_exits_through_libc(work: Path) -> FaultResult:
    """The C library's ``_exit(0)``, which nothing can intercept: in a child, status 0 without a result is an error."""
    return one_failing_case(work, "a case that calls the C library's `_exit(0)` (subprocess launcher)",
                            "tests.plugins:exits_through_libc", "error", "--launcher", "subprocess")


# -- 2. a child that floods its output -------------------------------------------------------------

def a_chatty_child(work: Path) -> FaultResult:
    """One 1.6 MB line, then a SIGKILL: the reason quotes a capped tail; report and resume read the run."""
    result = one_failing_case(work, "a child that prints a 1.6 MB line, then dies (subprocess launcher)",
                              "tests.plugins:chatty", "error", "--launcher", "subprocess")
    run_dir = result.facts["run_dir"]
    before = csv_rows(run_dir / "results.csv")
    report = bench_cli("report", str(run_dir), cwd=work)
    resume = bench_cli("run", *ONE_CASE, "--families", "tests.plugins:chatty,cnn", "--launcher", "subprocess", *FAST,
                       "--resume", str(run_dir), cwd=work)
    after = csv_rows(run_dir / "results.csv")
    reason = result.facts["reason"]
    result.rows_after, result.rows_lost = len(after), lost(before, after)
    result.exit_status += f"; report {report.returncode}; `--resume` {resume.returncode}"
    result.message = f"error row, its reason {len(reason)} characters: {reason[:90]} ... {reason[-60:]}"
    result.facts.update(report_rc=report.returncode, resume_rc=resume.returncode, resume_err=resume.stderr,
                        report_err=report.stderr)
    return result


# -- 3. run folders: exclusive and locked ----------------------------------------------------------

def two_runs_in_the_same_second(work: Path) -> FaultResult:
    """Both runs get the same run id (planted): each must still get a folder of its own."""
    args = ["run", *ONE_CASE, "--families", "cnn", "--results", "r", "--launcher", "in-process", *FAST]
    before = rows_under(work / "r")
    procs = [subprocess.Popen(cli_command(args, ["same-second"]), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cli_env()) for _ in range(2)]
    codes = []
    for proc in procs:
        proc.communicate(timeout=600)
        codes.append(proc.returncode)
    folders = sorted(p for p in (work / "r").iterdir() if p.is_dir())
    after = rows_under(work / "r")
    per_folder = [len(csv_rows(f / "results.csv")) for f in folders]
    return FaultResult("two runs started in the same second (the same run id)", len(before), len(after), lost(before, after),
                       " and ".join(map(str, codes)),
                       f"{len(folders)} folders ({', '.join(f.name for f in folders)}), rows {per_folder}",
                       {"folders": len(folders), "per_folder": per_folder, "codes": codes})


def a_resume_while_the_run_goes_on(work: Path) -> FaultResult:
    """``--resume`` of a run still writing (stuck in a hanging case) is refused; the run is then stopped."""
    args = ["run", *ONE_CASE, "--families", "cnn,tests.plugins:hangs", "--launcher", "in-process", *FAST]
    proc = start_cli(*args, "--results", "r", cwd=work)
    try:
        wait_for(lambda: len(rows_under(work / "r")) >= 1 or proc.poll() is not None, what="the first row")
        run_dir = only_run_dir(work / "r")
        before = csv_rows(run_dir / "results.csv")
        second = bench_cli(*args, "--resume", str(run_dir), cwd=work)
        between = csv_rows(run_dir / "results.csv")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    after = csv_rows(run_dir / "results.csv")
    return FaultResult("`--resume` of a run that is still going", len(before), len(after), lost(before, after),
                       f"the `--resume`: {second.returncode}; the run, stopped: {proc.returncode}", last_line(second.stderr),
                       {"resume_rc": second.returncode, "resume_err": second.stderr, "rows_while_refused": len(between),
                        "duplicates": duplicates(after)})


# -- 4. a stop between a row's two writes ----------------------------------------------------------

def a_stop_between_a_rows_two_writes(work: Path) -> FaultResult:
    """Ctrl-C right after the first write of the second row (planted at the third fsync), then ``--resume``."""
    first = bench_cli(*THREE_CNN_CASES, "--results", "r", cwd=work, inject=["stop-between-writes", "3"])
    run_dir = only_run_dir(work / "r")
    before = csv_rows(run_dir / "results.csv")
    orphans = ok_rows_without_samples(run_dir)
    hint = _resume_hint(first.stderr)
    again = bench_cli(*shlex.split(hint)[3:], cwd=work) if hint else None
    after = csv_rows(run_dir / "results.csv")
    orphans_after = ok_rows_without_samples(run_dir)
    return FaultResult("a stop between a row's two writes (samples, CSV line), then `--resume`", len(before), len(after),
                       lost(before, after), f"{first.returncode} then {again.returncode if again else '-'}",
                       f"ok rows without samples: {orphans} after the stop, {orphans_after} after the resume",
                       {"orphans": orphans, "orphans_after": orphans_after, "duplicates": duplicates(after)})


# -- 6. baseline into its own folder ---------------------------------------------------------------

def a_baseline_kept_into_its_own_folder(work: Path) -> FaultResult:
    bench_cli("run", *ONE_CASE, "--families", "cnn", "--results", "r", *FAST, cwd=work)
    kept = bench_cli("baseline", str(only_run_dir(work / "r")), "--store", "bl", cwd=work)
    dest = work / last_line(kept.stdout)
    before, files = csv_rows(dest / "results.csv"), snapshot(dest)
    again = bench_cli("baseline", str(dest), "--store", "bl", cwd=work)
    after = csv_rows(dest / "results.csv")
    return FaultResult("`baseline bl/<key> --store bl` (a baseline into its own folder)", len(before), len(after),
                       lost(before, after), f"{kept.returncode} then {again.returncode}", last_line(again.stderr),
                       {"unchanged": snapshot(dest) == files, "rc": again.returncode, "err": again.stderr})


# -- 7. a parent killed under its child ------------------------------------------------------------

def a_parent_killed_under_its_child(work: Path, sig: int = signal.SIGKILL) -> FaultResult:
    """The parent of a hanging child gets ``sig``: the child must end and its temporary folder go."""
    tmp = work / "tmp"
    tmp.mkdir()
    proc = start_cli("run", *ONE_CASE, "--families", "cnn,tests.plugins:hangs", "--results", "r", "--launcher", "subprocess",
                     "--case-timeout", "3600", *FAST, cwd=work, env=cli_env(TMPDIR=str(tmp)))
    try:
        wait_for(lambda: len(rows_under(work / "r")) >= 1 or proc.poll() is not None, what="the first row")
        wait_for(lambda: bool(processes_with(f"{tmp}/ae-bench-case-")) or proc.poll() is not None,
                 what="the hanging case's child")
        children = processes_with(f"{tmp}/ae-bench-case-")
        before = rows_under(work / "r")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    start = time.monotonic()
    try:
        wait_for(lambda: not processes_with(f"{tmp}/ae-bench-case-") and not list(tmp.glob("ae-bench-case-*")), 120,
                 "the child to end and its folder to go")
        gone = True
    except RuntimeError:
        gone = False
    after = rows_under(work / "r")
    name = signal.Signals(sig).name
    return FaultResult(f"the parent gets {name} while its child runs a case (subprocess launcher)", len(before), len(after),
                       lost(before, after), str(proc.returncode),
                       (f"child {'ended' if gone else 'STILL RUNNING'} {time.monotonic() - start:.1f} s later, temporary "
                        f"folder {'removed' if not list(tmp.glob('ae-bench-case-*')) else 'LEFT'}")
                       + (f"; {last_line(err.split('resume with:')[0])}" if sig != signal.SIGKILL else ""),
                       {"children": children, "gone": gone, "left": [p.name for p in tmp.iterdir()], "stderr": err})


# -- 8. meta.json lost at its rename ---------------------------------------------------------------

def a_meta_json_lost_at_its_rename(work: Path) -> FaultResult:
    """What a kill at meta.json's rename leaves (a header and the file under its temporary name), then ``--resume``."""
    bench_cli(*TWO_CNN_CASES, "--results", "r", cwd=work)
    run_dir = only_run_dir(work / "r")
    (run_dir / "meta.json").rename(run_dir / ".meta.json.k1ll3d.tmp")
    path = run_dir / "results.csv"
    path.write_bytes(path.read_bytes().split(b"\n", 1)[0] + b"\n")  # the header only: no case was measured yet
    (run_dir / "samples.jsonl").unlink()
    before = csv_rows(path)
    again = bench_cli(*TWO_CNN_CASES, "--resume", str(run_dir), cwd=work)
    kept = bench_cli("baseline", str(run_dir), "--store", "bl", cwd=work)
    after = csv_rows(path)
    note = next((line for line in again.stderr.splitlines() if "meta.json was missing" in line), last_line(again.stderr))
    return FaultResult("meta.json lost at its rename (a `.meta.json.*.tmp` left), then `--resume` and `baseline`",
                       len(before), len(after), lost(before, after), f"{again.returncode}; baseline {kept.returncode}",
                       note, {"meta": (run_dir / "meta.json").is_file(), "temps": [p.name for p in run_dir.glob(".*.tmp")],
                              "baseline_rc": kept.returncode, "baseline_err": kept.stderr})


# -- 9. bad values ---------------------------------------------------------------------------------

def _matrix(work: Path, name: str, timing: str, group: str) -> str:
    (work / name).write_text(f"description = 'a bad one'\n\n[timing]\n{timing}\n\n[[group]]\n{group}\n")
    return name


BAD_VALUES: list[tuple[str, Callable[[Path], list[str]]]] = [
    ("`run --min-time nan`", lambda w: ["run", "--min-time", "nan", "--list"]),
    ("`run --case-timeout nan`", lambda w: ["run", "--case-timeout", "nan", "--list"]),
    ("`run --case-timeout inf`", lambda w: ["run", "--case-timeout", "inf"]),
    ("`run --launcher in-process --case-timeout 5`",
     lambda w: ["run", *ONE_CASE, "--families", "cnn", "--launcher", "in-process", "--case-timeout", "5", "--results", "r"]),
    ("a matrix whose `[timing]` says `min_time_s = \"abc\"`",
     lambda w: ["run", "--matrix", _matrix(w, "abc.toml", 'min_time_s = "abc"', "families = ['cnn']"), "--results", "r"]),
    ("a matrix whose `[timing]` says `min_iters = nan`",
     lambda w: ["run", "--matrix", _matrix(w, "nan.toml", "min_iters = nan", "families = ['cnn']"), "--results", "r"]),
    ("a matrix of 10^6 cases, `--list`",
     lambda w: ["run", "--list", "--matrix", _matrix(w, "huge.toml", "", f"families = ['cnn']\nbatch = {list(range(1, 1001))}\n"
                                                     f"latents = {list(range(128, 1128))}")]),
    ("`plan --budget 1e300TiB`", lambda w: ["plan", "--budget", "1e300TiB"]),
]


def a_bad_value(work: Path, label: str, make: Callable[[Path], list[str]]) -> FaultResult:
    before = rows_under(work)
    start = time.monotonic()
    proc = bench_cli(*make(work), cwd=work)
    took = time.monotonic() - start
    after = rows_under(work)
    return FaultResult(f"bad value: {label}", len(before), len(after), lost(before, after), str(proc.returncode),
                       last_line(proc.stderr), {"lines": len(proc.stderr.strip().splitlines()), "seconds": took,
                                                "traceback": traceback_in(proc.stderr), "folders": list((work / "r").glob("*"))})


# -- 10. I/O errors --------------------------------------------------------------------------------

def a_read_only_results_folder(work: Path) -> FaultResult:
    (work / "r").mkdir()
    before = rows_under(work / "r")
    proc = bench_cli("run", *ONE_CASE, "--families", "cnn", "--results", "r", *FAST, cwd=work, inject=["read-only"])
    after = rows_under(work / "r")
    return FaultResult("a read-only results folder", len(before), len(after), lost(before, after), str(proc.returncode),
                       last_line(proc.stderr), {"traceback": traceback_in(proc.stderr)})


def a_disk_that_fills_during_a_row(work: Path) -> FaultResult:
    """The disk fills half-way through the second row (planted), then ``--resume`` once there is room."""
    first = bench_cli(*THREE_CNN_CASES, "--results", "r", cwd=work, inject=["disk-full", "2"])
    run_dir = only_run_dir(work / "r")
    text = (run_dir / "results.csv").read_text()
    before = csv_rows(run_dir / "results.csv")
    whole = text.endswith("\n") and all(None not in r and len(r) == len(before[0]) for r in before)
    hint = _resume_hint(first.stderr)
    again = bench_cli(*shlex.split(hint)[3:], cwd=work) if hint else None
    after = csv_rows(run_dir / "results.csv")
    return FaultResult("the disk fills half-way through a row, then `--resume`", len(before), len(after), lost(before, after),
                       f"{first.returncode} then {again.returncode if again else '-'}",
                       " / ".join(line for line in first.stderr.splitlines()[-2:]),
                       {"whole": whole, "hint": hint, "traceback": traceback_in(first.stderr),
                        "orphans": ok_rows_without_samples(run_dir), "duplicates": duplicates(after)})


def an_unwritable_compare_json(work: Path) -> FaultResult:
    bench_cli("run", *ONE_CASE, "--families", "cnn", "--results", "r", *FAST, cwd=work)
    run_dir = only_run_dir(work / "r")
    (work / "out").mkdir()
    before = rows_under(work / "r")
    proc = bench_cli("compare", str(run_dir), str(run_dir), "--json", "out", "-q", cwd=work)
    after = rows_under(work / "r")
    return FaultResult("`compare ... --json PATH` where PATH cannot be written (a folder)", len(before), len(after),
                       lost(before, after), str(proc.returncode), last_line(proc.stderr),
                       {"traceback": traceback_in(proc.stderr)})


# -- 11. a header-only results.csv -----------------------------------------------------------------

def a_header_only_results_csv(work: Path) -> FaultResult:
    args = ["run", *ONE_CASE, "--families", "cnn", "--launcher", "in-process", *FAST]
    bench_cli(*args, "--results", "r", cwd=work)
    run_dir = only_run_dir(work / "r")
    path = run_dir / "results.csv"
    path.write_bytes(path.read_bytes().split(b"\n", 1)[0] + b"\n")
    before = csv_rows(path)
    report = bench_cli("report", str(run_dir), cwd=work)
    again = bench_cli(*args, "--resume", str(run_dir), cwd=work)
    after = csv_rows(path)
    return FaultResult("a header-only results.csv given to `report`, then `--resume`", len(before), len(after),
                       lost(before, after), f"report {report.returncode}; `--resume` {again.returncode}",
                       last_line(report.stderr), {"traceback": traceback_in(report.stderr), "lines": len(report.stderr.splitlines())})


# -- 12. a refused resume changes nothing; the resume command ---------------------------------------

def a_refused_resume_changes_nothing(work: Path) -> FaultResult:
    """A damaged CSV line and a half-written samples line: refused, and the folder byte for byte as it was."""
    bench_cli(*TWO_CNN_CASES, "--results", "r", cwd=work)
    run_dir = only_run_dir(work / "r")
    path = run_dir / "results.csv"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][: len(lines[1]) // 2]
    path.write_bytes(b"\n".join(lines))
    with open(run_dir / "samples.jsonl", "ab") as f:
        f.write(b'{"case_key": "half a li')
    before, files = csv_rows(path), snapshot(run_dir)
    again = bench_cli(*TWO_CNN_CASES, "--resume", str(run_dir), cwd=work)
    after = csv_rows(path)
    return FaultResult("a damaged results.csv and half a samples line, then `--resume`", len(before), len(after),
                       lost(before, after), str(again.returncode), last_line(again.stderr),
                       {"unchanged": snapshot(run_dir) == files})


def a_resume_of_other_cases(work: Path, change: tuple[str, ...] = ("--modes", "infer,train,embed")) -> FaultResult:
    """``--resume`` with options that select other cases (or other timing) than the run: refused, nothing changed."""
    bench_cli(*TWO_CNN_CASES, "--results", "r", cwd=work)
    run_dir = only_run_dir(work / "r")
    before, files = csv_rows(run_dir / "results.csv"), snapshot(run_dir)
    args = list(TWO_CNN_CASES)
    for i in range(0, len(change), 2):
        args[args.index(change[i]) + 1] = change[i + 1]
    again = bench_cli(*args, "--resume", str(run_dir), cwd=work)
    after = csv_rows(run_dir / "results.csv")
    return FaultResult(f"`--resume` with `{' '.join(change)}`, not the run's options", len(before), len(after),
                       lost(before, after), str(again.returncode), last_line(again.stderr),
                       {"unchanged": snapshot(run_dir) == files})


def a_resume_command_with_odd_characters(work: Path) -> FaultResult:
    """A results folder named ``r it's``: the printed resume command, run as printed by a shell, finishes the run."""
    args = ["run", "--matrix", "smoke", "--families", "cnn", "--sizes", "201x201", "--modes", "infer,train,embed",
            "--results", "r it's", "--launcher", "in-process", "--min-time", "0.5"]  # long enough to be caught half-way
    proc, err, run_csv, before = interrupt_after(args, work, 1, signal.SIGINT, results="r it's")
    hint = _resume_hint(err)
    again = subprocess.run(["sh", "-c", hint], cwd=work, capture_output=True, text=True, timeout=600, env=cli_env()) \
        if hint else None
    after = csv_rows(run_csv)
    return FaultResult("SIGINT with `--results \"r it's\"`, then the printed resume command run by `sh -c`", len(before),
                       len(after), lost(before, after), f"{proc.returncode} then {again.returncode if again else '-'}",
                       f"resume with: {hint}", {"hint": hint, "interpreter": shlex.split(hint)[0] if hint else "",
                                                "duplicates": duplicates(after)})


# -- 13. U+2028 in a family name; NaN and wrong shapes ----------------------------------------------

def a_line_separator_in_a_family_name(work: Path) -> FaultResult:
    family = "tests.plugins:line\u2028separator"
    args = ["run", *ONE_CASE, "--families", f"{family},cnn", "--launcher", "in-process", *FAST]
    first = bench_cli(*args, "--results", "r", cwd=work)
    label = "a U+2028 (LINE SEPARATOR) in a plug-in family's name, then `report` and `--resume`"
    if not (work / "r").is_dir() or not any(p.is_dir() for p in (work / "r").iterdir()):  # refused before any folder
        return FaultResult(label, 0, 0, lost([], []), f"{first.returncode} (refused, no folder)",
                           last_line(first.stderr).replace("\u2028", "<U+2028>"),
                           {"statuses": [], "refusal": first.stderr, "report_err": "", "resume_err": ""})
    run_dir = only_run_dir(work / "r")
    before = csv_rows(run_dir / "results.csv")
    report = bench_cli("report", str(run_dir), cwd=work)
    again = bench_cli(*args, "--resume", str(run_dir), cwd=work)
    after = csv_rows(run_dir / "results.csv")
    told = next((line for line in again.stderr.splitlines() if line.startswith("ae-bench: resuming")), last_line(again.stderr))
    return FaultResult(label, len(before),
                       len(after), lost(before, after), f"{first.returncode}; report {report.returncode}; `--resume` "
                       f"{again.returncode}", told.replace("\u2028", "<U+2028>"),
                       {"statuses": [r["status"] for r in after], "report_err": report.stderr, "resume_err": again.stderr})


def a_model_with_bad_output(work: Path) -> FaultResult:
    return one_failing_case(work, "models returning NaN, and a reconstruction of the wrong shape",
                            "tests.plugins:nan_output,tests.plugins:wrong_shape", "error", "--launcher", "in-process")


SCENARIOS: list[Callable[[Path], FaultResult]] = [
    a_case_that_calls_sys_exit, a_case_that_calls_os_exit, a_child_that_exits_through_libc, a_chatty_child,
    two_runs_in_the_same_second, a_resume_while_the_run_goes_on, a_stop_between_a_rows_two_writes,
    a_baseline_kept_into_its_own_folder, a_parent_killed_under_its_child,
    lambda work: a_parent_killed_under_its_child(work, signal.SIGHUP), a_meta_json_lost_at_its_rename,
    *[(lambda work, label=label, make=make: a_bad_value(work, label, make)) for label, make in BAD_VALUES],
    a_read_only_results_folder, a_disk_that_fills_during_a_row, an_unwritable_compare_json, a_header_only_results_csv,
    a_refused_resume_changes_nothing, a_resume_of_other_cases,
    lambda work: a_resume_of_other_cases(work, ("--min-time", "0.2")), a_resume_command_with_odd_characters,
    a_line_separator_in_a_family_name, a_model_with_bad_output,
]
