"""Reconstruction quality of an image against its original: MSE, PSNR and SSIM (scikit-image's).

Images are single-channel 2-D arrays ``(H, W)`` in the units given by ``data_range`` (1.0 for the
[0, 1] images of :mod:`bench.quality.dataset`). PSNR is in dB, ``10 * log10(data_range**2 / MSE)``, and
infinite for identical images; SSIM is in [-1, 1], 1 for identical images (scikit-image's default
7x7 uniform window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageMetrics:
    mse: float
    psnr_db: float
    ssim: float


def reconstruction_metrics(original: np.ndarray, reconstruction: np.ndarray, data_range: float = 1.0) -> ImageMetrics:
    """MSE, PSNR (dB) and SSIM of ``reconstruction`` against ``original``, both ``(H, W)``."""
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

    original = np.asarray(original, dtype=np.float64)
    reconstruction = np.asarray(reconstruction, dtype=np.float64)
    if original.shape != reconstruction.shape or original.ndim != 2:
        raise ValueError(f"expected two 2-D images of one shape, got {original.shape} and {reconstruction.shape}")
    mse = float(mean_squared_error(original, reconstruction))
    # skimage warns (divide by zero) and returns inf for identical images: say inf without the warning
    psnr = float("inf") if mse == 0 else float(peak_signal_noise_ratio(original, reconstruction, data_range=data_range))
    ssim = float(structural_similarity(original, reconstruction, data_range=data_range))
    return ImageMetrics(mse, psnr, ssim)


def batch_metrics(originals: np.ndarray, reconstructions: np.ndarray, data_range: float = 1.0) -> list[ImageMetrics]:
    """:func:`reconstruction_metrics` per image of ``(N, H, W)`` or ``(N, 1, H, W)`` stacks."""
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    if originals.ndim == 4:
        originals, reconstructions = originals[:, 0], reconstructions[:, 0]
    return [reconstruction_metrics(o, r, data_range) for o, r in zip(originals, reconstructions)]


def mean_metrics(metrics: list[ImageMetrics]) -> ImageMetrics:
    """Averages over images: MSE and SSIM arithmetic means, PSNR the mean of per-image dB (as usually reported)."""
    if not metrics:
        raise ValueError("no images to average")
    return ImageMetrics(float(np.mean([m.mse for m in metrics])), float(np.mean([m.psnr_db for m in metrics])),
                        float(np.mean([m.ssim for m in metrics])))
