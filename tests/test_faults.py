"""Faults done for real through the command line: each costs what it must, and no measured row is lost.

The same scenarios make the fault table (``python -m bench.selfcheck.faults``): ``bench/selfcheck/faults.py``
and, for issue 16's thirteen faults (numbered as there) and bad model output, ``bench/selfcheck/hostile.py``.
Every row count is of rows on disk. Nothing here asserts a duration: a busy two-core machine only
makes it slower.
"""

import json
import signal
import subprocess
import sys

import pytest

from bench.selfcheck import faults, hostile
from bench.selfcheck.drive import CASE_TIMEOUT_S

slow = pytest.mark.slow


def one_line_error(stderr: str) -> bool:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("ae-bench: error:")]
    return len(lines) == 1 and "Traceback" not in stderr


@slow
def test_a_case_that_raises_costs_one_error_row_and_the_sweep_goes_on(tmp_path):
    result = faults.a_case_that_raises(tmp_path)
    assert (result.rows_after, result.rows_lost, result.exit_status) == (2, 0, "1")
    assert result.facts["statuses"] == ["error", "ok"]  # the case after the failing one was measured
    assert "this model is broken on purpose" in result.message and result.facts["report"]


@slow
def test_a_child_killed_by_sigkill_costs_one_error_row_and_the_sweep_goes_on(tmp_path):
    result = faults.a_child_killed_with_sigkill(tmp_path)
    assert (result.rows_after, result.rows_lost, result.exit_status) == (2, 0, "1")
    assert result.facts["statuses"] == ["error", "ok"]
    assert "killed by SIGKILL" in result.message and "about to be killed" in result.message


@slow
def test_a_hanging_case_is_killed_at_its_timeout_by_the_default_launcher(tmp_path):
    """5. ``--case-timeout`` with the CPU's default launcher runs each case in a child, which is killed at the limit
    (generous, so that the next case's child, importing torch on a busy machine, never meets it)."""
    result = faults.a_case_that_hangs(tmp_path)
    assert (result.rows_after, result.rows_lost, result.exit_status) == (2, 0, "1")
    assert result.facts["statuses"] == ["timeout", "ok"] and result.facts["launcher"] == "subprocess"
    assert f"no result after {CASE_TIMEOUT_S:g} s" in result.message


@slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_keeps_its_rows_and_resumes_to_the_end(tmp_path, sig):
    result = faults.interrupted_then_resumed(tmp_path, sig)
    assert result.rows_before >= 2 and result.rows_after == 12 and result.rows_lost == 0
    assert result.exit_status == "130 then 0"
    assert "resume with: " in result.message and " -m bench run " in result.message


@slow
def test_a_truncated_csv_is_repaired_on_resume_without_losing_whole_rows(tmp_path):
    result = faults.a_truncated_results_csv(tmp_path)
    assert result.rows_lost == 0 and result.rows_after == result.rows_before + 1 and result.exit_status == "0"


@slow
def test_a_csv_damaged_in_the_middle_is_refused_and_left_untouched(tmp_path):
    result = faults.a_corrupt_results_csv(tmp_path)
    assert result.exit_status == "2" and "is corrupt: line 2" in result.message
    assert result.rows_before == result.rows_after > 0 and result.rows_lost == 0


# -- issue 16 -----------------------------------------------------------------------------------------

@slow
@pytest.mark.parametrize("scenario, words", [
    (hostile.a_case_that_calls_sys_exit, "the case called sys.exit(0)"),
    (hostile.a_case_that_calls_os_exit, "the case called os._exit(0)"),
    (hostile.a_child_that_exits_through_libc, "child exited with status 0 without a result"),
], ids=["sys.exit", "os._exit", "libc _exit in a child"])
def test_1_a_case_that_ends_the_process_is_one_error_row_and_the_sweep_goes_on(tmp_path, scenario, words):
    result = scenario(tmp_path)
    assert (result.rows_after, result.rows_lost, result.exit_status) == (2, 0, "1")
    assert result.facts["statuses"] == ["error", "ok"] and words in result.message
    assert result.facts["report"]  # the run ended as a run does: summary and report


