"""Profiles of the selected cases: ``pytest bench --benchmark-autosave --ae-profile DIR``.

Deselected unless ``--ae-profile`` is given; ``bench/conftest.py`` runs these after every timed
case, and each profile is a run of its own (``bench/profile/profiler.py``), so the profiler's overhead never
reaches the benchmark numbers. A case whose timed run did not succeed is not profiled.
"""

from pathlib import Path

import pytest

from bench.profile.profiler import profile_case
from bench.profile.report import write_overview


def test_profile(ae_case, ae_session, request):
    out = Path(request.config.getoption("--ae-profile"))
    timed = next((row for row in ae_session.rows if row["case_key"] == ae_case.key), None)
    if timed is not None and timed["status"] != "ok":
        pytest.skip(f"not profiled: its timed run was {timed['status']}: {timed['reason']}")
    selection = ae_session.selection
    result = profile_case(ae_case, selection.device, selection.facts, out, warmup=max(2, selection.settings.warmup))
    write_overview(out)
    summary = result.summary
    if result.status in ("unsupported", "oom"):
        pytest.skip(f"{result.status}: {summary.get('reason', '')}")
    if result.status != "ok":
        pytest.fail(f"{result.status}: {summary.get('reason', '')}", pytrace=False)
