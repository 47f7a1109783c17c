"""Trivial predictors a trained autoencoder must beat, scored on the same held-out crops.

A PSNR means little alone: a photograph's crop is already ~20 dB from a flat field of its own
mean brightness. Every quality table therefore shows, for the same held-out crops, scored with
the same metrics (:mod:`bench.quality.metrics`):

- ``train_mean``: every pixel = the mean pixel of the training crops (one number for the data set);
- ``crop_mean``: every pixel = that crop's own mean (one number per crop: "learned brightness only");
- ``downsample``: the crop area-averaged onto the largest grid of at most ``latent`` cells with the
  crop's aspect, then bilinearly upsampled back (what ``latent`` numbers buy with no learning);
- ``pca``: projection onto the first ``latent`` principal components of the training crops
  (at most ``PCA_MAX_CROPS - 1`` components: fitted on up to ``PCA_MAX_CROPS`` training crops).

``latent`` baseline = the better of ``downsample`` and ``pca``. Images are ``(N, H, W)`` float in
[0, 1]; reconstructions are clipped to [0, 1] like the models' (:func:`bench.quality.run.reconstruct`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from bench.quality.metrics import ImageMetrics, batch_metrics, mean_metrics

PCA_MAX_CROPS = 512   # training crops the PCA is fitted on (spread evenly): 512 x 1280x152 float32 is 380 MiB
LEARNED_MARGIN_DB = 1.0  # a model "learned" when its held-out PSNR beats the crop-mean baseline by this much


def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or min(images.shape) < 1:
        raise ValueError(f"{name}: expected a stack (N, H, W) or (N, 1, H, W) of at least one image, got shape {images.shape}")
    return images


def constant_predictor(images: np.ndarray, value: float) -> np.ndarray:
    """Every pixel of every image = ``value``."""
    return np.full_like(_check_images(images), float(value))


def crop_mean_predictor(images: np.ndarray) -> np.ndarray:
    """Every pixel = the mean of its own image: ``(N, H, W) -> (N, H, W)``."""
    images = _check_images(images)
    means = images.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)  # float64 sum: exact on a constant image
    return np.broadcast_to(means, images.shape).copy()


def grid_for_numbers(hw: tuple[int, int], numbers: int) -> tuple[int, int]:
    """A grid ``(gh, gw)`` of at most ``numbers`` cells with about the image's aspect ``(H, W)``: ``gh`` is
    ``sqrt(numbers * H / W)`` rounded down or up, whichever leaves more cells, ``gw = numbers // gh``
    (never more cells than pixels along a side). ``(201, 201), 128 -> (11, 11)``; ``(152, 1280), 128 -> (4, 32)``."""
    h, w = (int(v) for v in hw)
    if isinstance(numbers, bool) or int(numbers) != numbers or numbers < 1 or h < 1 or w < 1:
        raise ValueError(f"bad grid request: {numbers!r} numbers for an image of (H, W) = {hw}")
    numbers = int(numbers)
    ideal = math.sqrt(numbers * h / w)
    options = []
    for gh in {max(1, math.floor(ideal)), max(1, math.ceil(ideal))}:
        gh = min(gh, h, numbers)
        options.append((gh * min(w, numbers // gh), gh, min(w, numbers // gh)))
    _, gh, gw = max(options)
    return gh, gw


def downsample_predictor(images: np.ndarray, numbers: int) -> np.ndarray:
    """Area-average each image onto :func:`grid_for_numbers` cells, then bilinear back to its size."""
    images = _check_images(images)
    hw = images.shape[1:]
    grid = grid_for_numbers(hw, numbers)
    x = torch.from_numpy(images)[:, None]  # (N, 1, H, W)
    small = F.adaptive_avg_pool2d(x, grid)  # (N, 1, gh, gw): exact cell means, uneven cells allowed
    back = F.interpolate(small, size=hw, mode="bilinear", align_corners=False)
    return back[:, 0].clamp(0.0, 1.0).numpy()


@dataclass
class PCA:
    """Principal components of training images: ``mean`` ``(D,)``, ``components`` ``(k, D)`` orthonormal rows."""

    mean: np.ndarray
    components: np.ndarray
    fitted_on: int  # images

    @classmethod
    def fit(cls, train: np.ndarray, components: int) -> "PCA":
        """Fit on ``train`` ``(M, H, W)``; ``components`` is capped at ``M - 1`` (what M images can span)."""
        train = _check_images(train, "training images")
        m = train.shape[0]
        if m < 2:
            raise ValueError(f"PCA needs at least 2 training images, got {m}")
        k = min(int(components), m - 1)
        x = torch.from_numpy(train.reshape(m, -1).copy())  # (M, D) float32, D up to 194,560 pixels
        mean = x.mean(dim=0)
        x -= mean
        # eigenvectors of the small Gram matrix (M x M) instead of an SVD of the wide (M x D) matrix
        eigvals, eigvecs = torch.linalg.eigh((x @ x.T).double())
        order = torch.argsort(eigvals, descending=True)[:k]
        eigvals, eigvecs = eigvals[order].clamp_min(1e-12), eigvecs[:, order]
        basis = (eigvecs.T.float() @ x) / eigvals.sqrt().float()[:, None]  # (k, D), unit rows
        return cls(mean.numpy(), basis.numpy(), m)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images)
        flat = images.reshape(images.shape[0], -1) - self.mean
        recon = (flat @ self.components.T) @ self.components + self.mean
        return np.clip(recon.reshape(images.shape), 0.0, 1.0)


def spread_indices(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices spread evenly over ``range(n)``."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()})


@dataclass
class BaselineScores:
    """The baselines of one crop size and latent, each as mean metrics over the held-out crops."""

    train_mean: ImageMetrics
    crop_mean: ImageMetrics
    downsample: ImageMetrics
    downsample_grid: tuple[int, int]
    pca: Optional[ImageMetrics]
    pca_components: int
    latent: int
    crop_mse: dict = None  # name ("crop_mean", "downsample", "pca") -> per held-out crop MSE (N,), for per-image statistics

    @property
    def latent_best(self) -> ImageMetrics:
        """The better (higher PSNR) of the two latent-sized baselines."""
        if self.pca is None or self.downsample.psnr_db >= self.pca.psnr_db:
            return self.downsample
        return self.pca

    @property
    def latent_name(self) -> str:
        return "downsample" if self.latent_best is self.downsample else "pca"


def score(original: np.ndarray, predicted: np.ndarray) -> ImageMetrics:
    return mean_metrics(batch_metrics(original, predicted))


def baseline_scores(heldout: np.ndarray, latent: int, train_mean: float, pca: Optional[PCA]) -> BaselineScores:
    """Every baseline of one size and ``latent`` on ``heldout`` ``(N, H, W)``.

    ``train_mean``: the mean pixel of the training crops. ``pca``: fitted on training crops of the
    same size with at least ``latent`` components (or as many as it could); ``None`` leaves it out.
    """
    heldout = _check_images(heldout, "held-out crops")
    if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)) or latent < 1:
        raise ValueError(f"bad latent {latent!r}: expected a positive number of values")
    latent = int(latent)
    pca_scores, k = None, 0
    if pca is not None:
        if pca.mean.shape[0] != heldout[0].size:
            raise ValueError(f"the PCA was fitted on images of {pca.mean.shape[0]} pixels, the held-out crops have {heldout[0].size}")
        k = min(latent, pca.components.shape[0])
        pca_pred = PCA(pca.mean, pca.components[:k], pca.fitted_on).reconstruct(heldout)
        pca_scores = score(heldout, pca_pred)
    mean_pred, down_pred = crop_mean_predictor(heldout), downsample_predictor(heldout, latent)
    train_pred = constant_predictor(heldout, train_mean)
    crop_mse = {"train_mean": crop_mse_of(heldout, train_pred), "crop_mean": crop_mse_of(heldout, mean_pred),
                "downsample": crop_mse_of(heldout, down_pred)}
    if pca is not None:
        crop_mse["pca"] = crop_mse_of(heldout, pca_pred)
    return BaselineScores(
        train_mean=score(heldout, train_pred),
        crop_mean=score(heldout, mean_pred),
        downsample=score(heldout, down_pred),
        downsample_grid=grid_for_numbers(heldout.shape[1:], latent),
        pca=pca_scores,
        pca_components=k,
        latent=latent,
        crop_mse=crop_mse,
    )


def crop_mse_of(images: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-image MSE of ``predicted`` against ``images``, both ``(N, H, W)``: ``(N,)`` float64."""
    diff = np.asarray(images, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    return (diff ** 2).mean(axis=(1, 2))


class BaselineCache:
    """Baselines per (size, latent) of a run; per size the training mean is computed and the PCA fitted once,
    on up to :data:`PCA_MAX_CROPS` training crops, with the most components any latent asks for."""

    def __init__(self, pca_max_crops: int = PCA_MAX_CROPS) -> None:
        self.pca_max_crops = pca_max_crops
        self._pca: dict[tuple[int, int], PCA] = {}
        self._train_mean: dict[tuple[int, int], float] = {}
        self._scores: dict[tuple[tuple[int, int], int], BaselineScores] = {}

    def get(self, train, heldout: np.ndarray, latent: int) -> BaselineScores:
        """``train``: the training crops, a sequence whose items are ``(1, H, W)`` tensors or ``(H, W)`` arrays
        (a :class:`~bench.quality.dataset.CropDataset`); ``heldout`` ``(N, H, W)``."""
        heldout = _check_images(heldout, "held-out crops")
        hw = tuple(heldout.shape[1:])
        key = (hw, int(latent))
        if key not in self._scores:
            if hw not in self._train_mean:
                total = 0.0
                for i in range(len(train)):  # one crop at a time: 1,152 crops of 1280x152 are 856 MiB stacked
                    total += float(np.asarray(train[i], dtype=np.float64).mean())
                self._train_mean[hw] = total / len(train)
            pca = self._pca.get(hw)
            if pca is None or (pca.components.shape[0] < latent and pca.components.shape[0] < pca.fitted_on - 1):
                picked = np.stack([np.asarray(train[i], dtype=np.float32).reshape(hw)
                                   for i in spread_indices(len(train), self.pca_max_crops)])
                pca = PCA.fit(picked, latent)
                self._pca[hw] = pca
            self._scores[key] = baseline_scores(heldout, latent, self._train_mean[hw], pca)
        return self._scores[key]
