"""The history as static pages: one self-contained HTML file per machine key and an ``index.html``.

No script, no server, no network: the figures are matplotlib PNGs inlined as base64, the tables are
plain HTML. The first screen of a machine's page lists the steps found, worst (the largest slowdown)
first; below it the small multiples (median per run with its interval, called steps as red lines,
outlier runs as crosses) and the table of the runs with their full commit hashes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.history.sources import Run, Skipped
from bench.history.steps import History, Step, worst_first

PANELS_PER_FIGURE = 12
COLUMNS = 4
MAX_PAGE_BYTES = 2 * 2 ** 20


@dataclass
class MachineHistory:
    machine: str
    runs: list[Run]                      # in order
    order: str                           # "git" or "time"
    cases: dict[str, History]            # case_key -> its history
    case_ids: dict[str, str]
    run_of: dict[str, list[int]]         # case_key -> each point's index into runs
    skipped: list[Skipped] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)   # the repository's commits, for full hashes

    def steps(self) -> list[tuple[str, Step]]:
        return worst_first([(key, s) for key, h in self.cases.items() for s in h.called])


def file_name(machine: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", machine) + ".html"


def _short(commit: str) -> str:
    return commit[:10] if commit else "?"


def _figures(m: MachineHistory) -> list[str]:
    """Base64 PNGs, PANELS_PER_FIGURE cases each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(m.cases, key=lambda k: m.case_ids[k])
    out = []
    labels = [_short(r.commit)[:7] for r in m.runs]
    for start in range(0, len(keys), PANELS_PER_FIGURE):
        chunk = keys[start:start + PANELS_PER_FIGURE]
        rows = math.ceil(len(chunk) / COLUMNS)
        cols = min(COLUMNS, len(chunk))
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False, dpi=72)
        for ax in axes.flat[len(chunk):]:
            ax.axis("off")
        for ax, key in zip(axes.flat, chunk):
            h, xs = m.cases[key], m.run_of[key]
            med = [iv.median_ms for iv in h.intervals]
            low = [iv.median_ms - iv.low_ms for iv in h.intervals]
            high = [iv.high_ms - iv.median_ms for iv in h.intervals]
            ax.errorbar(xs, med, yerr=[low, high], fmt="o-", ms=3, lw=1, color="#1f4e79", ecolor="#7fa7cf", capsize=2)
            for i in h.outliers:
                ax.plot([xs[i]], [med[i]], "x", color="#d08000", ms=8, mew=2)
            for s in h.called:
                x = (xs[s.index - 1] + xs[s.index]) / 2
                ax.axvline(x, color="#c00000", ls="--", lw=1.2)
                ax.annotate(f"{s.percent:+.0f}%", (x, 0.04), xycoords=("data", "axes fraction"), color="#c00000",
                            fontsize=8, ha="left", va="bottom")
            ax.set_title(m.case_ids[key], fontsize=7)
            ax.set_ylabel("median ms / batch", fontsize=7)
            ax.set_xlim(-0.5, len(m.runs) - 0.5)
            step = max(1, math.ceil(len(m.runs) / 12))
            ax.set_xticks(range(0, len(m.runs), step))
            ax.set_xticklabels(labels[::step], rotation=60, fontsize=6, family="monospace")
            ax.tick_params(axis="y", labelsize=7)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1500px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px;text-align:left}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}.slower{color:#b00000}.faster{color:#006000}
code{font-size:12px}.note{color:#555;font-size:13px}img{max-width:100%;display:block;margin:0.5em 0}"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def machine_page(m: MachineHistory, command: str, min_step: float, confidence: float) -> str:
    e = html.escape
    steps = m.steps()
    parts = [f"<h1>Speed over commits: {e(m.machine)}</h1>",
             f"<p class=\"note\">{len(m.runs)} run(s), {len(m.cases)} case(s); runs in {'git commit' if m.order == 'git' else 'recorded time'} "
             f"order. A step is called when the {confidence:.0%} interval of its size excludes no change and it is at "
             f"least {min_step:.0%}. Made by <code>{e(command)}</code></p>",
             *[f"<p class=\"note\">Each commit measured by <code>{e(c)}</code> in a worktree of it</p>"
               for c in sorted({r.measured_by for r in m.runs if r.measured_by})],
             f"<h2 id=\"steps\">Steps found, worst first: {len(steps)}</h2>"]
    if steps:
        parts.append("<p class=\"note\">Runs made one after another on a shared machine drift with its load: "
                     "confirm a step by measuring its two commits alternately in one job (the last column).</p>")
        parts.append("<table><tr><th>case</th><th>change</th><th>interval</th><th>came in after</th><th>by</th>"
                     "<th>before (ms)</th><th>after (ms)</th><th>confirm with</th></tr>")
        for key, s in steps:
            parts.append(f"<tr class=\"{s.direction}\"><td>{e(m.case_ids[key])}</td><td class=\"num {s.direction}\">"
                         f"{s.percent:+.1f}%</td><td class=\"num\">{(s.low - 1) * 100:+.1f}% to {(s.high - 1) * 100:+.1f}%</td>"
                         f"<td><code title=\"{e(s.commit_before)}\">{e(_short(s.commit_before))}</code></td>"
                         f"<td><code title=\"{e(s.commit_after)}\">{e(_short(s.commit_after))}</code></td>"
                         f"<td class=\"num\">{s.before_ms:.2f}</td><td class=\"num\">{s.after_ms:.2f}</td>"
                         f"<td><code>python -m bench ab {e(_short(s.commit_before))} {e(_short(s.commit_after))} "
                         f"-k {e(m.case_ids[key])}</code></td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No step: no case's speed changed by more than its noise.</p>")
    unjudged = [(k, s) for k, h in m.cases.items() for s in h.steps if not s.called]
    if unjudged:
        parts.append(f"<p class=\"note\">{len(unjudged)} proposed split(s) not called: "
                     + "; ".join(f"{e(m.case_ids[k])} at {e(_short(s.commit_after))}: {e(s.reason)}" for k, s in unjudged[:20])
                     + (" ..." if len(unjudged) > 20 else "") + "</p>")
    parts.append("<h2>Each case over the runs</h2><p class=\"note\">Median time per batch (ms) with its interval "
                 "(over processes where a run had several, else over iterations); red dashed: a called step; orange "
                 "cross: an outlier run (stepped away and back).</p>")
    parts += [f"<img alt=\"history of cases {i * PANELS_PER_FIGURE + 1}..\" src=\"data:image/png;base64,{png}\">"
              for i, png in enumerate(_figures(m))]
    parts.append("<h2>Runs</h2><table><tr><th>#</th><th>commit</th><th>recorded</th><th>cases</th><th>source</th></tr>")
    for i, r in enumerate(m.runs):
        parts.append(f"<tr><td class=\"num\">{i}</td><td><code>{e(r.commit or '?')}{' (dirty)' if r.dirty else ''}</code></td>"
                     f"<td>{e(r.created)}</td><td class=\"num\">{len(r.cases)}</td><td><code>{e(str(r.source))}</code></td></tr>")
    parts.append("</table>")
    if m.skipped:
        parts.append("<h2>Commits not measured</h2><table><tr><th>commit</th><th>why</th></tr>")
        parts += [f"<tr><td><code>{e(s.commit)}</code></td><td>{e(s.reason)}</td></tr>" for s in m.skipped]
        parts.append("</table>")
    return _page(f"history {m.machine}", "\n".join(parts))


def index_page(machines: list[MachineHistory], command: str) -> str:
    e = html.escape
    parts = ["<h1>Speed over commits</h1>", f"<p class=\"note\">Made by <code>{e(command)}</code></p>",
             "<table><tr><th>machine</th><th>runs</th><th>cases</th><th>steps found</th><th>worst</th></tr>"]
    for m in sorted(machines, key=lambda m: m.machine):
        steps = m.steps()
        worst = f"{m.case_ids[steps[0][0]]}: {steps[0][1].percent:+.1f}% at {_short(steps[0][1].commit_after)}" if steps else ""
        parts.append(f"<tr><td><a href=\"{e(file_name(m.machine))}\">{e(m.machine)}</a></td><td class=\"num\">{len(m.runs)}</td>"
                     f"<td class=\"num\">{len(m.cases)}</td><td class=\"num\">{len(steps)}</td><td>{e(worst)}</td></tr>")
    parts.append("</table>")
    return _page("speed over commits", "\n".join(parts))


def steps_json(m: MachineHistory) -> str:
    return json.dumps({"machine": m.machine, "order": m.order, "runs": [{"commit": r.commit, "created": r.created,
                                                                      "source": str(r.source)} for r in m.runs],
                       "steps": [{"case_key": k, "case_id": m.case_ids[k], **s.as_dict()} for k, s in m.steps()],
                       "skipped": [{"commit": s.commit, "reason": s.reason} for s in m.skipped]}, indent=1) + "\n"
