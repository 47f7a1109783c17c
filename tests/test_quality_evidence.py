"""The rule every quality and downstream verdict follows: an interval over held-out images that excludes
zero and a difference larger than the seed-to-seed spread (bench/quality/evidence.py), and the seed's
Quality column judged with it (bench/quality/verdicts.py). Figures here are made by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from bench.quality.evidence import Difference, direction, paired_difference, parse_seeds
from bench.quality.verdicts import VERDICT_COLUMNS, seed_quality_verdicts, verdicts_table


@pytest.mark.parametrize("estimate, low, high, spread, shown", [
    (0.5, 0.2, 0.8, 0.1, 1),      # interval above 0, above the seed spread
    (-0.5, -0.8, -0.2, 0.1, -1),  # the mirror image
    (0.3, -0.1, 0.7, 0.1, 0),     # interval reaches 0
    (-0.3, -0.7, 0.1, 0.1, 0),
    (0.3, 0.1, 0.5, 0.4, 0),      # interval clear of 0 but within the seed spread
    (-0.3, -0.5, -0.1, 0.4, 0),
    (0.5, math.nan, 0.8, 0.1, 0),  # a missing figure
])
def test_a_difference_is_shown_only_past_zero_and_past_the_seed_spread(estimate, low, high, spread, shown):
    assert direction(Difference(estimate, low, high, spread, 3, 7)) == shown


def test_two_seeds_leave_the_spread_unmeasured_and_show_nothing():
    assert direction(Difference(0.5, 0.2, 0.8, 0.0, 2, 7)) == 0 and direction(Difference(0.5, 0.2, 0.8, 0.0, 3, 7)) == 1


def test_the_db_difference_is_from_the_mse_pooled_over_images_not_a_mean_of_per_image_db():
    a = np.array([[0.001, 0.100]])  # one near-flat image that A reconstructs 10x better, one hard image alike
    b = np.array([[0.010, 0.100]])
    diff = paired_difference(a, b, "db", resamples=200)
    assert diff.estimate == pytest.approx(10 * math.log10(0.110 / 0.101))  # 0.37 dB, where per-image dB would say 5 dB
    assert diff.images == 2 and diff.seeds == 1 and diff.seed_spread == 0.0


def test_the_seed_spread_is_the_range_of_the_per_seed_differences():
    b = np.full((3, 4), 0.02)
    a = b / np.array([[10 ** 0.1], [10 ** 0.2], [10 ** 0.3]])  # A better by 1, 2 and 3 dB in seeds 0, 1, 2
    diff = paired_difference(a, b, "db", resamples=200)
    assert diff.estimate == pytest.approx(2.0) and diff.seed_spread == pytest.approx(2.0) and diff.seeds == 3
    assert diff.low == pytest.approx(2.0) and diff.high == pytest.approx(2.0)  # every image agrees


def test_the_interval_resamples_whole_images_paired_between_the_sides():
    # images differ a lot, but A is 1% better than B on every one: a paired resample sees that clearly
    level = np.array([[0.001, 0.01, 0.1, 0.3, 0.05, 0.002]])
    diff = paired_difference(level * 0.99, level, "linear", resamples=500)
    assert diff.high < 0 and direction(Difference(diff.estimate, diff.low, diff.high, 0.0, 3, 6)) == -1


def test_a_difference_carried_by_one_image_of_six_is_not_shown():
    b = np.full((1, 6), 0.05)
    a = b.copy()
    a[0, 2] = 0.005  # A wins on one image only; resamples without it find no difference
    diff = paired_difference(a, b, "db", resamples=2000)
    assert diff.estimate > 0 and diff.low <= 0 and direction(diff) == 0


def test_a_baseline_without_seeds_is_used_for_every_seed():
    a = np.array([[0.01, 0.02], [0.02, 0.04]])
    diff = paired_difference(a, np.array([0.02, 0.04]), "linear", resamples=100)
    assert diff.estimate == pytest.approx(((0.015 - 0.03) + 0.0) / 2) and diff.seed_spread == pytest.approx(0.015)


@pytest.mark.parametrize("text", ["", "0,0", "a", "-1"])
def test_bad_seeds_are_one_line_errors(text):
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds(text)


# -- the seed's Quality column ----------------------------------------------------------------------

IMAGES = [f"img{i}" for i in range(6)]


def _quality(transformer_gain_db, preset="small", seeds=(0, 1, 2), jitter=0.0):
    """quality.csv rows and quality_images.csv for one transformer/CNN pair: the CNN's per-image MSE is
    fixed, the transformer's is lower by ``transformer_gain_db[i]`` on image i (plus ``jitter`` dB x seed)."""
    cnn_mse = np.array([0.004, 0.01, 0.02, 0.03, 0.05, 0.08])
    rows, images = [], []
    for seed in seeds:
        gain = np.asarray(transformer_gain_db, dtype=float) + jitter * seed
        for family, mse in (("cnn", cnn_mse), ("transformer", cnn_mse / 10 ** (gain / 10))):
            case = f"{family}-{preset}"
            psnr = -10 * math.log10(mse.mean())
            rows.append({"family": family, "preset": preset, "size": "201x201", "latent": 128, "precision": "fp32",
                         "batch": 8, "psnr_db": psnr, "ssim": 0.5, "status": "ok", "case_id": case, "seed": seed,
                         "steps": 600, "baseline_crop_mean_db": psnr - 3, "margin_crop_mean_db": 3.0, "learned": True})
            images += [{"predictor": case, "size": "201x201", "seed": seed, "image": name, "mse": m}
                       for name, m in zip(IMAGES, mse)]
    return pd.DataFrame(rows), pd.DataFrame(images)


