"""The report's display tables: figures formatted with their units, as markdown.

A display table is a frame of strings whose headers carry the units (:func:`show`); the template
renders one with ``{{ name | md_table }}``. Section 1, the run's facts, is built here too.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import pandas as pd

from bench.report.claims import fmt_count
from bench.runs.markdown import markdown_table
from bench.runs.reader import SavedRun
from bench.runs.schema import PHASE_COLUMNS


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt_num(value: Any, digits: int = 3) -> str:
    """Three significant figures, thousands separated; an empty cell is a dash."""
    if missing(value):
        return "—"
    value = float(value)
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


FORMATS: dict[str, Callable[[Any], str]] = {
    "text": lambda v: "—" if missing(v) or v == "" else str(v),
    "int": lambda v: "—" if missing(v) else f"{int(v):,d}",
    "num": fmt_num,
    "mib": lambda v: "—" if missing(v) else f"{float(v):,.0f}",
    "ratio": lambda v: "—" if missing(v) else f"{float(v):.2f}×",
    "pct": lambda v: "—" if missing(v) else f"{float(v):.1f} %",
    "frac_pct": lambda v: "—" if missing(v) else f"{float(v) * 100:.1f} %",
    "count": lambda v: "—" if missing(v) else fmt_count(float(v)),
    "bool": lambda v: "—" if missing(v) else ("yes" if v else "no"),
}


def show(frame: pd.DataFrame, spec: list[tuple[str, str, str]]) -> pd.DataFrame:
    """A display table: ``spec`` is ``(column, header with unit, format)``; cells become strings."""
    out = pd.DataFrame({header: [FORMATS[kind](v) for v in frame[column]] if column in frame else []
                        for column, header, kind in spec})
    return out


def md_table(frame: Optional[pd.DataFrame]) -> str:
    """A markdown table of a display frame (pipes in cells escaped); empty frames render nothing."""
    if frame is None or frame.empty:
        return ""
    return markdown_table(list(frame.columns), frame.itertuples(index=False))


def run_facts(run: SavedRun, model_facts: str) -> pd.DataFrame:
    """Section 1: the run's provenance (meta.json, else the rows), one fact a line; ``model_facts`` says what the model facts are."""
    meta, rows = run.meta, run.rows
    device = meta.get("device", {}) if isinstance(meta.get("device"), dict) else {}
    unknown = "not recorded"

    def first(*values: Any) -> str:
        for v in values:
            if not missing(v) and v not in ("", None):
                return str(v)
        return unknown

    def row_value(column: str) -> Any:
        values = [v for v in rows[column] if not missing(v) and v != ""]
        return values[0] if values else None

    run_ids = sorted({r for r in rows["run_id"] if r})
    calibration = meta.get("calibration") or {}
    calibration_text = unknown
    if calibration.get("gemm_ms") is not None:
        calibration_text = (f"{calibration['gemm_n']:g}² fp32 GEMM {calibration['gemm_ms']:.3g} ms, "
                            f"{calibration['copy_mib']:g} MiB copy {calibration['copy_ms']:.3g} ms")
    settings = meta.get("settings") or {}
    settings_text = ", ".join(f"{k} {v}" for k, v in settings.items()) if settings else unknown
    memory = device.get("total_memory_mib")
    command_text = first(meta.get("command"))
    facts = [
        ("run", ", ".join(run_ids) or unknown),
        ("source", f"{run.source} ({run.kind})"),
        ("device", f"{first(device.get('name'), row_value('device_name'))} ({first(device.get('type'), row_value('device'))})"),
        ("device memory", f"{float(memory):,.0f} MiB" if not missing(memory) and memory else unknown),
        ("driver", first(device.get("driver"), "none (no NVIDIA driver)" if run.device_type == "cpu" else None)),
        ("torch", first(device.get("torch"), row_value("torch"))),
        ("CUDA / cuDNN", f"{first(device.get('cuda'))} / {first(device.get('cudnn'))}" if device.get("cuda") else
         ("none (CPU build or CPU run)" if run.device_type == "cpu" else unknown)),
        ("torch threads", first(device.get("threads"), row_value("threads"))),
        ("date", first(meta.get("created"), row_value("timestamp"))),
        ("commit", first(meta.get("commit"))),
        ("matrix", first(meta.get("matrix"))),
        ("timing settings", settings_text),
        ("calibration", calibration_text),
        ("reproduce the run", f"`{command_text}`" + (f" at commit {meta['commit']}" if meta.get("commit") else "")
         if command_text != unknown else unknown),
        ("model facts", model_facts),
        ("regenerate this report", f"`python -m bench report {run.source}`"),
    ]
    load = meta["load"].get("start") if isinstance(meta.get("load"), dict) else None
    if isinstance(load, dict) and load.get("cores"):  # a CPU run: was the machine busy?
        said = [f"{load['busy_cores']:.1f} of {load['cores']} cores busy with other work"] if "busy_cores" in load else []
        said += [f"1-minute load average {load['load_1min']:.2f}"] if "load_1min" in load else []
        facts.insert(8, ("machine load at the start", f"{', '.join(said)} (torch {load['threads']} threads)"))
    shares = time_shares(rows, meta)
    if shares is not None:
        facts.append(("timed loops", shares))
    return pd.DataFrame(facts, columns=["fact", "value"])


