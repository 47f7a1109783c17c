"""Faults done for real through the command line: no measured row is ever lost.

The same scenarios make the fault table (``python -m bench.selfcheck.faults``).
"""

import signal

import pytest

from bench.selfcheck import faults as faults


def test_a_case_that_raises_costs_one_error_row_and_exit_1(tmp_path):
    result = faults.a_case_that_raises(tmp_path)
    assert (result.rows_after, result.rows_lost, result.exit_status) == (2, 0, "1")
    assert "this model is broken on purpose" in result.message


def test_a_child_killed_by_sigkill_costs_one_error_row(tmp_path):
    result = faults.a_child_killed_with_sigkill(tmp_path)
    assert (result.rows_after, result.rows_lost, result.exit_status) == (2, 0, "1")
    assert "killed by SIGKILL" in result.message and "about to be killed" in result.message


def test_a_hanging_case_is_killed_at_its_timeout_and_recorded(tmp_path):
    result = faults.a_case_that_hangs(tmp_path, timeout_s=5)
    assert (result.rows_after, result.rows_lost, result.exit_status) == (2, 0, "1")
    assert "no result after 5 s" in result.message


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_keeps_its_rows_and_resumes_to_the_end(tmp_path, sig):
    result = faults.interrupted_then_resumed(tmp_path, sig)
    assert result.rows_before >= 2 and result.rows_after == 12 and result.rows_lost == 0
    assert result.exit_status == "130 then 0"
    assert "resume with: " in result.message and " -m bench run " in result.message


def test_a_truncated_csv_is_repaired_on_resume_without_losing_whole_rows(tmp_path):
    result = faults.a_truncated_results_csv(tmp_path)
    assert result.rows_lost == 0 and result.rows_after == result.rows_before + 1 and result.exit_status == "0"


def test_a_csv_damaged_in_the_middle_is_refused_and_left_untouched(tmp_path):
    result = faults.a_corrupt_results_csv(tmp_path)
    assert result.exit_status == "2" and "is corrupt: line 2" in result.message
