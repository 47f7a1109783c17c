"""The writer's repair after a kill (``runs/writer.py``): a run folder whose last line was cut mid-write is
cut back to its last whole line, byte for byte, in both files, and the rows appended after it parse.

What a user sees when this is wrong: after a crash and ``--resume``, two samples lines merged into one that
no JSON reader can parse, so ``compare`` cannot judge two cases (and the next stop cuts a whole row).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.runs.reader import load_run
from bench.runs.schema import empty_row
from bench.runs.contract import RESULTS_CSV, SAMPLES_JSONL
from bench.runs.writer import RunWriter

META = {"created": "2026-01-01T00:00:00+00:00", "commit": "abc1234", "matrix": "test", "command": "test",
        "device": {"type": "cpu", "name": "cpu", "torch": "2.13.0", "slug": "cpu"}}


def _row(name: str) -> dict:
    row = empty_row()
    row.update(case_key=f"key-{name}", case_id=name, status="ok", reason="", device="cpu", device_name="cpu",
               torch="2.13.0", threads=1, median_ms=5.0)
    return row


def _folder_with_two_cases(folder: Path) -> tuple[bytes, bytes]:
    """A run of two ok cases; returns the bytes of results.csv and samples.jsonl as they are then."""
    writer = RunWriter(folder, META)
    for name in ("a", "b"):
        writer.append(_row(name), [0.005, 0.006, 0.007])
    return (folder / RESULTS_CSV).read_bytes(), (folder / SAMPLES_JSONL).read_bytes()


def test_a_cut_last_line_is_dropped_to_the_byte_in_both_files(tmp_path):
    csv_whole, samples_whole = _folder_with_two_cases(tmp_path)
    (tmp_path / RESULTS_CSV).write_bytes(csv_whole + b"key-c,c,o")  # killed in the middle of each write
    (tmp_path / SAMPLES_JSONL).write_bytes(samples_whole + b'{"case_key": "key-c", "samples_ms": [5.0')
    RunWriter(tmp_path)  # what --resume does first
    assert (tmp_path / RESULTS_CSV).read_bytes() == csv_whole
    assert (tmp_path / SAMPLES_JSONL).read_bytes() == samples_whole


def test_a_folder_of_whole_lines_is_left_byte_for_byte_and_not_rewritten(tmp_path):
    csv_whole, samples_whole = _folder_with_two_cases(tmp_path)
    inodes = [(tmp_path / name).stat().st_ino for name in (RESULTS_CSV, SAMPLES_JSONL)]
    RunWriter(tmp_path)
    assert ((tmp_path / RESULTS_CSV).read_bytes(), (tmp_path / SAMPLES_JSONL).read_bytes()) == (csv_whole, samples_whole)
    # not even replaced by a copy of itself (an atomic rewrite is a new file): a whole folder needs no repair
    assert [(tmp_path / name).stat().st_ino for name in (RESULTS_CSV, SAMPLES_JSONL)] == inodes


def test_after_the_repair_and_an_append_every_line_parses_and_every_ok_row_has_samples(tmp_path):
    csv_whole, samples_whole = _folder_with_two_cases(tmp_path)
    (tmp_path / SAMPLES_JSONL).write_bytes(samples_whole + b'{"case_key": "key-c", "samp')  # stopped between the writes
    writer = RunWriter(tmp_path)
    writer.append(_row("c"), [0.004, 0.005, 0.006])
    writer.append(_row("d"), [0.008, 0.009, 0.010])
    lines = (tmp_path / SAMPLES_JSONL).read_text().splitlines()
    records = [json.loads(line) for line in lines]  # raises on a merged line
    assert [r["case_key"] for r in records] == ["key-a", "key-b", "key-c", "key-d"]
    run = load_run(tmp_path)
    ok = set(run.rows.loc[run.rows["status"] == "ok", "case_key"])
    assert ok == {"key-a", "key-b", "key-c", "key-d"} and all(len(run.samples_ms[k]) == 3 for k in ok)
