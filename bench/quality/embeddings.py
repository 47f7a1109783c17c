"""Do latent vectors of neighbouring crops look alike? A cheap check of embeddings for the LSTM.

The LSTM reads the latent vectors of consecutive crops; a useful embedding changes smoothly as
the window moves. For a few held-out bands (never trained on), a window of the case's size slides
along the band's roomier axis in equal steps; each window is embedded (``model.Embedding``, eval
mode); for every pair of windows we take their distance in pixels and the cosine similarity of
their latents. The figure is Spearman's rank correlation between distance and similarity, per
image, averaged over images: **negative is good** (nearer windows, more similar latents), 0 means
the latent does not reflect position at all, -1 is a perfectly monotone fall-off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.core import precision as prec
from bench.quality.dataset import PreparedImage

DEFAULT_IMAGES = 4     # bands used (the roomiest): cheap enough to run before and after training
DEFAULT_WINDOWS = 12   # windows per band


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equal-length sequences (average ranks for ties); NaN if
    either is constant. Pearson on pandas ranks, so scipy is not needed."""
    rx = pd.Series(np.asarray(x, dtype=float)).rank().to_numpy()
    ry = pd.Series(np.asarray(y, dtype=float)).rank().to_numpy()
    if len(rx) != len(ry):
        raise ValueError(f"sequences of different lengths: {len(rx)} and {len(ry)}")
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def window_offsets(band_hw: tuple[int, int], crop_hw: tuple[int, int], windows: int) -> tuple[str, list[int]]:
    """Where ``windows`` crops of ``crop_hw`` slide along a band of ``band_hw`` (both ``(H, W)``):
    the axis (``"x"`` or ``"y"``, whichever has more room) and distinct offsets in pixels along it."""
    room_y, room_x = band_hw[0] - crop_hw[0], band_hw[1] - crop_hw[1]
    axis, room = ("x", room_x) if room_x >= room_y else ("y", room_y)
    if room < 0:
        return axis, []
    return axis, sorted({int(round(v)) for v in np.linspace(0, room, windows)})


@dataclass
class EmbeddingCheck:
    spearman: float                  # mean over images of Spearman(distance, cosine similarity); negative = good
    per_image: dict[str, float] = field(default_factory=dict)
    windows: int = 0                 # windows embedded in all
    latent: int = 0


@torch.no_grad()
def neighbour_similarity(model: nn.Module, images: list[PreparedImage], crop_hw: tuple[int, int], device: torch.device,
                         precision: str = "fp32", max_images: int = DEFAULT_IMAGES, windows: int = DEFAULT_WINDOWS) -> EmbeddingCheck:
    """Slide ``crop_hw`` windows across the held-out images (give only those) of up to ``max_images`` images and
    correlate window distance with latent cosine similarity (see the module docstring)."""
    was_training = model.training
    model.eval()
    h, w = crop_hw
    # the roomiest bands give the widest range of distances
    plans = [(im, *window_offsets(im.pixels.shape, crop_hw, windows)) for im in images]
    plans = sorted([p for p in plans if len(p[2]) >= 3], key=lambda p: -p[2][-1])[:max_images]
    result = EmbeddingCheck(float("nan"))
    try:
        for image, axis, offsets in plans:
            band = image.pixels  # a held-out image, whole
            crops = [band[o:o + h, :w] if axis == "y" else band[:h, o:o + w] for o in offsets]
            x = torch.from_numpy(np.stack(crops)[:, None].copy()).to(device=device, dtype=prec.weight_dtype(precision))
            with prec.autocast(precision, device):
                z = model.Embedding(x)
            z = F.normalize(z.float(), dim=1)  # (n, latent)
            similarity = (z @ z.T).cpu().numpy()
            i, j = np.triu_indices(len(offsets), k=1)
            distance = np.abs(np.asarray(offsets)[i] - np.asarray(offsets)[j])
            result.per_image[image.name] = spearman(distance, similarity[i, j])
            result.windows += len(offsets)
            result.latent = int(z.shape[1])
    finally:
        model.train(was_training)
    values = [v for v in result.per_image.values() if np.isfinite(v)]
    result.spearman = float(np.mean(values)) if values else float("nan")
    return result
