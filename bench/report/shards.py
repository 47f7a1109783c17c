"""The section a merged run's report ends with (``python -m bench merge``, bench/scale/merge.py):
which shard ran where, at which commit, and, when the shards ran on different devices, each
device's rows on their own. Read from ``meta.json`` (``merged_from``, ``devices``) and the rows alone.
"""

from __future__ import annotations

import math

from bench.runs.markdown import markdown_table
from bench.runs.reader import SavedRun

ROWS_PER_DEVICE = 60  # rows shown per device; results.csv has them all


def shards_section(run: SavedRun) -> str:
    """Markdown appended to report.md: empty unless the run is a merge of shards."""
    shards = run.meta.get("merged_from") if isinstance(run.meta.get("merged_from"), list) else []
    if not shards:
        return ""
    lines = ["", "## Shards and devices", "",
             f"This run merges {len(shards)} run(s) (`python -m bench merge`); each row keeps its shard's `run_id`.", ""]
    table = [[s.get("shard") or "—", s.get("run_id", "—"), _device_name(s.get("device")), s.get("commit") or "—",
              s.get("rows", "—"), s.get("created") or "—"] for s in shards if isinstance(s, dict)]
    lines.append(markdown_table(["shard", "run", "device", "commit", "rows", "started"], table))
    failed = run.meta.get("failed_shards") if isinstance(run.meta.get("failed_shards"), list) else []
    for item in failed:
        lines += ["", f"- shard {item.get('shard')}: {item.get('job')} {item.get('what')}; its {item.get('cases')} unmeasured "
                      "case(s) are `error` rows with the job's log tail (resume the sweep to measure them)"]
    devices = run.meta.get("devices") if isinstance(run.meta.get("devices"), list) else []
    if len(devices) > 1:
        lines += ["", f"**{len(devices)} devices.** Each row's figures are its own device's (`device_name`); the tables "
                      "above pair and rank cases across devices, so a ratio or a headline there may compare two "
                      "machines. Per device:"]
        for device in devices:
            lines += ["", f"### {device.get('name') or device.get('device')} ({device.get('type') or '?'})", ""]
            lines.append(_device_rows(run, set(device.get("runs") or [])))
    return "\n".join(lines) + "\n"


def _device_name(device: object) -> str:
    if not isinstance(device, dict):
        return "—"
    return f"{device.get('name') or '?'} ({device.get('type') or '?'})"


def _device_rows(run: SavedRun, run_ids: set[str]) -> str:
    rows = run.rows[run.rows["run_id"].isin(run_ids)]
    counts = ", ".join(f"{n} {s}" for s, n in rows["status"].value_counts().items())
    shown = rows.head(ROWS_PER_DEVICE)
    body = [[r.case_id, r.status, _num(r.images_per_s), _num(r.median_ms), _num(r.mfu * 100 if r.mfu == r.mfu else None)]
            for r in shown.itertuples()]
    text = f"{len(rows)} rows ({counts or 'none'}).\n\n" + markdown_table(
        ["case", "status", "throughput (images/s)", "median (ms/batch)", "MFU (%)"], body)
    if len(rows) > len(shown):
        text += f"\n\n{len(rows) - len(shown)} more rows of this device in results.csv."
    return text


def _num(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.3g}"
