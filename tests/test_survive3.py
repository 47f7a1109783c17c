"""Sweeps that survive, round 3 (issue 35): a check that measured nothing never passes, a run that measured
nothing or could not write its report never exits 0, and meaningless option values are refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cli import main
from test_compare import steady, write_run

REPO = Path(__file__).resolve().parent.parent


# -- item 3: a memory floor that judges nothing is refused ------------------------------------------------------


def _tripled(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5), "reserved_peak_mib": 1000.0}})
    cand = write_run(tmp_path / "c", {"a": {"samples_ms": steady(5, seed=1), "reserved_peak_mib": 3000.0}})
    return base, cand


@pytest.mark.parametrize("value", ["nan", "inf", "1e300", "-1"])
def test_compare_refuses_a_memory_floor_that_is_not_a_finite_size(tmp_path, capsys, value):
    base, cand = _tripled(tmp_path)
    assert main(["compare", str(base), str(cand), "-q"]) == 1  # the 3x growth fails at the default floor
    capsys.readouterr()
    assert main(["compare", str(base), str(cand), "-q", "--memory-floor-mib", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--memory-floor-mib" in err[0]
    config = tmp_path / "rules.toml"
    config.write_text(f"[defaults]\nmemory_floor_mib = {value}\n")
    assert main(["compare", str(base), str(cand), "-q", "--config", str(config)]) == 2
    assert "memory_floor_mib" in capsys.readouterr().err


# -- item 4: an unwritable --json cannot hide the verdict -------------------------------------------------------


def test_compare_prints_its_verdict_before_an_unwritable_json_fails(tmp_path, capsys):
    base, cand = _tripled(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    status = main(["compare", str(base), str(cand), "-q", "--json", str(blocker / "report.json")])
    out, err = capsys.readouterr()
    assert status == 3 and out.startswith("FAIL: 1 of 1 cases regressed") and str(blocker) in err
