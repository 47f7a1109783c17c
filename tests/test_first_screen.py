"""The report's first screen decides (bench/report/first_screen.py, pick.py; bench/trackers/card_model.py):
which configuration a user with the target card runs, at which batch. Each test plants a run and a
plan where the wrong rule gives another answer: the host's order against the card model's, a tie
within noise, the slower of two fitting rows, a batch the memory model's own error pushes over.
Synthetic frames, no measuring: each test takes milliseconds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.report import pick as picks
from bench.report.first_screen import answer, coverage
from bench.report.card_check import check
from bench.trackers.card_model import card_for_target, host_card, images_per_s, step_seconds

RTX4060 = "NVIDIA GeForce RTX 4060"
TARGET = f"{RTX4060} (8.00 GiB)"


def run_row(precision: str, attention: str, images_per_s: float, *, spread: float = 0.02, batch: int = 4,
            gflop: float = 0.6, tensors: float = 20.0, family: str = "transformer", mode: str = "train",
            size: str = "201x201", error_pct: float = 0.0, checkpointing: bool = False, noisy: bool = False) -> dict:
    """One ok row: ``images_per_s`` measured at ``batch`` with p10..p90 at +-``spread`` of its step time."""
    ms = batch * 1e3 / images_per_s
    key = f"{family}-tiny-{size}-zdef-{precision}-{attention}-{'ckpt' if checkpointing else 'nockpt'}-compile-off-{mode}"
    return {"case_key": f"{key}-b{batch}", "status": "ok", "family": family, "preset": "tiny", "size": size,
            "latent": 128, "precision": precision, "attention": attention, "checkpointing": checkpointing, "mode": mode,
            "batch": batch, "images_per_s": images_per_s, "median_ms": ms, "p10_ms": ms * (1 - spread),
            "p90_ms": ms * (1 + spread), "noisy": noisy, "gflop_per_image": gflop, "tensor_peak_mib": tensors,
            "prediction_error_pct": error_pct}


def plan_row(row: dict, *, max_batch: int = 1000, recommended: int = 512, fixed: float = 2.0, per_image: float = 5.0,
             source: str = "predicted") -> dict:
    """The plan's row for ``row``'s configuration: it fits the 8 GiB card up to ``max_batch``."""
    tensors_at = lambda b: fixed + per_image * b  # noqa: E731
    overhead = 700.0  # context and allocator slack on top of the tensors (MiB)
    return {"config_key": row["case_key"].rsplit("-b", 1)[0], "status": "ok", "source": source, "device": "the planner",
            "target": TARGET, "budget_mib": "8192", "max_batch": str(max_batch), "recommended_batch": str(recommended),
            "rec_card_mib": str(overhead + tensors_at(recommended)), "rec_tensors_mib": str(tensors_at(recommended)),
            "max_tensors_mib": str(tensors_at(max_batch)), "fixed_mib": str(fixed), "per_image_mib": str(per_image),
            "images_per_s_recommended": ""}


def first_screen(rows: list[dict], device: str = "cpu", device_name: str = "a CPU", **plan_args) -> pd.DataFrame:
    found = answer(pd.DataFrame(rows), pd.DataFrame([plan_row(r, **plan_args) for r in rows]), device, device_name)
    assert not found.rows.empty, found.notes
    return found.rows


def card_speed(row: dict) -> float:
    return images_per_s(card_for_target(TARGET), row["precision"], row["gflop_per_image"], row["tensor_peak_mib"], row["batch"])


# -- the card model ---------------------------------------------------------------------------------

def test_the_card_model_is_the_larger_of_compute_and_traffic_against_the_tables_figures():
    card = card_for_target(TARGET)
    assert card.name == RTX4060 and card.capability == "8.9" and card.label == f"predicted on {RTX4060}"
    gflop, batch = 2.0, 64
    compute_s = gflop * 1e9 * batch / (card.peaks_tflops["bf16"] * 1e12)
    tiny_tensors = 1.0  # MiB: compute-bound
    assert step_seconds(card, "amp-bf16", gflop, tiny_tensors, batch) == pytest.approx(compute_s)
    huge = compute_s * card.bandwidth_gbs * 1e9 / 2**20  # MiB whose traffic (twice) takes twice the compute time
    assert step_seconds(card, "amp-bf16", gflop, huge, batch) == pytest.approx(2 * compute_s)
    assert step_seconds(card, "fp32", gflop, tiny_tensors, batch) == pytest.approx(
        compute_s * card.peaks_tflops["bf16"] / card.peaks_tflops["fp32"])
    assert math.isnan(step_seconds(card, "fp32", math.nan, 1.0, batch))
    assert card_for_target("8.00 GiB card") is None


def test_the_host_card_is_the_runs_measured_peaks_and_copy_bandwidth():
    meta = {"device": {"name": "a CPU"}, "calibration": {"copy_ms": 4.0, "copy_mib": 64},
            "peaks": {"start": {"peaks": {"fp32": {"tflops": 0.3}, "bf16": {"tflops": 1.5}}},
                      "settled": {"fp32": {"used_tflops": 0.25}}}}
    card = host_card(meta)
    assert card.peaks_tflops == {"fp32": 0.25, "bf16": 1.5}  # the settled figure wins over the start's
    assert card.bandwidth_gbs == pytest.approx(2 * 64 * 2**20 / 4e-3 / 1e9)  # read and written
    assert host_card({"calibration": {}}) is None


def test_the_method_check_reports_rank_correlation_and_median_error_of_predicted_vs_measured():
    card = card_for_target(TARGET)
    rows = [run_row("fp32", "eager", 1.0, gflop=g, tensors=1.0) for g in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)]
    exact = pd.DataFrame([dict(r, images_per_s=card_speed(r)) for r in rows])
    found = check(exact, card)
    assert found.cases == 6 and found.spearman == pytest.approx(1.0)
    assert found.median_error_pct == pytest.approx(0.0, abs=1e-9) and found.median_ratio == pytest.approx(1.0)
    halved = exact.assign(images_per_s=exact["images_per_s"] / 2)
    assert check(halved, card).median_error_pct == pytest.approx(100.0)  # predicted twice the measured
    reversed_order = exact.assign(images_per_s=exact["images_per_s"].values[::-1])
    assert check(reversed_order, card).spearman == pytest.approx(-1.0)


# -- the pick ---------------------------------------------------------------------------------------

def test_off_the_card_the_answer_follows_the_card_model_not_the_hosts_opposite_order():
    """A CPU that runs fp32/eager twice as fast as amp-bf16/flash: the card model (bf16 at twice fp32's peak, and
    flash's smaller live tensors) ranks the other way, and the answer follows the card."""
    host_fast = run_row("fp32", "eager", 200.0, tensors=40.0)
    card_fast = run_row("amp-bf16", "flash", 100.0, tensors=15.0)
    assert card_speed(card_fast) > card_speed(host_fast)  # the planted disagreement
    chosen = first_screen([host_fast, card_fast]).iloc[0]
    assert (chosen["precision"], chosen["attention"]) == ("amp-bf16", "flash")
    assert chosen["chosen_by"] == picks.CARD_MODEL and chosen["speed"] == pytest.approx(chosen["card_ips"])


def test_on_the_card_itself_the_faster_measured_of_two_fitting_rows_is_chosen():
    """The run is on the card: the measured order decides when the intervals are apart (an ascending sort, or the
    first row instead of the best, chooses the slower)."""
    slow = run_row("amp-bf16", "flash", 100.0, tensors=15.0)  # the card model's favourite
    fast = run_row("fp32", "eager", 300.0, tensors=40.0)
    for rows in ([slow, fast], [fast, slow]):
        chosen = first_screen(rows, "cuda", RTX4060).iloc[0]
        assert (chosen["precision"], chosen["attention"]) == ("fp32", "eager"), rows[0]["precision"]
        assert chosen["chosen_by"] == picks.MEASURED_ON_CARD and chosen["speed"] == pytest.approx(300.0)


def test_off_the_card_the_card_models_faster_of_two_fitting_rows_is_chosen_in_either_order():
    low = run_row("fp32", "eager", 100.0, tensors=40.0)
    high = run_row("amp-bf16", "flash", 100.0, tensors=15.0)
    for rows in ([low, high], [high, low]):
        assert first_screen(rows).iloc[0]["precision"] == "amp-bf16"


def test_two_candidates_within_noise_are_a_tie_and_the_card_model_chooses():
    """On the card, fp32/eager measured 3% faster than amp-bf16/flash, each with +-10% spread: a tie, and the card
    model's choice (amp-bf16/flash) is the answer, said so."""
    a = run_row("fp32", "eager", 103.0, spread=0.10, tensors=40.0)
    b = run_row("amp-bf16", "flash", 100.0, spread=0.10, tensors=15.0)
    chosen = first_screen([a, b], "cuda", RTX4060).iloc[0]
    assert (chosen["precision"], chosen["attention"]) == ("amp-bf16", "flash")
    assert chosen["chosen_by"] == picks.TIE


def test_a_noisy_measurement_is_marked_on_the_first_screen():
    row = run_row("amp-bf16", "flash", 100.0, noisy=True)
    chosen = first_screen([row], "cuda", RTX4060).iloc[0]
    assert chosen["chosen_by"].endswith("its measurement is noisy")
    assert not first_screen([dict(row, noisy=False)], "cuda", RTX4060).iloc[0]["chosen_by"].endswith("noisy")


def test_intervals_that_only_touch_overlap_and_apart_do_not():
    assert picks.overlaps(1.0, 2.0, 2.0, 3.0) and picks.overlaps(2.0, 3.0, 1.0, 2.0)
    assert not picks.overlaps(1.0, 2.0, 2.01, 3.0) and not picks.overlaps(2.01, 3.0, 1.0, 2.0)
    assert not picks.overlaps(1.0, math.nan, 1.0, 2.0)


def test_checkpointing_is_never_predicted_faster_than_the_same_step_without_it():
    off = run_row("amp-bf16", "flash", 100.0, tensors=30.0)
    on = run_row("amp-bf16", "flash", 80.0, tensors=10.0, gflop=0.8, checkpointing=True)  # fewer live bytes
    assert card_speed(on) > card_speed(off)  # what the bare roofline would say (memory-bound, fewer bytes)
    plan = pd.DataFrame([plan_row(on, per_image=1.0), plan_row(off, per_image=5.0)])  # the plan's tensors agree
    for rows in ([on, off], [off, on]):
        chosen = answer(pd.DataFrame(rows), plan, "cpu", "a CPU").rows.iloc[0]
        assert chosen["checkpointing"] == "off"


# -- the batch and the memory it takes ----------------------------------------------------------------

@pytest.mark.parametrize("error_pct", [-50.0, -20.0, -5.0])
def test_largest_that_fits_is_lowered_by_the_memory_models_worst_error_for_the_family_and_mode(error_pct):
    rows = [run_row("amp-bf16", "flash", 100.0, error_pct=error_pct),
            run_row("fp32", "flash", 90.0, error_pct=error_pct / 2),          # the same family and mode, milder
            run_row("fp32", "none", 50.0, family="cnn", error_pct=-90.0)]     # another family's error counts not
    plan = {r["case_key"]: plan_row(r) for r in rows}
    chosen = first_screen(rows)
    pick = chosen[chosen["family"] == "transformer"].iloc[0]
    p = plan[[k for k in plan if k.startswith("transformer-tiny-201x201-zdef-amp-bf16")][0]]
    factor = 1 / (1 + error_pct / 100)
    tensors = lambda b: factor * (float(p["fixed_mib"]) + float(p["per_image_mib"]) * b)  # noqa: E731
    budget = float(p["max_tensors_mib"])
    assert tensors(pick["max_batch"]) <= budget < tensors(pick["max_batch"] + 1)  # the largest, not one more or less
    assert pick["batch"] <= pick["max_batch"] and pick["batch"] & (pick["batch"] - 1) == 0  # a power of two that fits
    assert pick["card_mib"] == pytest.approx(float(p["rec_card_mib"]) - float(p["rec_tensors_mib"]) + tensors(pick["batch"]))
    assert pick["headroom_mib"] == pytest.approx(8192 - pick["card_mib"]) and pick["headroom_mib"] > 0
    assert pick["margin"] == f"x{factor:.2f}: transformer train {-error_pct:.0f}% low"


def test_a_plan_measured_on_a_gpu_is_not_derated_and_the_speed_is_at_the_batch_shown():
    row = run_row("amp-bf16", "flash", 100.0, error_pct=-50.0)
    pick = first_screen([row], source="measured").iloc[0]
    assert pick["max_batch"] == 1000 and pick["batch"] == 512 and pick["margin"].startswith("none")
    predicted = first_screen([row]).iloc[0]
    tensors = 2.0 + 5.0 * predicted["batch"]  # the plan's tensors at the batch shown
    assert predicted["card_ips"] == pytest.approx(images_per_s(card_for_target(TARGET), "amp-bf16", 0.6, tensors, predicted["batch"]))


def test_the_coverage_line_names_every_family_preset_latent_size_and_mode():
    rows = pd.DataFrame([run_row("fp32", "eager", 1.0), run_row("fp32", "none", 1.0, family="cnn", size="1280x152", mode="infer"),
                         dict(run_row("fp32", "eager", 1.0), latent=1024, preset="small")])
    line = coverage(rows)
    for word in ("transformer", "cnn", "tiny", "small", "128", "1024", "201x201", "1280x152", "train", "infer"):
        assert word in line, word
