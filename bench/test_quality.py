"""Reconstruction quality per case: ``pytest bench --ae-quality-seconds 20 --ae-matrix quality -k test_quality``.

Skipped unless ``--ae-quality-seconds S`` or ``--ae-quality-steps N`` is given, so ``pytest bench``
never trains by default. One test per quality case of the selected matrix (attention,
checkpointing, compile and mode collapsed: see ``bench/quality/run.py``); each trains on scikit-image's
bundled photographs for the budget and records MSE, PSNR, SSIM, throughput and peak memory in
pytest-benchmark's ``extra_info`` and in ``<results>/<run-id>/quality.csv``; ``quality.md`` and the
plots are written when the session ends.
"""

from __future__ import annotations

import sys

import pytest

from bench.core.selection import make_selection
from bench.quality.run import QualityData, quality_case_id, quality_cases, run_quality_case
from bench.quality.report import QualityWriter
from bench.runs.provenance import git_commit, utc_now
from bench.quality.training import Budget


def pytest_generate_tests(metafunc):
    if "quality_case" in metafunc.fixturenames:
        config = metafunc.config
        # the same selection conftest.py made for test_speed (it validated these options already)
        selection = make_selection(config.getoption("--ae-matrix"), lambda axis: config.getoption(f"--ae-{axis}"),
                                   config.getoption("--ae-device"))
        cases = quality_cases(selection.cases)
        metafunc.parametrize("quality_case", cases, ids=[quality_case_id(c) for c in cases])


@pytest.fixture(scope="session")
def quality_run(request, ae_session):
    """Budget, images and the writer of this session's quality cases; the report is written at the end."""
    config = request.config
    seconds, steps = config.getoption("--ae-quality-seconds"), config.getoption("--ae-quality-steps")
    if seconds is None and steps is None:
        pytest.skip("quality runs train models: give --ae-quality-seconds S or --ae-quality-steps N to run them")
    try:
        budget = Budget(steps=steps, seconds=seconds)
    except ValueError as err:
        raise pytest.UsageError(f"ae-bench: {err}") from None
    selection = ae_session.selection
    meta = {"created": utc_now(), "commit": git_commit(), "command": " ".join(["pytest"] + sys.argv[1:]), "entry": "pytest",
            "matrix": selection.matrix.name, "budget": {"steps": budget.steps, "seconds": budget.seconds, "eval_every": None},
            "lr": None, "device": selection.facts.as_dict()}
    ae_session.ensure_run()  # the session's run folder, opened here when no timed case opened it yet
    writer = QualityWriter(ae_session.run_dir, meta)
    data = QualityData()
    yield budget, data, writer
    if writer.rows:
        path = writer.finish()
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"\nquality report written to {path}")


def test_quality(benchmark, quality_case, quality_run, ae_session):
    budget, data, writer = quality_run
    selection = ae_session.selection
    split = data.split(quality_case.hw)
    benchmark.group = f"quality-{quality_case.size}"
    holder = {}

    def train_and_score():
        holder["result"] = run_quality_case(quality_case, split, budget, selection.device, selection.facts, ae_session.run.run_id)

    benchmark.pedantic(train_and_score, rounds=1, iterations=1, warmup_rounds=0)
    result = holder["result"]
    writer.meta["lr"] = result.row["lr"]
    writer.set_data(data.describe())
    writer.add(result)
    row = result.row
    benchmark.extra_info.update({k: v for k, v in row.items() if v not in (None, "")})
    if row["status"] in ("unsupported", "oom"):
        pytest.skip(f"{row['status']}: {row['reason']}")
    if row["status"] != "ok":
        pytest.fail(f"{row['status']}: {row['reason']}", pytrace=False)