@slow
def test_2_a_chatty_child_costs_one_row_with_a_capped_reason_and_the_run_stays_readable(tmp_path):
    result = hostile.a_chatty_child(tmp_path)
    reason = result.facts["reason"]
    assert result.facts["statuses"] == ["error", "ok"] and result.rows_lost == 0
    assert len(reason) < 1000 and reason.endswith("the last words") and "killed by SIGKILL" in reason
    assert result.facts["report_rc"] == 0 and result.facts["resume_rc"] == 0, result.facts["report_err"] + result.facts["resume_err"]
    assert "2 of 2 cases already measured" in result.facts["resume_err"]


def test_2_a_childs_output_is_read_keeping_only_its_tail():
    """50 MB of output, one line: what the launcher keeps is its last 4 KiB, never the whole."""
    from bench.core.launchers import TailReader

    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('x' * 50_000_000 + '\\nthe end\\n')"],
                            stdout=subprocess.PIPE)
    tail = TailReader(proc.stdout, 4096)
    proc.wait(timeout=300)
    text = tail.text()
    assert len(text) == 4096 and text.endswith("x\nthe end\n")


@slow
def test_3_two_runs_started_in_the_same_second_get_a_folder_each(tmp_path):
    result = hostile.two_runs_in_the_same_second(tmp_path)
    assert result.facts["codes"] == [0, 0] and result.facts["folders"] == 2 and result.facts["per_folder"] == [1, 1]


@slow
def test_3_a_resume_of_a_run_still_going_is_refused_in_one_line(tmp_path):
    result = hostile.a_resume_while_the_run_goes_on(tmp_path)
    assert result.facts["resume_rc"] == 2 and one_line_error(result.facts["resume_err"])
    assert "is in use by another process" in result.message
    assert result.rows_before == result.facts["rows_while_refused"] == result.rows_after == 1
    assert result.rows_lost == 0 and result.facts["duplicates"] == 0


def test_3_a_run_folder_has_one_writer_at_a_time(tmp_path, monkeypatch):
    from bench.runs import provenance
    from bench.runs.files import FolderInUse, FolderLock

    monkeypatch.setattr(provenance, "new_run_id", lambda slug: f"20990101-000000-{slug}")
    first, second = provenance.claim_run_dir(tmp_path, "cpu"), provenance.claim_run_dir(tmp_path, "cpu")
    assert first != second and sorted([first.name, second.name]) == [first.name, second.name]  # still in time order
    lock = FolderLock(first).acquire()
    with pytest.raises(FolderInUse, match="in use by another process"):
        FolderLock(first).acquire()
    lock.release()
    FolderLock(first).acquire().release()  # free again once the holder let go


def test_3_pytest_xdist_is_refused():
    """Workers would time cases against each other and each be a run of its own (one line, before any case)."""
    from types import SimpleNamespace

    import bench.conftest as face

    config = SimpleNamespace(option=SimpleNamespace(numprocesses=2), getoption=lambda name: None)
    with pytest.raises(pytest.UsageError, match="without pytest-xdist"):
        face.pytest_configure(config)


@slow
def test_4_a_stop_between_a_rows_two_writes_never_leaves_an_ok_row_without_samples(tmp_path):
    result = hostile.a_stop_between_a_rows_two_writes(tmp_path)
    assert result.exit_status == "130 then 0" and result.rows_lost == 0 and result.rows_after == 3
    assert result.facts["orphans"] == result.facts["orphans_after"] == result.facts["duplicates"] == 0


