"""A run of the speed sweep, started and ended the same way by both faces (``python -m bench run``
and ``pytest bench``): one folder, one writer, one launcher, one timer.

    run = start_run(selection, results_root, entry="cli", command=[...], launcher="auto")
    for case in run.pending(selection.cases):
        run.measure(case)          # the launcher measures it; the row is on disk when this returns
    print("\\n".join(end_run(run)))  # summary table, where the rows are, the report (or how to retry it)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bench.core.cases import Case
from bench.core.launchers import choose_launcher
from bench.core.measure import Measurement
from bench.core.selection import Selection
from bench.runs.provenance import new_run_id, run_meta
from bench.runs.writer import RunWriter


@dataclass
class Run:
    selection: Selection
    run_id: str
    run_dir: Path
    writer: RunWriter
    launcher: object
    done: set[str] = field(default_factory=set)  # case keys measured by an earlier, resumed attempt
    rows: list[dict] = field(default_factory=list)

    def pending(self, cases: list[Case]) -> list[Case]:
        """The cases of ``cases`` this run has not measured yet (all of them unless resumed)."""
        return [c for c in cases if c.key not in self.done]

    def measure(self, case: Case) -> Measurement:
        """Measure one case through the run's launcher and append its row (and samples) to the run folder."""
        s = self.selection
        measurement = self.launcher.run(case, s.device, s.facts, s.settings, self.run_id)
        self.writer.append(measurement.row, measurement.samples_s)
        self.rows.append(measurement.row)
        return measurement

    def close(self) -> None:
        """Stop a child process still running (an interrupted session)."""
        self.launcher.close()


def start_run(selection: Selection, results_root: Path, entry: str, command: list[str], launcher: str = "auto",
              case_timeout_s: Optional[float] = None, resume: Optional[Path] = None) -> Run:
    """Open a run folder (or reopen ``resume``), record its provenance and calibration, choose the launcher."""
    from bench.core.model_facts import write_model_facts
    from bench.trackers.calibration import calibrate

    chosen = choose_launcher(launcher, selection.device, case_timeout_s)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "results.csv").is_file():
            raise ValueError(f"--resume {run_dir}: not a results folder (no results.csv in it)")
        writer = RunWriter(run_dir)
        return Run(selection, run_dir.name, run_dir, writer, chosen, done=writer.done_keys())
    run_id = new_run_id(selection.facts.slug)
    run_dir = Path(results_root) / run_id
    meta = run_meta(selection.facts, selection.matrix.name, command,
                    {"entry": entry, "launcher": chosen.name, "settings": selection.settings.__dict__},
                    calibrate(selection.device))
    writer = RunWriter(run_dir, meta)
    write_model_facts(run_dir, selection.cases)
    return Run(selection, run_id, run_dir, writer, chosen)


def end_run(run: Run) -> list[str]:
    """Close the run: the console summary, where the rows are, and the report written from them."""
    from bench.core.console import summary_table
    from bench.report.build import write_report

    lines = [summary_table(run.rows), f"results: {run.writer.csv_path}"]
    try:
        lines.append(f"report: {write_report(run.run_dir)}")
    except Exception as err:  # noqa: BLE001 - a report problem must not hide the rows measured above
        lines.append(f"report not written: {type(err).__name__}: {err}; retry with `python -m bench report {run.run_dir}`")
    return lines
