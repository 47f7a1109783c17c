"""The quality run's defaults, readable without torch (the command line shows them in --help)."""

DEFAULT_MATRIX = "quality"
DEFAULT_LR = 2e-3  # one peak rate for every family (with the warm-up and cosine decay): the CNN learned faster at 3e-3 than at 1e-3, the transformer the same at 1e-3 and 2e-3 (issue 18)
DEFAULT_WARMUP_STEPS = 50  # linear warm-up before the cosine decay (at most a fifth of a step budget)
DEFAULT_STEPS = 600  # the step budget when none is given: steps compare what training teaches, whatever the machine
DEFAULT_SEEDS = "0,1,2"  # training seeds per case: three give a seed-to-seed spread that a verdict must exceed
