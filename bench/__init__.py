"""ae-bench: the harness that measures the autoencoders in ae_models.

Packages by layer, bottom to top (``bench/ARCHITECTURE.md`` is the map, checked by
``tests/test_architecture.py``): ``units`` (byte sizes); ``runs`` (the row, the run files and their
contract, provenance) and ``trackers`` (latency, memory, NVML, FLOPs, the device's limits); ``core`` (the
engine: cases, steps, the case runner and loop, the memory model, the run's start and end); the command
packages ``report``, ``plan``, ``compare``, ``profile``, ``quality``, then ``downstream``, ``scale`` and
``selfcheck``; ``run_command`` (``python -m bench run``); and the faces: ``cli`` (``python -m bench``),
``conftest`` + ``test_speed`` (``pytest bench``).
"""

__version__ = "0.1.0"
