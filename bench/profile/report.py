"""The overview of a profile folder: ``profile.md`` (:func:`profile_section`, which a report can
embed), ``summary.csv``, ``categories.csv`` (all cases, long form) and ``roofline.png``, rebuilt
from the cases' ``summary.json`` files, so an interrupted run still has a complete overview.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from bench.profile.attribution import CATEGORIES
from bench.runs.contract import PROFILE_MD
from bench.runs.files import atomic_write_text
from bench.runs.markdown import frame_table
from bench.profile.roofline import OVERHEAD_FRACTION, Roof, RoofPoint, roofline_png


SORT_AXES = ("family", "preset", "size", "latent", "tokenizer", "precision", "checkpointing", "compile", "mode", "batch", "attention")


def load_profiles(out_dir: Path) -> list[dict]:
    """Every ``summary.json`` under ``out_dir``, sorted by case axes (attention last, to compare kernels)."""
    summaries = []
    for path in sorted(Path(out_dir).glob("*/summary.json")):
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a readable profile summary: {err}") from err
    return sorted(summaries, key=lambda s: tuple(str(s.get(a, "")) for a in SORT_AXES))


def categories_long(summaries: list[dict]) -> pd.DataFrame:
    """All profiled cases' categories, one row per (case, category)."""
    rows = [{"case_id": s["case_id"], **{a: s.get(a) for a in SORT_AXES}, "attention_kernel": s.get("attention_kernel", ""),
             **c} for s in summaries if s.get("status") == "ok" for c in s["categories"]]
    return pd.DataFrame(rows)


def compare_categories(summaries: list[dict], across: str = "attention",
                       categories: Iterable[str] = ("attention",)) -> pd.DataFrame:
    """Shares of a step (0..1) per category, side by side across one axis.

    One row per configuration (the case axes other than ``across``), one column per value of
    ``across`` and category, named ``"<value>: <category>"``: with the defaults, ``"flash:
    attention"`` and ``"eager: attention"`` are attention's share of the step with each kernel;
    ``across="preset"`` compares presets instead.
    """
    if across not in SORT_AXES:
        raise ValueError(f"cannot compare across {across!r}; choose one of {', '.join(SORT_AXES)}")
    long = categories_long(summaries)
    if long.empty:
        return long
    long = long[long["category"].isin(list(categories))]
    config = [a for a in SORT_AXES if a != across]
    wide = long.pivot_table(index=config, columns=[across, "category"], values="share", aggfunc="first")
    wide.columns = [f"{value}: {category}" for value, category in wide.columns]
    return wide.reset_index()


def profile_section(out_dir: Path, relative_to: Optional[Path] = None, heading: str = "##") -> str:
    """The markdown section on profiles in ``out_dir``: time by category, attention by kernel,
    roofline. Links are relative to ``relative_to`` (default ``out_dir``), for use in a report."""
    out_dir = Path(out_dir)
    summaries = load_profiles(out_dir)
    base = Path(relative_to) if relative_to is not None else out_dir
    link = lambda name: os.path.relpath(out_dir / name, base)  # noqa: E731
    ok = [s for s in summaries if s.get("status") == "ok"]
    parts = [f"{heading} Where the time goes (profiles)\n",
             "Profiled in runs of their own, never inside a timed run: the profiler's overhead is in the "
             "`profiled ms` column and in nothing else. `step ms` is the same step timed without the profiler. "
             "Shares are self time per category over the wall time of the profiled steps; `sum/wall` checks that "
             "nothing was dropped (what cannot be attributed is `other`).\n"]
    if not ok:
        parts.append("_No case was profiled successfully._\n")
    else:
        device = ok[0]["device_name"]
        used = [c for c in CATEGORIES if any(abs(share_of(s, c)) > 0.0005 for s in ok)]
        frame = pd.DataFrame([{"n": i + 1, "case": f"`{s['case_id']}`",
                               "step_ms": f"{s['plain_step_ms']:.4g}" + (" (noisy)" if s.get("plain_noisy") else ""),
                               "prof_ms": s["profiled_wall_ms"], "coverage": s["coverage"],
                               "kernel": s.get("attention_kernel") or "—",
                               **{c: 100 * share_of(s, c) for c in used}} for i, s in enumerate(ok)])
        parts.append(f"{heading}# Time by category (% of a step, measured on {device})\n")
        parts.append(frame_table(frame, [("n", "#", "d"), ("case", "case", ""), ("step_ms", "step ms", ""),
                                 ("prof_ms", "profiled ms", ".4g"), ("coverage", "sum/wall", ".3f"),
                                 ("kernel", "attention ran", "")] + [(c, c, ".1f") for c in used]))
        parts.append("\n" + _attention_notes(ok, heading))
        parts.append(f"\n{heading}# Roofline\n")
        parts.append("Intensity = FLOPs (torch.utils.flop_counter, plus analytic attention where a fused kernel hides it) "
                     "over the bytes every op reads and writes in eager mode (no fusion, no cache reuse: an upper bound "
                     "on memory traffic, so intensities are lower bounds). Achieved = FLOPs / unprofiled step time. "
                     f"Overhead-bound: below {OVERHEAD_FRACTION:.0%} of the roof at its intensity; otherwise memory-bound "
                     "below the ridge point (peak / bandwidth), compute-bound above.\n")
        roof_rows = [{"n": i + 1, "case": f"`{s['case_id']}`", "gflop": s.get("gflop_per_step"), "mb": s.get("mb_moved_per_step"),
                      "intensity": s.get("intensity"), "achieved": 1e3 * s["achieved_tflops"] if s.get("achieved_tflops") is not None else None,
                      "roof": 1e3 * s["roof_tflops"] if s.get("roof_tflops") is not None else None,
                      "pct": 100 * s["fraction_of_roof"] if s.get("fraction_of_roof") is not None else None,
                      "ridge": s.get("ridge"), "bound": s.get("bound", "—")} for i, s in enumerate(ok)]
        parts.append(frame_table(pd.DataFrame(roof_rows), [
            ("n", "#", "d"), ("case", "case", ""), ("gflop", "GFLOP / step", ".4g"), ("mb", "MB moved / step", ".4g"),
            ("intensity", "FLOP/byte", ".3g"), ("achieved", "achieved GFLOP/s", ".4g"), ("roof", "roof GFLOP/s", ".4g"),
            ("pct", "% of roof", ".1f"), ("ridge", "ridge FLOP/byte", ".3g"), ("bound", "bound", "")]))
        sources = sorted({f"{s['precision']}: {s['peak_source']}; bandwidth {s['bandwidth_gbs']:.4g} GB/s ({s['bandwidth_source']})" for s in ok})
        parts.append("\nRoofs: " + "; ".join(sources) + "\n")
        if (out_dir / "roofline.png").exists():
            parts.append(f"\n![roofline]({link('roofline.png')})\n")
        parts.append("\nPer case: " + ", ".join(f"[{s['case_id']}]({link(s['case_id'] + '/categories.md')})" for s in ok) +
                     " (each folder also has `top_ops.md`, `memory.md` and `trace.json.gz`).\n")
    failed = [s for s in summaries if s.get("status") != "ok"]
    if failed:
        parts.append(f"\n{heading}# Not profiled\n\n" + frame_table(pd.DataFrame(
            [{"case": f"`{s['case_id']}`", "status": s.get("status", "?"), "reason": s.get("reason", "")} for s in failed]),
            [("case", "case", ""), ("status", "status", ""), ("reason", "reason", "")]))
    parts.append(f"\n{heading}# Categories\n\n" + "\n".join(f"- **{c}**: {d}" for c, d in CATEGORIES.items()) + "\n")
    return "\n".join(parts)


