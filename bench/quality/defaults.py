"""The quality run's defaults, readable without torch (the command line shows them in --help)."""

DEFAULT_MATRIX = "quality"
DEFAULT_LR = 1e-3  # one learning rate for every family: AdamW at 1e-3 trains both in a few hundred steps
