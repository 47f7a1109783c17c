"""Commands and options no other test runs: ``matrices``, ``columns``, ``run --list``, ``baseline --key``,
``plan-check``'s exit status, pytest's ``--ae-plan-budget``, ``model.set_attention``, and the soak's
leak verdict (``python -m bench.selfcheck.soak``)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ae_models import UnsupportedAttentionError, create_autoencoder, detect_attention_kernels
from bench.cli import main

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


# -- matrices, columns, run --list ------------------------------------------------------------------------

def test_matrices_lists_every_matrix_file_with_its_description(capsys):
    assert main(["matrices"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert listed == {p.stem for p in (REPO / "bench" / "matrices").glob("*.toml")}
    assert re.search(r"^smoke\s+CI smoke: one case per family", out, re.M)


def test_matrices_shows_one_matrix_groups_and_timing(capsys):
    assert main(["matrices", "quick"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("quick: CPU: both families")
    groups = [line for line in out if line.startswith("  group ")]
    assert len(groups) == 6  # inference (and at 1280x152 without math), training likewise, the batch sweep, compile
    assert "sizes=201x201,640x152" in groups[0] and "attention=flash,math,eager" in groups[0]
    assert "sizes=1280x152" in groups[1] and "attention=flash,eager" in groups[1]
    assert "checkpointing=False,True" in groups[2].replace("false", "False").replace("true", "True") and "modes=train" in groups[2]
    assert "batch=1,2,8" in groups[4]
    assert "compile=default" in groups[5] and "modes=infer" in groups[5]
    assert out[-1] == "  timing: {'warmup': 2, 'min_iters': 5, 'max_iters': 50, 'min_time_s': 0.5, 'memory_iters': 1}"


def test_matrices_names_an_unknown_matrix(capsys):
    assert main(["matrices", "nope"]) == 2
    assert "unknown matrix 'nope'" in capsys.readouterr().err


def test_columns_prints_every_column_of_a_row_with_its_unit(capsys):
    from bench.runs.schema import empty_row

    assert main(["columns"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| column | unit | meaning |", "| --- | --- | --- |"]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:] if line.startswith("|")]
    names = [c[0].strip("`") for c in cells]
    assert names == list(empty_row())  # every column a row has, in the file's order
    units = {c[0].strip("`"): c[1] for c in cells}
    assert units["median_ms"] == "ms" and units["images_per_s"] == "images/s" and units["first_step_ms"] == "ms"
    assert all(c[2] for c in cells), "every column says what it holds"


def test_run_list_prints_the_cases_and_why_some_are_skipped_and_runs_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    code = main(["run", "--matrix", "smoke", "--families", "cnn", "--sizes", "201x201", "--precisions", "fp32,amp-fp16",
                 "--modes", "infer", "--list", "--results", str(results)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cnn-tiny-201x201-fp32-infer-b2"
    assert lines[1].startswith("cnn-tiny-201x201-amp-fp16-infer-b2") and "[skip: fp16 on CPU" in lines[1]
    assert lines[-1] == "2 cases, 1 to be recorded as unsupported"
    assert not results.exists()  # listing opens no run


def test_run_list_with_a_keyword_lists_only_matching_cases(capsys):
    assert main(["run", "--matrix", "quick", "--list", "-k", "-b8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["transformer-tiny-201x201-fp32-flash-infer-b8", "transformer-tiny-201x201-fp32-flash-train-b8",
                     "cnn-tiny-201x201-fp32-infer-b8", "cnn-tiny-201x201-fp32-train-b8",
                     "4 cases, 0 to be recorded as unsupported"]


# -- baseline --key ---------------------------------------------------------------------------------------

def test_baseline_key_names_the_folder_baseline_saves_this_machines_runs_in(tmp_path, capsys):
    from bench.runs.provenance import run_meta
    from bench.runs.schema import empty_row
    from bench.runs.writer import RunWriter
    from bench.trackers.device import device_facts

    assert main(["baseline", "--key"]) == 0
    key = capsys.readouterr().out.strip()
    facts = device_facts(CPU)
    assert key == f"{facts.slug}-torch{torch.__version__.split('+')[0]}"  # e.g. cpu-2c-...-torch2.13.0
    run = tmp_path / "run"
    row = empty_row()
    row.update(case_key="k", case_id="k", status="ok", device="cpu", device_name=facts.name, torch=torch.__version__,
               median_ms=1.0)
    RunWriter(run, run_meta(facts, "test", ["test"], calibration={})).append(row, [0.001] * 5)
    assert main(["baseline", str(run), "--store", str(tmp_path / "baselines")]) == 0
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "baselines" / key


def test_baseline_without_a_run_or_key_says_what_to_give(capsys):
    assert main(["baseline"]) == 2
    assert "give the run to keep as the baseline (or --key" in capsys.readouterr().err


# -- plan-check's exit status, and the CNN figure the plan quotes --------------------------------------------

CNN_INFER = ["plan-check", "--families", "cnn", "--presets", "tiny", "--sizes", "201x201", "--precisions", "fp32",
             "--modes", "infer"]


def _error_pct(out: str, label: str) -> float:
    row = next(line for line in out.splitlines() if line.startswith(f"| {label} |"))
    return float(row.split("|")[-3].strip().rstrip("%"))


def test_plan_check_exits_1_when_an_error_is_over_the_tolerance_and_0_under_it(capsys):
    """The CNN in infer: the model leaves out the convolutions' scratch buffers, -45% at batch 64."""
    from bench.plan.output import CNN_CPU_LOW_PCT

    assert main(CNN_INFER) == 1  # default tolerance 10%
    out = capsys.readouterr().out
    error = _error_pct(out, "cnn-tiny-201x201-fp32")
    assert "| infer | " in out and "worst error" in out
    low, high = CNN_CPU_LOW_PCT["infer"]
    # The note's least shortfall is the least measured on the processors listed there; the scratch oneDNN
    # takes differs by processor (and read 29.2% on one where another read 29.7% at least), so only the
    # default tolerance (10%, the exit 1 above) bounds it from below here; the note's most bounds it above.
    assert 10 < -error <= high, f"the plan's CNN note says {low}-{high}% low in infer; plan-check measures {error}%"
    assert main([*CNN_INFER, "--tolerance", "0.5"]) == 0
    assert _error_pct(capsys.readouterr().out, "cnn-tiny-201x201-fp32") == error  # the same measurement


