"""The report command's defaults, torch-free so that ``bench/report/command.py`` can quote them."""

from pathlib import Path

DEFAULT_BUDGET = "8GiB"  # the target card of the seed (an 8 GB Ada GPU has 8 GiB)
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "report_template.md"