def test_4_an_interrupt_inside_a_rows_writes_leaves_no_ok_row_without_samples(tmp_path, monkeypatch):
    from bench.runs import writer as w
    from bench.runs.schema import empty_row
    from bench.selfcheck.drive import ok_rows_without_samples

    run = w.RunWriter(tmp_path)
    row = {**empty_row(), "case_key": "k", "case_id": "k", "status": "ok"}
    real = w.os.fsync
    calls = []

    def fsync(fd):
        real(fd)
        calls.append(fd)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the first of the row's two writes is on disk, the second never comes

    monkeypatch.setattr(w.os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt):
        run.append(row, [0.001, 0.002])
    monkeypatch.setattr(w.os, "fsync", real)
    assert ok_rows_without_samples(tmp_path) == 0
    assert run.done_keys() == set()  # the case is measured again on resume, and its new samples line wins


@slow
def test_6_a_baseline_kept_into_its_own_folder_is_refused_and_kept(tmp_path):
    result = hostile.a_baseline_kept_into_its_own_folder(tmp_path)
    assert result.exit_status == "0 then 2" and one_line_error(result.facts["err"])
    assert "already the baseline" in result.message and result.facts["unchanged"]
    assert result.rows_before == result.rows_after == 1


@slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_7_a_child_dies_with_its_parent_and_its_folder_goes(tmp_path, sig):
    result = hostile.a_parent_killed_under_its_child(tmp_path, sig)
    assert result.facts["children"] and result.facts["gone"], result.message
    assert not [name for name in result.facts["left"] if name.startswith("ae-bench-case-")]
    assert result.rows_before == result.rows_after == 1 and result.rows_lost == 0
    if sig == signal.SIGHUP:  # a closed terminal stops the sweep as Ctrl-C does
        assert result.exit_status == "130" and "resume with: " in result.facts["stderr"]


@slow
def test_8_a_meta_json_lost_at_its_rename_is_recovered_on_resume(tmp_path):
    result = hostile.a_meta_json_lost_at_its_rename(tmp_path)
    assert result.exit_status == "0; baseline 0", result.facts["baseline_err"]
    assert result.facts["meta"] and result.facts["temps"] == [] and "recovered from .meta.json.k1ll3d.tmp" in result.message
    assert (result.rows_before, result.rows_after, result.rows_lost) == (0, 2, 0)


def test_8_a_half_written_meta_json_is_written_again(tmp_path):
    from bench.core.resume import recover_meta

    (tmp_path / ".meta.json.x1.tmp").write_text('{"created": "2026-')
    note = recover_meta(tmp_path, lambda: {"command": "python -m bench run"})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert "written again" in note and meta["command"] == "python -m bench run" and "recovered" in meta


@slow
@pytest.mark.parametrize("label, make", hostile.BAD_VALUES, ids=[label for label, _ in hostile.BAD_VALUES])
def test_9_a_bad_value_is_one_line_and_exit_2_before_anything_is_written(tmp_path, label, make):
    result = hostile.a_bad_value(tmp_path, label, make)
    assert result.exit_status == "2" and result.facts["lines"] == 1 and not result.facts["traceback"], result.message
    assert result.message.startswith("ae-bench: error: ") and not result.facts["folders"] and result.rows_after == 0


@slow
def test_10_a_read_only_results_folder_is_exit_3_in_one_line(tmp_path):
    result = hostile.a_read_only_results_folder(tmp_path)
    assert result.exit_status == "3" and not result.facts["traceback"] and "Read-only file system" in result.message


@slow
def test_10_a_disk_that_fills_during_a_row_keeps_whole_rows_and_says_how_to_resume(tmp_path):
    result = hostile.a_disk_that_fills_during_a_row(tmp_path)
    assert result.exit_status == "3 then 0" and not result.facts["traceback"]
    assert "No space left on device" in result.message and result.facts["hint"].startswith(sys.executable)
    assert result.facts["whole"] and result.facts["orphans"] == 0 and result.facts["duplicates"] == 0
    assert (result.rows_before, result.rows_after, result.rows_lost) == (1, 3, 0)


@slow
def test_10_an_unwritable_compare_output_is_exit_3_not_a_regression(tmp_path):
    result = hostile.an_unwritable_compare_json(tmp_path)
    assert result.exit_status == "3" and not result.facts["traceback"] and "Is a directory" in result.message


