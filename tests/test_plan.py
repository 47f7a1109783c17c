"""The batch-size plan: units, budget arithmetic, the search, the memory model's algebra, outputs."""

from __future__ import annotations

import csv
import io
import json
import shlex

import numpy as np
import pytest

from bench.core.cases import Case
from bench.core.memory_model import CATEGORIES, MAX_BATCH, MemoryModel, fit, largest_power_of_two
from bench.plan.budget import EMULATED, MEASURED, Budget, PlanEnv, cuda_target_skip, find_gpu, make_env
from bench.plan.defaults import DEFAULT_CONTEXT_MIB
from bench.plan.output import PLAN_COLUMNS
from bench.plan.planner import configurations
from bench.plan.search import SearchError, Trial, recommend_measured, recommend_predicted, search_max_batch
from bench.units import GIB, MIB, parse_bytes

# -- units ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("8GiB", 8 * 2**30), ("8192MiB", 8 * 2**30), ("8GB", 8 * 10**9), ("8 GiB", 8 * 2**30), ("8gib", 8 * 2**30),
    ("1.5GiB", 3 * 2**29), ("512MB", 512 * 10**6), ("256MiB", 256 * 2**20), ("1KiB", 1024), ("1KB", 1000),
    ("100B", 100), ("0", 0), ("0MiB", 0), (" 8GiB ", 8 * 2**30), ("2TiB", 2 * 2**40),
])
def test_parse_bytes_accepts_binary_and_decimal_units(text, expected):
    assert parse_bytes(text) == expected


def test_gib_and_gb_differ_as_documented():
    assert parse_bytes("8GB") / parse_bytes("8GiB") == pytest.approx(10**9 / 2**30)


@pytest.mark.parametrize("text", ["-1GB", "8XB", "", "   ", "8", "GiB", "8 G iB", "1e999GiB", "nanGiB", "8GiB8", None, True])
def test_parse_bytes_rejects_with_the_value_and_the_accepted_forms(text):
    with pytest.raises(ValueError) as info:
        parse_bytes(text)
    message = str(info.value)
    assert repr(str(text)) in message or repr(text) in message
    assert "GiB" in message and "GB" in message  # the accepted forms are named


def test_negative_size_says_so():
    with pytest.raises(ValueError, match="negative"):
        parse_bytes("-1GB")


def test_unknown_unit_is_named():
    with pytest.raises(ValueError, match="unknown unit 'XB'"):
        parse_bytes("8XB")


# -- budget arithmetic -------------------------------------------------------------------------------


def test_budget_accounting_is_of_the_card():
    b = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=450 * MIB, margin=0.05, alloc_overhead=0.10)
    assert b.allocator_limit == (8192 - 256 - 450) * MIB
    assert b.usable == pytest.approx(7486 * MIB * 0.95)
    assert b.live_limit == pytest.approx(7486 * MIB * 0.95 / 1.10)
    assert b.card_total(1000 * MIB) == (1000 + 450 + 256) * MIB
    assert b.predicted_reserved(100 * MIB) == pytest.approx(110 * MIB)
    assert b.fits(b.usable) and not b.fits(b.usable + 1)


def test_budget_without_margin_or_display():
    b = Budget(4 * GIB, display_reserve=0, context_bytes=0, margin=0.0, alloc_overhead=0.0)
    assert b.usable == b.live_limit == b.allocator_limit == 4 * GIB


@pytest.mark.parametrize("kwargs", [dict(card_bytes=0), dict(card_bytes=-1), dict(card_bytes=GIB, margin=1.0),
                                    dict(card_bytes=GIB, margin=-0.1), dict(card_bytes=GIB, display_reserve=-1),
                                    dict(card_bytes=GIB, alloc_overhead=-0.5)])
def test_budget_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        Budget(**kwargs)


def test_budget_smaller_than_context_leaves_nothing():
    b = Budget(256 * MIB, display_reserve=0, context_bytes=DEFAULT_CONTEXT_MIB * MIB)
    assert b.allocator_limit < 0 and b.usable == 0


