"""The report command's defaults, torch-free so that ``bench/report/command.py`` can quote them."""

from pathlib import Path

from bench.runs.contract import DEFAULT_CARD_MEMORY

DEFAULT_BUDGET = DEFAULT_CARD_MEMORY  # the target card of the seed (an 8 GB Ada GPU has 8 GiB)
# The one copy of the template lives in the package, so a wheel or `pip install .` writes reports; the
# repository's top-level report_template.md is a symlink to it (the layout's place, one source of truth).
DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "report_template.md"