def test_a_cnn_plan_row_quotes_the_measured_figure_for_its_mode():
    import torch

    from bench.core.cases import Case
    from bench.plan.budget import make_env
    from bench.plan.output import CNN_CPU_LOW_PCT
    from bench.plan.planner import plan_case
    from bench.trackers.device import device_facts

    env = make_env(CPU, device_facts(CPU), "8GiB")
    for mode in ("train", "infer"):
        row, _ = plan_case(Case(family="cnn", preset="tiny", size="64x64", attention="none", mode=mode, batch=1), env)
        low, high = CNN_CPU_LOW_PCT[mode]
        assert f"{low:g}-{high:g}% low for the CNN in {mode}" in row["notes"], row["notes"]
    assert "9-45%" not in row["notes"]


# -- pytest bench --ae-plan-budget --------------------------------------------------------------------------

def _pytest_bench(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench" / "test_speed.py"), "-q", "-p", "no:cacheprovider",
                           "--ae-matrix", "smoke", "--ae-families", "cnn", "--ae-sizes", "201x201", "--ae-modes", "infer",
                           "--ae-min-time", "0.05", "--ae-results", str(tmp_path / "results"), "--ae-plan-for", "none", *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_ae_plan_budget_writes_the_plan_of_the_sessions_matrix_into_the_run_folder(speed_face_session):
    """The speed face's session of the smoke matrix's CNN inference at 201x201 with --ae-plan-budget 8GiB
    (tests/conftest.py; tests/test_faces.py reads the same session)."""
    folder, done = speed_face_session
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = (folder / "p").iterdir()
    assert f"ae-bench: batch-size plan for 8GiB written to {run / 'plan.csv'} and {run / 'plan.md'}" in done.stdout
    rows = list(csv.DictReader((run / "plan.csv").open()))
    # the session's one configuration, in the mode it asked for (--ae-modes infer)
    assert [(r["family"], r["preset"], r["size"], r["precision"], r["mode"]) for r in rows] == [
        ("cnn", "tiny", "201x201", "fp32", "infer")]
    row = rows[0]
    assert row["status"] == "ok" and row["source"] == "predicted" and float(row["budget_mib"]) == 8192
    assert int(row["max_batch"]) > 0 and float(row["max_card_mib"]) <= 8192
    from bench.plan.output import CNN_CPU_LOW_PCT

    low, high = CNN_CPU_LOW_PCT["infer"]  # the CPUs' measured range, never a copy of it
    assert f"{low:g}-{high:g}% low for the CNN in infer" in row["notes"]
    md = (run / "plan.md").read_text()
    assert "Batch-size plan" in md
    ranges = ", ".join(f"{lo:g}-{hi:g}% low in {mode}" for mode, (lo, hi) in CNN_CPU_LOW_PCT.items())
    assert f"{ranges} (`python -m bench plan-check --families cnn" in md
    assert (run / "results.csv").is_file()  # beside the run's own rows


def test_a_bad_ae_plan_budget_stops_the_session_before_anything_runs(tmp_path):
    done = _pytest_bench(tmp_path, "--ae-plan-budget", "8XB")
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]  # pytest's usage error
    assert "--ae-plan-budget" in done.stderr and "8XB" in done.stderr
    assert not (tmp_path / "results").exists()


