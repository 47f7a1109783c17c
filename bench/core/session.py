"""A run of the speed sweep, started and ended the same way by both faces (``python -m bench run``
and ``pytest bench``): one folder, one writer, one launcher, one timer.

    run = start_run(selection, results_root, entry="cli", command=[...], launcher="auto")
    for case in run.pending(selection.cases):
        run.measure(case)          # the launcher measures it; the row is on disk when this returns
    print("\\n".join(end_run(run, write_report)))  # summary table, where the rows are, the report (or how to retry it)
"""

from __future__ import annotations

import csv
import gc
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from bench.core.cases import Case
from bench.core.launchers import choose_launcher
from bench.core.measure import Measurement
from bench.core.validity import MODELS_ENV
from bench.core.selection import Selection
from bench.runs.files import FolderLock, atomic_write_text
from bench.runs.provenance import claim_run_dir, run_meta
from bench.runs.contract import META_JSON
from bench.runs.writer import RunWriter, csv_records


@dataclass
class Run:
    selection: Selection
    run_id: str
    run_dir: Path
    writer: RunWriter
    launcher: object
    done: set[str] = field(default_factory=set)  # case keys measured by an earlier, resumed attempt
    rows: list[dict] = field(default_factory=list)
    lock: Optional[FolderLock] = None  # the folder's lock: one writer at a time, released by end_run
    notes: list[str] = field(default_factory=list)  # what a resume repaired, and a busy CPU's warning
    start_peaks: Optional[dict] = None  # the GEMM peaks and timer floor measured at the start (meta.json "peaks")
    peak_notes: Optional[list[str]] = None  # set by settle(): what the end-of-run peaks changed
    began: float = field(default_factory=time.perf_counter)  # when start_run began (perf_counter seconds)
    start_s: Optional[float] = None  # seconds start_run took (calibration, peaks, model facts)
    end_s: float = 0.0  # seconds the run's end took before its report (the peaks measured again)
    report_error: Optional[str] = None  # set by end_run when the report could not be written (the run then fails)

    def pending(self, cases: list[Case]) -> list[Case]:
        """The cases of ``cases`` this run has not measured yet (all of them unless resumed)."""
        return [c for c in cases if c.key not in self.done]

    def measure(self, case: Case) -> Measurement:
        """Measure one case through the run's launcher and append its row (and samples) to the run folder."""
        s = self.selection
        if s.settings.processes > 1 and not case.skip:  # fresh processes, one after another (bench/core/processes.py)
            from bench.core.processes import measure_processes

            measurement = measure_processes(lambda: self.launcher.run(case, s.device, s.facts, s.settings, self.run_id),
                                            s.settings.processes)
        else:
            measurement = self.launcher.run(case, s.device, s.facts, s.settings, self.run_id)
        self.writer.append(measurement.row, measurement.samples_s, measurement.process_index)
        self.rows.append(measurement.row)
        return measurement

    def settle(self) -> list[str]:
        """Measure the peaks again and rate the rows against the settled figures (once; end_run calls it,
        pytest calls it earlier, before pytest-benchmark saves its JSON, so both hold the same MFU)."""
        if self.peak_notes is None:
            began = time.perf_counter()
            self.peak_notes = _settle_peaks(self)
            self.end_s += time.perf_counter() - began
        return self.peak_notes

    def close(self) -> None:
        """Stop a child process still running (an interrupted session); the heap frozen by start_run thaws."""
        self.launcher.close()
        _thaw()


