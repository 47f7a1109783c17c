"""When a difference between two predictors is shown: an interval over images and the spread over seeds.

Both the quality run (model A against model B, or against a baseline) and the downstream check
(the LSTM against its best baseline) compare per-image errors. The unit of evidence is the
**image**: crops or rows cut from one image share pixels and are not independent, so the 95%
interval comes from a bootstrap that resamples whole held-out images (the same resample for
every seed and both sides: the comparison stays paired). Training randomness is measured
apart: each seed gives its own difference, and the **seed spread** is their range (max - min).

The rule (:func:`direction`): a difference is shown when its image-level interval excludes zero
*and* its size exceeds the seed spread of at least 3 seeds; otherwise it is "not shown". Errors are arrays
``(seeds, images)`` of per-image mean errors (MSE, any units); a side with one row (a baseline
that has no seed) is used for every seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95
MIN_SEEDS = 3  # fewer seeds leave the seed-to-seed spread unmeasured: nothing is shown


@dataclass(frozen=True)
class Difference:
    """A - B summarised: ``estimate`` (mean over seeds), ``low``/``high`` (95% interval over images),
    ``seed_spread`` (range of the per-seed differences), counts of seeds and images, and ``units``."""

    estimate: float
    low: float
    high: float
    seed_spread: float
    seeds: int
    images: int
    units: str = "dB"

    def text(self, fmt: str = "+.2f") -> str:
        return (f"{self.estimate:{fmt}} {self.units} (95% over {self.images} images [{self.low:{fmt}}, {self.high:{fmt}}], "
                f"seed spread {self.seed_spread:.2f} over {self.seeds} seeds)")


def direction(diff: Difference) -> int:
    """+1 when A - B is shown positive, -1 when shown negative, 0 when not shown (interval reaches zero,
    the difference is within the seed spread, fewer than :data:`MIN_SEEDS` seeds, or a figure is missing)."""
    figures = (diff.estimate, diff.low, diff.high, diff.seed_spread)
    if not all(math.isfinite(v) for v in figures) or diff.seeds < MIN_SEEDS:
        return 0
    if diff.low > 0 and diff.estimate > diff.seed_spread:
        return 1
    if diff.high < 0 and -diff.estimate > diff.seed_spread:
        return -1
    return 0


def _as_seeds_images(errors, name: str) -> np.ndarray:
    arr = np.asarray(errors, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected per-image errors shaped (seeds, images), got shape {arr.shape}")
    return arr


def _per_seed(a_means: np.ndarray, b_means: np.ndarray, kind: str) -> np.ndarray:
    """The difference per seed (last axis) from pooled errors: dB gain of A over B, or A - B."""
    if kind == "db":
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(b_means / a_means)  # PSNR(A) - PSNR(B) from pooled MSEs
    return a_means - b_means


def paired_difference(a, b, kind: str = "db", seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> Difference:
    """Compare per-image errors ``a`` and ``b``, each ``(seeds, images)`` or ``(images,)``.

    ``kind="db"``: PSNR(A) - PSNR(B) in dB, each PSNR from the MSE pooled over images
    (``10 log10(1 / mean MSE)``, data range 1), so positive means A reconstructs better.
    ``kind="linear"``: mean error of A minus mean error of B, in the errors' units (negative: A better).
    The interval resamples images (the same draw for every seed), ``resamples`` times, seeded.
    """
    if kind not in ("db", "linear"):
        raise ValueError(f"bad difference kind {kind!r}: expected 'db' or 'linear'")
    a, b = _as_seeds_images(a, "a"), _as_seeds_images(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b score different images: {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"a and b have different seeds: {a.shape[0]} and {b.shape[0]}")
    per_seed = _per_seed(a.mean(axis=1), b.mean(axis=1), kind)
    n = a.shape[1]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(resamples, n))                     # (R, n) image indices
    boot = _per_seed(a[:, pick].mean(axis=2), b[:, pick].mean(axis=2), kind).mean(axis=0)  # (R,)
    tail = (1.0 - LEVEL) / 2 * 100
    return Difference(float(per_seed.mean()), float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail)),
                      float(per_seed.max() - per_seed.min()), int(per_seed.size), int(n),
                      "dB" if kind == "db" else "")


def pooled_psnr_db(errors) -> float:
    """PSNR (dB, data range 1) of the MSE pooled over images and then averaged over seeds' PSNRs."""
    arr = _as_seeds_images(errors, "errors")
    with np.errstate(divide="ignore"):
        return float(np.mean(-10.0 * np.log10(arr.mean(axis=1))))


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; a bad or repeated seed is a one-line ValueError."""
    try:
        seeds = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--seeds: bad value {text!r}: expected integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds: bad value {text!r}: expected distinct integers >= 0, e.g. 0,1,2")
    return seeds