# -- model.set_attention --------------------------------------------------------------------------------------

def test_set_attention_switches_every_block_and_the_kernel_that_runs():
    torch.manual_seed(0)
    model = create_autoencoder("64x48", "tiny", latent_dim=128, attention="flash").eval()
    x = torch.rand(2, 1, 48, 64)
    with torch.no_grad():
        before = model(x)[0]
        assert detect_attention_kernels(model, x) == ["flash"]
        model.set_attention("eager")
        assert model.config.attention == "eager"
        assert {b.attn.attention for stack in (model.encoder, model.decoder) for b in stack.blocks} == {"eager"}
        assert detect_attention_kernels(model, x) == ["eager"]
        after = model(x)[0]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)  # same weights, another kernel: same output
    with pytest.raises(ValueError, match="unknown attention implementation 'fast'"):
        model.set_attention("fast")
    assert model.config.attention == "eager"  # a refused name changes nothing
    model.set_attention("mem-efficient")
    with pytest.raises(UnsupportedAttentionError, match="mem-efficient attention has no CPU kernel"):
        model(x)


# -- the soak's leak verdict ------------------------------------------------------------------------------------

def _soak_figures(rss: list[float], first_live: float = 8.0, last_live: float = 8.0) -> dict:
    return {"samples": [(i * 6, mib) for i, mib in enumerate(rss)], "probe_first_live_mib": first_live,
            "probe_last_live_mib": last_live}


@pytest.mark.parametrize("figures, verdict", [
    (_soak_figures([340.0, 357.4, 357.4, 357.4]), "no leak"),
    (_soak_figures([340.0, 357.4, 365.0, 372.0, 380.0]), "leak"),           # +22.6 MiB after the warm-up
    (_soak_figures([340.0, 357.4, 357.4], last_live=8.5), "leak"),          # the same case needs more live memory
    (_soak_figures([340.0, 357.4]), "inconclusive"),                        # nothing after the warm-up sample
])
def test_the_leak_verdict_reads_the_soaks_own_figures(figures, verdict):
    from bench.selfcheck.soak import leak_verdict

    found, why = leak_verdict(figures)
    assert found == verdict, why
    if verdict != "inconclusive":
        assert "resident memory" in why and "live-tensor peak" in why


@pytest.fixture
def one_thread():
    """The soak's many tiny ops on one thread: two OpenMP threads wait on each other at every op whenever
    another job holds a core (a 10 s soak took 200 s on the busy 2-core machine)."""
    torch.set_num_threads(1)  # tests/conftest.py puts the count back


def test_a_small_soak_finds_no_leak(one_thread):
    from bench.selfcheck.soak import leak_verdict, soak

    result = soak(24, every=6)
    verdict, why = leak_verdict(result)
    assert verdict == "no leak", why
    assert [i for i, _ in result["samples"]] == [0, 6, 12, 18, 24]


def test_a_small_soak_finds_a_leak_when_each_case_keeps_memory(monkeypatch, one_thread):
    """A launcher that keeps 4 MiB of every case it runs: the soak must say so. The 4 MiB are fresh pages
    (an anonymous mmap, written): a tensor or bytearray can come from heap memory that earlier tests freed
    and glibc kept, which is resident already, and then the resident size does not grow at all."""
    import mmap

    from bench.selfcheck import soak as soak_module

    kept = []

    class Leaking(soak_module.InProcess):
        def run(self, *args, **kwargs):
            pages = mmap.mmap(-1, 4 << 20)
            pages.write(b"\1" * (4 << 20))  # written, so resident
            kept.append(pages)
            return super().run(*args, **kwargs)

    monkeypatch.setattr(soak_module, "InProcess", Leaking)
    verdict, why = soak_module.leak_verdict(soak_module.soak(24, every=6))
    assert verdict == "leak", why