def start_run(selection: Selection, results_root: Path, entry: str, command: list[str], launcher: str = "auto",
              case_timeout_s: Optional[float] = None, resume: Optional[Path] = None) -> Run:
    """Open a run folder (or reopen ``resume``), record its provenance and calibration, choose the launcher."""
    from bench.core.model_probe import write_model_facts
    from bench.trackers.calibration import calibrate
    from bench.trackers.device import cpu_load, oversubscribed

    from bench.core.resume import record_resume, reopen, selection_fingerprint
    from bench.runs.selection import selection_record, write_selection

    began = time.perf_counter()
    if selection.settings.processes > 1 and launcher in ("auto", "in-process"):
        if launcher == "in-process":
            raise ValueError(f"--processes {selection.settings.processes}: each process is a fresh child; the in-process "
                             "launcher has one process (use --launcher subprocess or auto)")
        launcher = "subprocess"
    from bench.core.model_probe import is_plugin

    if launcher == "auto" and any(is_plugin(c.family) for c in selection.cases if not c.skip):
        launcher = "subprocess"  # user code: a factory or step that exits, hangs or crashes costs its row, never the run
    chosen = choose_launcher(launcher, selection.device, case_timeout_s)
    start_peaks = _start_peaks(selection)
    load = cpu_load() if selection.device.type == "cpu" else {}
    warning = oversubscribed(load)
    warnings = [warning] if warning else []

    whole = [{"case_key": c.key, "case_id": c.id, **c.fields()} for c in (selection.whole or selection.cases)]

    def make_meta() -> dict:
        meta = run_meta(selection.facts, selection.matrix.name, command,
                        {"entry": entry, "launcher": chosen.name, "settings": selection.settings.__dict__,
                         **selection_fingerprint(selection)},
                        calibrate(selection.device))
        meta["peaks"] = {"start": start_peaks}
        meta["selection"] = selection_record(whole, selection.shard.split(" ")[0])
        if load:
            meta["load"] = {"start": load}
        return meta

    if resume is not None:
        run_dir = Path(resume)
        writer, lock, notes = reopen(run_dir, selection, make_meta)  # refused: one line, the folder unchanged
        done = writer.done_keys()
        record_resume(run_dir, command if command is not None else [], len(done),
                      sum(1 for c in selection.cases if c.key not in done))
        return _started(Run(selection, run_dir.name, run_dir, writer, chosen, done=done, lock=lock,
                            notes=notes + warnings, start_peaks=start_peaks, began=began))
    meta = make_meta()
    run_dir = claim_run_dir(results_root, selection.facts.slug)  # a new folder, never another run's
    lock = FolderLock(run_dir).acquire()
    writer = RunWriter(run_dir, meta)
    write_selection(run_dir, whole)  # what a merge of this run's shards checks itself against
    write_model_facts(run_dir, selection.cases)
    return _started(Run(selection, run_dir.name, run_dir, writer, chosen, lock=lock, notes=warnings,
                        start_peaks=start_peaks, began=began))


def _started(run: Run) -> Run:
    """The run is open: note how long opening took, and freeze the objects alive now (torch, the imports, the
    run's own) out of the garbage collector's reach until the run ends. Each case's release, the memory pass and
    the memory model's trace call ``gc.collect()``; over the whole heap that took about 0.3 s a call here
    (2 cores, torch 2.13), over the objects made since the freeze it takes microseconds. Frozen objects are
    still freed when their count of references drops to zero; ``end_run`` unfreezes them."""
    gc.collect()
    gc.freeze()
    os.environ[MODELS_ENV] = tempfile.mkdtemp(prefix="ae-bench-memory-models-")  # children inherit it (child_env)
    run.start_s = time.perf_counter() - run.began
    return run


