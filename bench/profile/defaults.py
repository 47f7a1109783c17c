"""The profiler's defaults, readable without torch (the command line shows them in --help)."""

DEFAULT_STEPS = 3  # active (recorded) steps per case: enough to average, few enough to stay quick
