"""The planner's defaults, apart from its code so that the command line reads them without torch.

Why each value: see ``bench/plan/budget.py``'s module docstring (the budget accounting).
"""

from bench.runs.contract import DEFAULT_CARD

DEFAULT_CONTEXT_MIB = 450       # predicted CUDA context + library workspaces (see budget.py's docstring)
DEFAULT_DISPLAY_RESERVE = "256MiB"
DEFAULT_MARGIN = 0.05
DEFAULT_MAX_BATCH = 16384       # the search stops here: "at least this many"
PLAN_FOR_HELP = ("the card the report's first screen answers for (a partial plan of the run's fastest configurations is "
                 "written into the run folder): a GPU name (rtx4060, rtx4070, rtx4060ti-16gb, ...) or a memory size "
                 f"(8GiB); 'none' plans nothing [default: {DEFAULT_CARD}]")
ACCURACY_SIZES = ("201x201", "1280x152")
ACCURACY_PRECISIONS = ("fp32", "amp-bf16")
ACCURACY_ATTENTION = ("flash", "eager")
CHECK_MEMORY = "3GiB"      # the largest live peak a check may run (this machine is shared)
CHECK_BATCH_CAP = 64

BUDGET_HELP = ("the card's memory: 8GiB, 8192MiB, '8 GiB' (GiB = 2^30 bytes) or 8GB (GB = 10^9 bytes: 7.45 GiB); "
               "default: the --gpu's memory")