def _thaw() -> None:
    """The run's end (or its interruption): the heap back in the collector's reach, the shared models removed."""
    gc.unfreeze()
    folder = os.environ.pop(MODELS_ENV, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _start_peaks(selection: Selection) -> dict:
    """The timer's floor and, for the precisions the selection runs whose peak is measured (a CPU, an
    unlisted GPU), the GEMM peaks; the cases of this process are rated against these."""
    from bench.trackers.calibration import measure_peaks, peak_dtype, use_run_peaks
    from bench.trackers.device import PEAK_DTYPE, lookup_gpu

    device, facts = selection.device, selection.facts
    listed = facts.type == "cuda" and lookup_gpu(facts.name) is not None
    dtypes = () if listed else tuple(sorted({peak_dtype(device.type, PEAK_DTYPE[c.precision]) for c in selection.cases
                                             if not c.skip and c.precision in PEAK_DTYPE}))
    if not dtypes and device.type == "cuda":
        return {}  # a listed GPU: table peaks, and each case's child knows its own timer floor
    measured = measure_peaks(device, dtypes)
    use_run_peaks(device.type, measured)
    return measured


def end_run(run: Run, write_report: Callable[[Path], Path], settle: bool = True) -> list[str]:
    """Close the run: the console summary, where the rows are, and the report written from them by
    ``write_report`` (the face passes ``bench.report.build.write_report``: the engine imports no report).

    ``settle=False`` (a stopped session, whose time before SIGKILL is short): the peaks are not measured
    again (seconds on a CPU); the rows keep the start figures' MFU, and a line says so."""
    from bench.core.commandline import rerun_command
    from bench.core.console import summary_table

    if settle:
        peak_lines = run.settle()  # before the summary: a corrected peak changes the rows' MFU
    else:
        peak_lines = [NOT_SETTLED] if run.start_peaks and run.start_peaks.get("peaks") and run.peak_notes is None else []
    _thaw()
    lines = [summary_table(run.rows), f"results: {run.writer.csv_path}"] + peak_lines
    _record_time(run)
    try:
        lines.append(f"report: {write_report(run.run_dir)}")
    except Exception as err:  # noqa: BLE001 - a report problem must not hide the rows measured above
        run.report_error = f"{type(err).__name__}: {err}"
        lines.append(f"report not written: {type(err).__name__}: {err}; retry with `{rerun_command(['report', str(run.run_dir)])}`")
    if run.lock is not None:
        run.lock.release()
    return lines


def _record_time(run: Run) -> None:
    """Add this attempt's wall seconds (from ``start_run`` to the report, which is not counted) to meta.json's
    ``time``: the denominator of the report's "timed loops: N% of the run's wall time"."""
    meta_path = run.run_dir / META_JSON
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        before = meta.get("time") if isinstance(meta.get("time"), dict) else {}
        now = {"wall_s": time.perf_counter() - run.began, "start_s": run.start_s or 0.0, "end_s": run.end_s}
        meta["time"] = {key: float(before.get(key) or 0.0) + value for key, value in now.items()}
        meta["time"]["attempts"] = int(before.get("attempts") or 0) + 1
        atomic_write_text(meta_path, json.dumps(meta, indent=2, default=str) + "\n")
    except (OSError, ValueError, TypeError):
        pass  # the rows stand; the report then leaves out the share of the wall time


NOT_SETTLED = ("GEMM peaks not measured again: the run was stopped; MFU is taken against the start figures "
               "(meta.json peaks.start)")


def _settle_peaks(run: Run) -> list[str]:
    """The run's end: measure the peaks again, settle the figure each precision is rated against
    (:func:`~bench.trackers.calibration.compare_peaks`), rate again the rows it changes (rewriting
    them in results.csv), record it all in meta.json, and say when the machine was busy."""
    from bench.core.validity import achieved_by_dtype, rerate_rows
    from bench.trackers.calibration import BUSY_DISAGREEMENT, compare_peaks, measure_peaks

    start = run.start_peaks
    if not start or not start.get("peaks"):
        return []
    device = run.selection.device
    try:
        end = measure_peaks(device, tuple(start["peaks"]))
    except Exception as err:  # noqa: BLE001 - the rows stand as measured; say why they were not re-checked
        return [f"GEMM peaks not measured again at the end ({type(err).__name__}: {err}): the rows use the start figures"]
    settled = compare_peaks(start["peaks"], end.get("peaks") or {}, achieved_by_dtype(run.rows, device.type))
    changed = rerate_rows(run.rows, device.type, settled, start.get("timer_floor_ms"))
    notes = []
    for dtype, item in settled.items():
        used = f"MFU is taken against {item['used_tflops']:.3g} TFLOP/s ({item['used_from']})"
        if item["busy"]:
            notes.append(f"{dtype} GEMM peak: {item['start_tflops']:.3g} TFLOP/s at the start, {item['end_tflops']:.3g} at the "
                         f"end ({item['disagreement_pct']:.0f}% apart, over {BUSY_DISAGREEMENT:.0%}): the machine was busy; {used}")
        if item["raised"]:
            notes.append(f"{dtype} GEMM peak measured ({item['measured_tflops']:.3g} TFLOP/s) is below the rate "
                         f"{item['raised_by']} achieved: raised to it; {used}")
    try:
        if changed:
            _rewrite_rows(run, changed)
        meta_path = run.run_dir / META_JSON
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        meta["peaks"] = {"start": start, "end": end, "settled": settled, "busy_threshold_pct": 100 * BUSY_DISAGREEMENT,
                         "rows_rerated": len(changed), "notes": notes}
        atomic_write_text(meta_path, json.dumps(meta, indent=2, default=str) + "\n")
    except (OSError, ValueError) as err:
        notes.append(f"the settled peaks could not be written ({type(err).__name__}: {err})")
    return notes + ([f"{len(changed)} row(s) rated again against the settled peaks"] if changed else [])


_RERATED = ("peak_tflops", "mfu", "peak_source", "status", "reason")


def _rewrite_rows(run: Run, changed: list[dict[str, Any]]) -> None:
    """Put the re-rated columns of ``changed`` into results.csv (one atomic rewrite; the run holds the folder's lock)."""
    path = run.writer.csv_path
    records = csv_records(path.read_text(encoding="utf-8"), path)
    header = records[0]
    index = {name: header.index(name) for name in ("case_key",) + _RERATED}
    by_key = {row["case_key"]: row for row in changed}
    for record in records[1:]:
        row = by_key.get(record[index["case_key"]]) if len(record) == len(header) else None
        if row is not None:
            for name in _RERATED:
                value = row[name]
                text = f"{value:.6g}" if isinstance(value, float) else " ".join(str(value).splitlines())
                record[index[name]] = "" if value is None else text
    out = io.StringIO(newline="")
    csv.writer(out).writerows(records)
    atomic_write_text(path, out.getvalue())