def test_10_an_internal_error_is_one_line_and_exit_3(monkeypatch, capsys):
    from bench import cli
    from bench.core.commandline import Command

    def broken(args):
        raise KeyError("a bug")

    table = {"matrices": Command("matrices", "", lambda parser: None, broken)}
    monkeypatch.setattr(cli, "commands", lambda: table)
    assert cli.main(["matrices"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("ae-bench: internal error: KeyError") and len(err.strip().splitlines()) == 1


@slow
def test_11_report_of_a_header_only_csv_is_one_line_and_resume_finishes_it(tmp_path):
    result = hostile.a_header_only_results_csv(tmp_path)
    assert result.exit_status == "report 2; `--resume` 0" and not result.facts["traceback"] and result.facts["lines"] == 1
    assert "holds no rows yet" in result.message and (result.rows_before, result.rows_after) == (0, 1)


@slow
def test_12_a_refused_resume_changes_nothing_in_the_folder(tmp_path):
    result = hostile.a_refused_resume_changes_nothing(tmp_path)
    assert result.exit_status == "2" and "is corrupt: line 2" in result.message and result.facts["unchanged"]


@slow
@pytest.mark.parametrize("change, words", [
    (("--modes", "infer,train,embed"), "this command selects 3 cases"),
    (("--min-time", "0.2"), "the timing settings differ from the run's (min_time_s)"),
], ids=["other cases", "other timing"])
def test_12_a_resume_of_other_cases_or_timing_is_refused_and_changes_nothing(tmp_path, change, words):
    result = hostile.a_resume_of_other_cases(tmp_path, change)
    assert result.exit_status == "2" and words in result.message and "resume with the run's own options" in result.message
    assert result.facts["unchanged"] and result.rows_before == result.rows_after == 2


@slow
def test_12_the_printed_resume_command_is_quoted_for_a_shell_and_names_this_interpreter(tmp_path):
    result = hostile.a_resume_command_with_odd_characters(tmp_path)
    assert result.facts["interpreter"] == sys.executable and result.exit_status == "130 then 0"
    assert result.rows_after == 3 and result.rows_lost == 0 and result.facts["duplicates"] == 0


@slow
def test_13_a_line_separator_in_a_family_name_is_refused_before_any_folder(tmp_path):
    """Issue 35 item 6: a line break in a family's name reached the CSV key as a space and samples.jsonl as the
    break (ok rows without samples); such a name is now refused in one line naming it, before a folder exists."""
    result = hostile.a_line_separator_in_a_family_name(tmp_path)
    assert result.exit_status == "2 (refused, no folder)", result.facts
    refusal = result.facts["refusal"].strip().splitlines()
    assert len(refusal) == 1 and r"line\u2028separator" in refusal[0] and "family" in refusal[0], refusal


def test_13_both_csv_readers_keep_a_u2028_inside_a_cell(tmp_path):
    from bench.runs.reader import load_run
    from bench.runs.schema import empty_row
    from bench.runs.writer import RunWriter, check_run_files

    run = RunWriter(tmp_path)
    run.append({**empty_row(), "case_key": "a\u2028b", "case_id": "a\u2028b", "family": "x:a\u2028b", "status": "error",
                "reason": "r"})
    check_run_files(tmp_path)
    assert run.done_keys() == {"a\u2028b"}
    assert list(load_run(tmp_path).rows["family"]) == ["x:a\u2028b"]


@slow
def test_a_model_returning_nan_or_a_wrong_shape_is_an_error_row(tmp_path):
    result = hostile.a_model_with_bad_output(tmp_path)
    assert result.facts["statuses"] == ["error", "error", "ok"] and result.exit_status == "1"
    nan, shape, _ = result.facts["reasons"]
    assert nan.startswith("BadOutput: the reconstruction holds 80802 NaN/inf value(s)")
    assert shape.startswith("BadOutput: the reconstruction has shape (2, 1, 201, 200), the input (2, 1, 201, 201)")