def test_make_env_resolves_budget_gpu_and_defaults():
    import torch

    from bench.trackers.device import device_facts

    cpu = torch.device("cpu")
    facts = device_facts(cpu)
    env = make_env(cpu, facts, "8GiB")
    assert env.source == "predicted" and env.budget.card_bytes == 8 * GIB
    assert env.budget.context_bytes == DEFAULT_CONTEXT_MIB * MIB and env.budget.display_reserve == 256 * MIB
    env = make_env(cpu, facts, None, gpu="rtx4060", display_reserve="0", context="300MiB")
    assert env.budget.card_bytes == 8 * GIB and "RTX 4060" in env.target
    assert env.budget.display_reserve == 0 and env.budget.context_bytes == 300 * MIB
    with pytest.raises(ValueError, match="--budget"):
        make_env(cpu, facts, None)
    with pytest.raises(ValueError, match="leaves nothing"):
        make_env(cpu, facts, "512MiB")
    with pytest.raises(ValueError, match="unit"):
        make_env(cpu, facts, "8")


def test_find_gpu_by_short_name():
    assert find_gpu("rtx4060")["name"] == "NVIDIA GeForce RTX 4060"
    assert find_gpu("RTX 4060 Ti 16GB")["name"] == "NVIDIA GeForce RTX 4060 Ti 16GB"
    assert find_gpu("rtx4070laptop")["memory_gib"] == 8
    assert find_gpu("rtx4070")["memory_gib"] == 12  # the desktop 4070 is a 12 GB card
    with pytest.raises(ValueError, match="unknown or ambiguous"):
        find_gpu("rtx9999")


def test_a_card_sold_with_two_memory_sizes_needs_the_size():
    with pytest.raises(ValueError, match="say which: rtx4060ti-8gb, rtx4060ti-16gb"):
        find_gpu("rtx4060ti")
    assert find_gpu("rtx4060ti-16gb")["memory_gib"] == 16
    assert find_gpu("rtx4060ti-8gb")["memory_gib"] == 8
    with pytest.raises(ValueError, match="not 12 GB"):
        find_gpu("rtx4060ti-12gb")
    assert find_gpu("rtx4060-8gb")["name"] == "NVIDIA GeForce RTX 4060"  # a size that names the only one is fine


def test_plan_budget_comes_from_the_chosen_variant():
    import torch

    from bench.trackers.device import device_facts

    env = make_env(torch.device("cpu"), device_facts(torch.device("cpu")), None, "rtx4060ti-16gb")
    assert env.budget.card_bytes == 16 * GIB


# -- the search ------------------------------------------------------------------------------------------


def fake_card(fixed_mib: float, per_image_mib: float, budget: Budget, calls: list):
    """A trial function for a card whose reserved peak is fixed + per_image * b; OOM past the allocator limit."""
    def run(batch: int) -> Trial:
        calls.append(batch)
        reserved = (fixed_mib + per_image_mib * batch) * MIB
        if reserved > budget.allocator_limit:
            return Trial(batch, "oom", budget.allocator_limit, 0, "CUDA out of memory")
        return Trial(batch, "ok", reserved, reserved * 0.9)
    return run


