"""Timing statistics."""

import pytest

from bench.trackers.latency import plan_iterations, quantile, summarize


def test_statistics_of_known_samples():
    stats = summarize([0.001, 0.002, 0.003, 0.004, 0.005])  # seconds
    assert stats.iters == 5
    assert stats.median_ms == pytest.approx(3.0)
    assert stats.mean_ms == pytest.approx(3.0)
    assert stats.iqr_ms == pytest.approx(2.0)   # 4 ms - 2 ms
    assert stats.p10_ms == pytest.approx(1.4)   # linear interpolation, as numpy
    assert stats.p90_ms == pytest.approx(4.6)
    assert stats.min_ms == pytest.approx(1.0)
    assert stats.cv == pytest.approx(0.5270, abs=1e-4)  # sample std 1.581 / mean 3


def test_a_wide_spread_is_flagged_noisy_and_a_tight_one_is_not():
    assert summarize([0.010, 0.0101, 0.0099, 0.0100]).noisy is False
    assert summarize([0.010, 0.020, 0.010, 0.020]).noisy is True


def test_a_single_sample_has_zero_spread():
    stats = summarize([0.004])
    assert stats.median_ms == pytest.approx(4.0) and stats.iqr_ms == 0 and stats.cv == 0


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no timing samples"):
        summarize([])


def test_quantile_interpolates_between_neighbours():
    assert quantile([1.0, 2.0], 0.5) == pytest.approx(1.5)
    assert quantile([1.0, 2.0, 4.0], 1.0) == 4.0


@pytest.mark.parametrize("step_s, expected", [(0.01, 100), (0.5, 10), (0.0001, 200), (0.0, 200)])
def test_iterations_fill_the_minimum_time_within_bounds(step_s, expected):
    assert plan_iterations(step_s, min_iters=10, max_iters=200, min_time_s=1.0) == expected


@pytest.mark.parametrize("order", ["reversed", "shuffled", "one-slow-first"])
def test_unsorted_samples_give_the_statistics_of_the_sorted_ones_and_numpys(order):
    """The samples arrive in time order, not sorted: every statistic must sort first (numpy is the reference)."""
    import numpy as np

    ms = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3, 5.8, 9.7, 2.2, 7.9, 3.3]
    samples = {"reversed": sorted(ms, reverse=True), "shuffled": ms,
               "one-slow-first": [20.0] + sorted(ms)}[order]
    stats = summarize([m / 1e3 for m in samples])
    ref = np.asarray(samples)
    assert stats.iters == len(samples)
    assert stats.median_ms == pytest.approx(float(np.median(ref)))
    assert stats.p10_ms == pytest.approx(float(np.percentile(ref, 10)))
    assert stats.p90_ms == pytest.approx(float(np.percentile(ref, 90)))
    assert stats.iqr_ms == pytest.approx(float(np.percentile(ref, 75) - np.percentile(ref, 25)))
    assert stats.min_ms == pytest.approx(float(ref.min()))
    assert stats.mean_ms == pytest.approx(float(ref.mean()))
    assert stats.cv == pytest.approx(float(ref.std(ddof=1) / ref.mean()))
    assert stats.noisy is bool(stats.iqr_ms / stats.median_ms > 0.10)


def test_the_callers_samples_are_left_in_their_order():
    samples = [0.003, 0.001, 0.002]
    summarize(samples)
    assert samples == [0.003, 0.001, 0.002]  # samples.jsonl keeps the time order (warm-up drift is visible there)