# (row column or meta.json time key, what the report calls it), in the order a run spends them
PHASES = (("start_s", "run start (calibration, peaks, model facts)"), ("build_s", "model builds"),
          ("warmup_s", "warm-up steps"), ("timed_loop_s", "timed loops"), ("memory_pass_s", "memory passes"),
          ("prediction_s", "memory-model predictions"), ("flops_s", "FLOP counts"), ("check_s", "output checks"),
          ("within_cases_s", "the rest of the cases (memory release, between phases)"),
          ("between_cases_s", "between cases (launcher, rows written)"), ("end_s", "run end (peaks again)"))


def phase_seconds(rows: pd.DataFrame, meta: dict) -> Optional[dict[str, float]]:
    """Seconds per phase of the whole run (``PHASES``' keys) and ``wall_s``, or None for a run that did not
    record them (written before the phase columns, or a merge of shards whose meta.json has no ``time``)."""
    spent = meta.get("time") if isinstance(meta.get("time"), dict) else {}
    wall = spent.get("wall_s")
    if not isinstance(wall, (int, float)) or wall <= 0 or "case_s" not in rows:
        return None
    cases = pd.to_numeric(rows["case_s"], errors="coerce")
    if cases.isna().all():
        return None
    total = {key: float(pd.to_numeric(rows[key], errors="coerce").sum()) if key in rows else 0.0
             for key in PHASE_COLUMNS if key != "case_s"}
    in_cases = float(cases.sum())
    total["within_cases_s"] = max(0.0, in_cases - sum(total.values()))
    total.update(start_s=float(spent.get("start_s") or 0.0), end_s=float(spent.get("end_s") or 0.0))
    total["between_cases_s"] = max(0.0, float(wall) - in_cases - total["start_s"] - total["end_s"])
    total["wall_s"] = float(wall)
    return total


def time_shares(rows: pd.DataFrame, meta: dict) -> Optional[str]:
    """"N% of the run's wall time", and the phases behind it (seconds and shares, largest first)."""
    seconds = phase_seconds(rows, meta)
    if seconds is None:
        return None
    wall = seconds["wall_s"]
    parts = sorted(((seconds[key], name) for key, name in PHASES if seconds[key] > 0), reverse=True)
    behind = "; ".join(f"{name} {value:,.1f} s ({100 * value / wall:.0f}%)" for value, name in parts)
    return (f"{100 * seconds['timed_loop_s'] / wall:.0f}% of the run's wall time ({wall:,.1f} s from its start to "
            f"its report, the report not counted): {behind}")