def share_of(summary: dict, category: str) -> float:
    """A case summary's share of the wall time in ``category`` (0 when absent)."""
    for row in summary.get("categories", []):
        if row["category"] == category:
            return float(row["share"])
    return 0.0


def _attention_notes(ok: list[dict], heading: str) -> str:
    """One sentence per configuration profiled with several attention kernels."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in ok:
        groups[tuple(str(s.get(a)) for a in SORT_AXES if a != "attention")].append(s)
    lines = []
    for members in groups.values():
        if len(members) < 2:
            continue
        s0 = members[0]
        what = f"{s0['family']} {s0['preset']} {s0['size']} {s0['precision']} {s0['mode']} b{s0['batch']}" + (" ckpt" if s0["checkpointing"] else "")
        each = ", ".join(f"{100 * share_of(m, 'attention'):.1f}% with {m['attention']} "
                         f"({share_of(m, 'attention') * m['profiled_wall_ms']:.4g} of {m['profiled_wall_ms']:.4g} ms profiled; "
                         f"step {m['plain_step_ms']:.4g} ms unprofiled)" for m in members)
        lines.append(f"- {what}: attention is {each}.")
    if not lines:
        return ""
    return f"{heading}# Attention by kernel\n\n" + "\n".join(lines) + "\n"


def roofline_figure(summaries: list[dict]) -> Optional[bytes]:
    """PNG of every profiled case on its device's roofline (one roof per precision)."""
    ok = [s for s in summaries if s.get("status") == "ok" and s.get("intensity")]
    if not ok:
        return None
    roofs: dict[str, Roof] = {}
    for s in ok:
        roofs.setdefault(s["precision"], Roof(s["precision"], s["peak_tflops"] * 1e12, s["bandwidth_gbs"] * 1e9, s["peak_source"]))
    points = [RoofPoint(_point_label(s), s["intensity"], s["achieved_tflops"] * 1e12, s["precision"], s["bound"]) for s in ok]
    device = ok[0]["device_name"]
    return roofline_png(points, list(roofs.values()), f"Roofline, measured on {device} ({ok[0]['device']}); "
                        f"roof from {'the GPU table' if ok[0]['device'] == 'cuda' and ok[0]['peak_source'].startswith('table') else 'measured GEMM and copy rates'}")


def _point_label(s: dict) -> str:
    parts = (s["family"], s["preset"], s["size"], s["precision"], "" if s["attention"] == "none" else s["attention"],
             "ckpt" if s["checkpointing"] else "", s["mode"], f"b{s['batch']}")
    return " ".join(str(x) for x in parts if x != "")


def write_overview(out_dir: Path) -> list[dict]:
    """Rebuild ``profile.md``, ``summary.csv``, ``categories.csv`` and ``roofline.png`` from the case folders."""
    out_dir = Path(out_dir)
    summaries = load_profiles(out_dir)
    flat = [{k: v for k, v in s.items() if k not in ("categories", "memory_mib", "files", "traceback")} for s in summaries]
    atomic_write_text(out_dir / "summary.csv", pd.DataFrame(flat).to_csv(index=False, float_format="%.6g"))
    atomic_write_text(out_dir / "categories.csv", categories_long(summaries).to_csv(index=False, float_format="%.6g"))
    png = roofline_figure(summaries)
    if png is not None:
        tmp = out_dir / ".roofline.png.tmp"
        tmp.write_bytes(png)
        os.replace(tmp, out_dir / "roofline.png")
    atomic_write_text(out_dir / PROFILE_MD, "# Profile\n\n" + profile_section(out_dir, heading="##"))
    return summaries