@pytest.mark.parametrize("fixed, per_image", [(100, 1.0), (1000, 7.3), (10, 0.01), (5000, 900), (0, 3000)])
def test_search_finds_the_largest_batch_that_fits(fixed, per_image):
    budget = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=450 * MIB)
    calls: list = []
    result = search_max_batch(fake_card(fixed, per_image, budget, calls), budget, cap=1 << 20)
    def fits(b):
        return (fixed + per_image * b) * MIB <= budget.usable

    expected = int((budget.usable / MIB - fixed) // per_image)
    expected += 1 if fits(expected + 1) else -1 if not fits(expected) else 0
    assert result.max_batch == expected
    assert len(calls) == len(set(calls)), "no batch is tried twice"
    assert len(calls) <= 2 * max(1, expected).bit_length() + 2, "double then bisect: O(log n) trials"
    assert result.trial(expected).status == "ok"


def test_search_counts_over_margin_as_not_fitting():
    budget = Budget(GIB, display_reserve=0, context_bytes=0, margin=0.5)
    # fits the allocator (no OOM) up to 1024 MiB, but the margin leaves 512 MiB
    result = search_max_batch(fake_card(0, 100, budget, []), budget)
    assert result.max_batch == 5
    assert any(t.status == "over-budget" for t in result.trials)


def test_budget_smaller_than_one_sample_says_so():
    budget = Budget(2 * GIB, display_reserve=256 * MIB, context_bytes=450 * MIB)
    calls: list = []
    result = search_max_batch(fake_card(0, 4000, budget, calls), budget)
    assert result.max_batch == 0 and calls == [1]
    assert "does not fit: even a batch of 1" in result.reason
    assert "oom" in result.reason and f"{budget.usable / MIB:.0f} MiB" in result.reason


def test_search_stops_at_the_cap():
    budget = Budget(8 * GIB)
    result = search_max_batch(fake_card(10, 0.001, budget, []), budget, cap=1000)
    assert result.max_batch == 1000 and "capped" in result.reason


def test_search_stops_on_an_error_that_is_not_memory():
    budget = Budget(8 * GIB)

    def broken(batch):
        return Trial(batch, "error", reason="RuntimeError: this model is broken on purpose")

    with pytest.raises(SearchError, match="broken on purpose"):
        search_max_batch(broken, budget)


def test_recommend_measured_prefers_the_smallest_batch_near_the_best():
    assert recommend_measured({1: 100, 2: 190, 4: 380, 8: 700, 16: 900, 32: 1000, 64: 1010, 100: 1005}) == 32
    assert recommend_measured({1: 100}) == 1
    assert recommend_measured({8: 1000, 16: 940, 32: 1000}) == 8


def test_recommend_predicted_is_a_power_of_two_under_the_maximum():
    assert [recommend_predicted(n) for n in (1, 2, 3, 95, 96, 1024, 1500)] == [1, 2, 2, 64, 64, 1024, 1024]
    assert largest_power_of_two(0) == 0


# -- the memory model's algebra ------------------------------------------------------------------------------


def synthetic_model(lines: list[tuple[float, float]]) -> MemoryModel:
    k = len(CATEGORIES)
    fixed = np.zeros((len(lines), k))
    slope = np.zeros((len(lines), k))
    for i, (f, s) in enumerate(lines):
        fixed[i, 0], slope[i, CATEGORIES.index("saved")] = f, s
    return MemoryModel(Case(), "cpu", fixed, slope, (2, 4))


def test_model_peak_is_the_upper_envelope_and_max_batch_solves_it():
    m = synthetic_model([(100.0, 1.0), (10.0, 3.0), (300.0, 0.0)])  # optimizer phase flat, backward steep
    assert m.peak(1) == 300.0 and m.peak(100) == 310.0
    assert m.max_batch(300.0) == 96                      # 10 + 3b <= 300
    assert m.max_batch(299.0) == 0                       # the flat line alone is over
    assert m.line_at(100) == (10.0, 3.0)
    assert m.breakdown(100)["saved"] == 300.0 and m.breakdown(100)["params"] == 10.0
    assert synthetic_model([(5.0, 0.0)]).max_batch(10.0) == MAX_BATCH


# -- configurations and rules --------------------------------------------------------------------------------


def test_configurations_drop_batch_and_take_both_modes():
    cases = [Case(preset="tiny", batch=b, mode=m) for b in (2, 4) for m in ("infer", "embed")]
    out = configurations(cases)
    assert sorted(c.mode for c in out) == ["infer", "train"] and all(c.batch == 1 for c in out)


def test_cuda_rules_without_a_gpu():
    assert "fp16 or bf16" in cuda_target_skip(Case(attention="flash", precision="fp32"))
    assert cuda_target_skip(Case(attention="flash", precision="amp-bf16")) is None
    assert cuda_target_skip(Case(attention="eager", precision="fp32")) is None


# -- end to end on the CPU (fake tensors: about a second a configuration) ------------------------------------


def test_model_prediction_grows_with_the_batch_and_eager_keeps_n_by_n():
    flash = fit(Case(preset="tiny", size="1280x152", attention="flash", mode="train"), "cpu")
    eager = fit(Case(preset="tiny", size="1280x152", attention="eager", mode="train"), "cpu")
    n, heads = 80 * 10, 4
    _, flash_slope = flash.line_at(64)
    _, eager_slope = eager.line_at(64)
    # eager keeps at least one fp32 (B, h, N, N) softmax per block (3 blocks) that flash does not
    assert eager_slope - flash_slope >= 3 * heads * n * n * 4 * 0.9
    assert flash.breakdown(64)["saved"] > 0 and flash.breakdown(64)["params"] > 0
    assert flash.breakdown(64)["optimizer"] == pytest.approx(2 * flash.breakdown(64)["params"], rel=0.01)


def test_plan_command_writes_csv_and_markdown(tmp_path, capsys):
    from bench.cli import main

    code = main(["plan", "--budget", "8GiB", "--matrix", "smoke", "--families", "transformer", "--sizes", "201x201",
                 "--attention", "flash,eager", "--modes", "train", "--results", str(tmp_path)])
    assert code == 0
    [folder] = list(tmp_path.iterdir())
    rows = list(csv.DictReader(io.StringIO((folder / "plan.csv").read_text())))
    assert tuple(rows[0]) == PLAN_COLUMNS
    by_attention = {r["attention"]: r for r in rows}
    assert by_attention["flash"]["status"] == "unsupported"  # fp32 flash cannot run on an Ada GPU
    eager = by_attention["eager"]
    assert eager["status"] == "ok" and eager["source"] == "predicted" and int(eager["max_batch"]) > 64
    assert int(eager["recommended_batch"]) & (int(eager["recommended_batch"]) - 1) == 0
    assert float(eager["max_card_mib"]) <= 8192 and abs(float(eager["fit_error_pct"])) < 1
    md = (folder / "plan.md").read_text()
    assert "Batch-size plan" in md and "seed" in md and "64-96" in md
    assert "plan.csv" in capsys.readouterr().out
    made = json.loads((folder / "provenance.json").read_text())  # runs/provenance.py: the one record every command writes
    assert made["command"] == "python -m bench plan --budget 8GiB --matrix smoke --families transformer --sizes 201x201 " \
                              f"--attention flash,eager --modes train --results {shlex.quote(str(tmp_path))}"
    assert set(made) == {"created", "commit", "dirty", "tree", "command"}


def test_plan_command_rejects_a_bad_budget(capsys):
    from bench.cli import main

    assert main(["plan", "--budget", "8XB"]) == 2
    assert "8XB" in capsys.readouterr().err


def test_measured_path_builds_its_row_from_trials_and_timings(monkeypatch):
    """The GPU path's bookkeeping, with the CUDA trial and timing replaced by a card of known size."""
    import torch

    from bench.plan import planner as plan
    from bench.trackers.device import device_facts

    budget = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=400 * MIB, context_source="test")
    card = fake_card(500, 20, budget, [])
    monkeypatch.setattr(plan, "cuda_trial", lambda case, device, batch: card(batch))
    speeds = {1: 10.0, 2: 20.0, 4: 40.0, 8: 80.0, 16: 150.0, 32: 190.0, 64: 196.0, 128: 199.0, 256: 200.0, 330: 200.0}
    monkeypatch.setattr(plan, "cuda_throughput", lambda case, device, batch: speeds.get(batch, 200.0))
    cpu = torch.device("cpu")
    env = PlanEnv(budget, "test card", cpu, device_facts(cpu), source=EMULATED)
    row, model = plan.plan_case(Case(preset="tiny", attention="eager", mode="train"), env)
    expected = int((budget.usable / MIB - 500) // 20)
    assert row["status"] == "ok" and row["source"] == "emulated" and row["max_batch"] == expected
    assert row["recommended_batch"] == 32  # 190 >= 0.95 x 200
    assert row["max_card_mib"] == pytest.approx((500 + 20 * expected + 400 + 256), abs=0.1)
    assert row["predicted_max_batch"] > 0 and row["prediction_error_pct"] is not None
    assert row["trials"].startswith("1:ok 2:ok 4:ok")


def test_measured_path_reports_a_card_too_small_for_one_image(monkeypatch):
    import torch

    from bench.plan import planner as plan
    from bench.trackers.device import device_facts

    budget = Budget(GIB, display_reserve=0, context_bytes=400 * MIB)
    card = fake_card(0, 5000, budget, [])
    monkeypatch.setattr(plan, "cuda_trial", lambda case, device, batch: card(batch))
    cpu = torch.device("cpu")
    env = PlanEnv(budget, "test card", cpu, device_facts(cpu), source=MEASURED)
    row, _ = plan.plan_case(Case(preset="tiny", attention="flash", mode="train"), env)
    assert row["status"] == "does-not-fit" and row["max_batch"] == 0
    assert "even a batch of 1" in row["reason"]


@pytest.mark.parametrize("tensors_per_allocated, error_pct, tensors_error_pct", [
    (0.5, -50.5, -50.0),    # a model that sees half the tensors: reserved predicted at 1.10 x 0.5 x 0.9 of the card's
    (1.0, -1.0, 0.0),       # exact tensors; the assumed 10% allocator overhead against the card's 11.1%
    (1.25, 23.75, 25.0),
])
def test_measured_path_prediction_error_is_against_the_trials_known_peak(monkeypatch, tensors_per_allocated, error_pct,
                                                                          tensors_error_pct):
    """The GPU path's ``prediction_error_pct`` with a known answer: the stubbed card reserves (500 + 20 b) MiB and
    allocates 0.9 of that at every batch; the memory model is a line at a fixed fraction of the allocated bytes."""
    import torch

    from bench.plan import planner as plan
    from bench.trackers.device import device_facts

    budget = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=400 * MIB, alloc_overhead=0.10, context_source="test")
    card = fake_card(500, 20, budget, [])
    monkeypatch.setattr(plan, "cuda_trial", lambda case, device, batch: card(batch))
    monkeypatch.setattr(plan, "cuda_throughput", lambda case, device, batch: 100.0 * batch)
    k = 0.9 * tensors_per_allocated
    model = synthetic_model([(k * 500 * MIB, k * 20 * MIB)])
    monkeypatch.setattr(plan, "fit", lambda case, target: model)
    cpu = torch.device("cpu")
    env = PlanEnv(budget, "test card", cpu, device_facts(cpu), source=EMULATED)
    row, got = plan.plan_case(Case(preset="tiny", attention="eager", mode="train"), env)
    assert got is model
    max_batch = int((budget.usable / MIB - 500) // 20)
    assert row["max_batch"] == max_batch
    assert row["predicted_max_batch"] == int((budget.live_limit / MIB / k - 500) // 20)
    assert row["prediction_error_pct"] == pytest.approx(error_pct, abs=0.01)
    assert row["prediction_tensors_error_pct"] == pytest.approx(tensors_error_pct, abs=0.01)


@pytest.mark.parametrize("case, batch", [
    (Case(preset="tiny", size="201x201", precision="fp32", attention="eager", mode="train"), 8),
    (Case(preset="tiny", size="201x201", precision="amp-bf16", attention="flash", checkpointing=True, mode="train"), 8),
    (Case(preset="tiny", size="640x152", precision="fp32", attention="flash", mode="infer"), 16),
], ids=lambda v: v.id if isinstance(v, Case) else str(v))
def test_the_models_peak_matches_the_allocators_live_peak_of_a_real_step(case, batch):
    """Accuracy, not linearity: the model (fake tensors at batch 2 and 4, extrapolated) against the CPU
    allocator's own events on a real step at another batch (``bench.plan.reference``), which shares
    nothing with the model but the case. ``fit_error_pct`` only compares the model with its own tracer."""
    from bench.plan.reference import measure_live_peak

    model = fit(case, "cpu")
    predicted = model.peak(batch)
    measured = measure_live_peak(case, batch).peak_bytes
    assert measured > 0
    # plan-check's tolerance (10%): amp-bf16 with checkpointing is 6% low at batch 8 (1% at 64: results/plan-check-*.md)
    assert abs(predicted / measured - 1) <= 0.10, f"predicted {predicted / MIB:.1f} MiB, live peak {measured / MIB:.1f} MiB"


# -- the run's partial plan for its report's first screen (bench/plan/partial.py) ----------------------

def _speed_row(case: Case, images_per_s: float, gflop: float, tensors: float) -> dict:
    return {"case_key": case.key, "status": "ok", "images_per_s": images_per_s, "gflop_per_image": gflop,
            "tensor_peak_mib": tensors}


def test_the_partial_plan_tries_configurations_in_the_card_models_order_off_the_card():
    """The run's host measured fp32/eager fastest; the card model (bf16 at twice fp32's peak on an RTX 4060, flash's
    fewer live bytes) ranks amp-bf16/flash first: the plan tries the card's order, and the host's without a card."""
    from bench.plan.partial import candidates
    from bench.trackers.card_model import card_for_target

    base = dict(family="transformer", preset="tiny", size="201x201", mode="train", batch=4)
    host_fast, card_fast = Case(**base, precision="fp32", attention="eager"), Case(**base, precision="amp-bf16", attention="flash")
    rows = [_speed_row(host_fast, 200.0, 0.6, 40.0), _speed_row(card_fast, 100.0, 0.6, 15.0)]
    card = card_for_target("NVIDIA GeForce RTX 4060")
    (by_card,) = candidates(rows, [host_fast, card_fast], card)
    assert [(c.precision, c.attention) for c in by_card] == [("amp-bf16", "flash"), ("fp32", "eager")]
    (by_host,) = candidates(rows, [host_fast, card_fast])
    assert [(c.precision, c.attention) for c in by_host] == [("fp32", "eager"), ("amp-bf16", "flash")]


def test_a_card_below_compute_capability_8_runs_no_flash_attention_in_the_plan():
    assert cuda_target_skip(Case(attention="flash", precision="amp-bf16")) is None  # an Ada card (8.9)
    assert "compute capability 8.0+" in cuda_target_skip(Case(attention="flash", precision="amp-bf16"), (7, 5))
    import torch

    from bench.trackers.device import device_facts

    cpu = torch.device("cpu")
    assert make_env(cpu, device_facts(cpu), None, "rtx4060", predict_only=True).capability == (8, 9)
    assert make_env(cpu, device_facts(cpu), None, "a100", predict_only=True).capability == (8, 0)  # from data/gpus.toml


def test_the_partial_plan_reads_every_row_of_the_run_folder_not_only_this_processes(tmp_path):
    """A resumed run: the process that plans measured one case; the plan's candidates come from the folder's
    results.csv, every group of it (the committed reference run: 12 groups)."""
    from bench.plan.partial import candidates, run_rows
    from bench.runs.reader import load_run

    from tests.test_report import REFERENCE_RUN

    folder = REFERENCE_RUN  # named: the newest folder of results/ is the user's run (CI's smoke run, after .ci/run's main job)
    everything = load_run(folder).rows
    mine = everything.iloc[[-1]].to_dict("records")
    rows = run_rows(folder, mine)
    assert len(rows) == len(everything) and {r["case_key"] for r in rows} == set(everything["case_key"])
    from bench.core.selection import make_selection

    cases = make_selection("quick", lambda axis: None, "cpu").cases  # the reference run's matrix
    groups = {(r["family"], r["size"], r["mode"]) for r in rows if r["status"] == "ok" and r["compile"] == "off"}
    assert {(g[0].family, g[0].size, g[0].mode) for g in candidates(rows, cases)} == groups
    assert run_rows(tmp_path, mine) == mine  # no results.csv: this process's rows
