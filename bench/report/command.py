"""``python -m bench report``: report.md, table CSVs and plots from a saved run."""

from __future__ import annotations

from pathlib import Path

from bench.core.commandline import EXIT_OK, Command
from bench.report.defaults import DEFAULT_BUDGET


def _report_args(parser) -> None:
    parser.add_argument("results", metavar="RESULTS",
                        help="a results folder (results.csv, samples.jsonl, meta.json, model_facts.json) or a "
                             "pytest-benchmark JSON file")
    parser.add_argument("--budget", default=DEFAULT_BUDGET,
                        help=f"memory budget for the headline and the memory plot, e.g. 8GiB, 6144MiB or 8GB (10^9 bytes) "
                             f"[default: {DEFAULT_BUDGET}]")
    parser.add_argument("--with", dest="with_dirs", metavar="DIR", action="append", default=[],
                        help="a plan, quality or profile folder whose summary the report includes and links (repeat for "
                             "several); a plan given here is the one the first screen answers from [default: the run "
                             "folder's own plan, and quality runs beside it of the same commit and device]")
    parser.add_argument("--template", default=None, help="Jinja2 template [default: the package's bench/report/report_template.md, which report_template.md at the repository top links to]")
    parser.add_argument("--out", default=None,
                        help="folder for report.md, the tables and plots [default: the results folder; for a JSON file, "
                             "<name>-report next to it]")


def _report(args) -> int:
    from bench.report.build import write_report

    path = write_report(Path(args.results), Path(args.out) if args.out else None, args.budget,
                        Path(args.template) if args.template else None, tuple(Path(d) for d in args.with_dirs))
    print(f"report: {path}")
    return EXIT_OK


COMMANDS = [Command("report", "write report.md, table CSVs and plots from a saved run (results folder or pytest-benchmark JSON)",
                    _report_args, _report)]
