"""ae-bench: the harness that measures the autoencoders in ae_models.

Modules, one concept each: ``cases`` (what to run), ``precision`` and ``scenarios`` (how a step
runs), ``latency``, ``memory``, ``nvml``, ``flops``, ``device`` (the trackers and the device's
limits), ``measure`` (one case, end to end), ``sweep`` (many cases, rows written as they finish),
``schema`` and ``results`` (the row and where it goes), ``cli`` (``python -m bench``).
"""

__version__ = "0.1.0"
