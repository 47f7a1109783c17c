"""The run report: ``report.md`` from ``report_template.md``, the CSV tables and the PNG plots.

``python -m bench report RESULTS [--budget 8GiB] [--template PATH] [--out DIR]`` regenerates it
from saved rows (a results folder, or a pytest-benchmark JSON file) without running anything;
``pytest bench`` writes it at the end of a session (``bench/conftest.py``).

Everything is computed in memory first (rows read and checked, tables, figures, the template
rendered); only then are files written, each atomically. So a bad input or a broken template
stops with one line naming the problem and leaves every existing file as it was.

The report is a function of the run's files alone: ``results.csv``, ``samples.jsonl``,
``meta.json``, and the model facts the run wrote when it started (``model_facts.json``: parameter
counts and the flat layout's attention probe; ``plots/attention_maps.png``; see
``bench/core/model_probe.py``). It never builds a model: a fact the folder lacks is reported as
missing, with the command that computes it. The only other numbers are the seed's claims, quoted
from ``data/seed_claims.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from bench.report.companions import Companion, find_companions
from bench.report.defaults import DEFAULT_BUDGET, DEFAULT_TEMPLATE
from bench.report.display import fmt_num, md_table
from bench.report.sections import SECTIONS, TABLE_FILES, csv_pivots, figures, report_inputs
from bench.report.shards import shards_section
from bench.runs.files import atomic_write_bytes, atomic_write_text
from bench.runs.reader import SavedRun, load_run
from bench.units import ACCEPTED, MIB, parse_bytes

REPORT_MD = "report.md"


def parse_budget(text: str) -> float:
    """A memory budget as :func:`bench.units.parse_bytes` reads sizes (``8GiB``, ``6144MiB``,
    ``8GB`` = 10^9 bytes, ``8TiB``) -> MiB. Raises ValueError (one line) for anything else, and for 0."""
    expected = ACCEPTED.replace("; or 0", "")  # a size may be 0, a budget may not
    try:
        size = parse_bytes(text)
    except ValueError as err:
        raise ValueError("--budget: " + str(err).replace("bad memory size", "bad memory budget", 1).replace(ACCEPTED, expected)) from None
    if size <= 0:
        raise ValueError(f"--budget: bad memory budget {text!r}: a budget must be above 0; expected {expected}")
    return size / MIB


# -- the report ---------------------------------------------------------------------------------

@dataclass
class Report:
    markdown: str
    tables: dict[str, pd.DataFrame]
    plots: dict[str, bytes]
    context: dict = field(default_factory=dict)


def load_template(path: Optional[Path] = None):
    """The Jinja2 template, compiled (a syntax error is a ValueError naming the line)."""
    import jinja2

    path = Path(path) if path else DEFAULT_TEMPLATE
    if not path.is_file():
        raise ValueError(f"report template {path} not found" + ("" if path != DEFAULT_TEMPLATE else "; pass --template PATH"))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True, autoescape=False)
    env.filters["md_table"] = md_table
    env.filters["num"] = fmt_num
    try:
        return env.from_string(path.read_text(encoding="utf-8")), path
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"report template {path} line {err.lineno}: {err.message}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"report template {path} is not UTF-8 text: {err}") from None


def build_report(run: SavedRun, budget_mib: float, template_path: Optional[Path] = None,
                 companions: tuple[Companion, ...] = ()) -> Report:
    """Tables, figures and the rendered markdown of ``run`` (with the plan, quality and profile folders of
    ``companions``); nothing is written. Each section of report_template.md has its function in
    ``bench/report/sections.py`` (:data:`~bench.report.sections.SECTIONS`, in the template's order)."""
    import jinja2

    template, template_path = load_template(template_path)
    src = report_inputs(run, budget_mib, companions)
    out_tables = csv_pivots(src)
    ctx: dict[str, Any] = {"budget_mib": budget_mib, "budget": src.budget, "device": src.device, "template": str(template_path)}
    for section in SECTIONS:
        ctx.update(section(src, out_tables))
    figure_ctx, plots = figures(src)  # each placed in its section by the template
    ctx.update(figure_ctx)
    try:
        markdown = template.render(**ctx)
    except jinja2.TemplateError as err:
        raise ValueError(f"report template {template_path}: {err}") from None
    return Report(markdown + shards_section(run), out_tables, plots, ctx)  # a merged run's shards (report/shards.py)


# -- writing --------------------------------------------------------------------------------------

def write_report(source: Path, out: Optional[Path] = None, budget: str = DEFAULT_BUDGET,
                 template: Optional[Path] = None, with_dirs: tuple[Path, ...] = ()) -> Path:
    """Read ``source`` (results folder or pytest-benchmark JSON), build the report, write it.

    Returns the path of ``report.md``. Raises ValueError (nothing written) on bad input.
    """
    budget_mib = parse_budget(budget)
    run = load_run(Path(source))
    if run.rows.empty:  # a header-only results.csv: what a kill before the first row, or a full disk, leaves
        raise ValueError(f"{run.source} holds no rows yet (the run stopped before its first case was written): nothing "
                         "to report; finish it with `python -m bench run ... --resume RUN_DIR`")
    out_dir = Path(out) if out else run.default_out
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output {out_dir} exists and is not a folder")
    folder = Path(run.source) if run.kind == "results folder" else None
    companions = tuple(find_companions(folder, out_dir, run.meta, tuple(with_dirs)))
    report = build_report(run, budget_mib, Path(template) if template else None, companions)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, frame in report.tables.items():
        atomic_write_text(out_dir / TABLE_FILES[key][0], frame.to_csv(index=False))
    for rel, png in report.plots.items():
        atomic_write_bytes(out_dir / rel, png)
    path = out_dir / REPORT_MD
    atomic_write_text(path, report.markdown)
    return path