def _verdict(rows, images, configuration):
    lines = seed_quality_verdicts(rows, images=images)
    return lines[lines["configuration"] == configuration].iloc[0]


def test_better_holds_when_the_transformer_wins_on_every_image_beyond_the_seed_spread():
    rows, images = _quality([0.5] * 6, jitter=0.05)
    line = _verdict(rows, images, "Transformer (small)")
    assert line["verdict"] == "holds" and line["interval_low_db"] > 0
    assert line["delta_psnr_db"] > line["seed_spread_db"] == pytest.approx(0.1)
    assert line["seeds"] == 3 and line["images"] == 6


def test_better_does_not_hold_when_the_cnn_is_shown_better():
    rows, images = _quality([-0.5] * 6)
    assert _verdict(rows, images, "Transformer (small)")["verdict"] == "does not hold"


def test_better_is_not_shown_when_the_interval_over_images_includes_zero():
    rows, images = _quality([0, 0, 0, 0, 0.6, -0.3])  # one image gains, another loses: pooled, a hair above 0
    line = _verdict(rows, images, "Transformer (small)")
    assert line["interval_low_db"] <= 0 < line["delta_psnr_db"] and line["verdict"] == "not shown"


def test_better_is_not_shown_when_the_difference_is_within_the_seed_spread():
    rows, images = _quality([0.1] * 6, jitter=0.2)  # seeds give +0.1, +0.3, +0.5 dB: spread 0.4 > mean 0.3
    line = _verdict(rows, images, "Transformer (small)")
    assert line["interval_low_db"] > 0 and line["verdict"] == "not shown"


@pytest.mark.parametrize("gain, verdict", [([0.0] * 6, "not shown"), ([0.5] * 6, "holds"), ([-0.5] * 6, "does not hold")])
def test_good_is_never_held_by_an_interval_that_includes_zero(gain, verdict):
    rows, images = _quality(np.asarray(gain) + np.linspace(-0.01, 0.01, 6), preset="tiny")
    assert _verdict(rows, images, "Transformer (tiny)")["verdict"] == verdict


def test_the_verdicts_file_carries_the_interval_the_seed_spread_and_the_counts():
    rows, images = _quality([0.5] * 6)
    table = verdicts_table(seed_quality_verdicts(rows, images=images))
    assert list(table.columns) == VERDICT_COLUMNS and VERDICT_COLUMNS[:4] == ["claim", "size", "verdict", "reason"]
    line = table[table["claim"].str.startswith("Transformer (small)")].iloc[0]
    assert line["interval_low_db"] == pytest.approx(0.5) and line["images"] == 6 and "seed spread" in line["reason"]
