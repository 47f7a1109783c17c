"""The downstream check's simple predictors and its per-image grouping: a ridge one-step linear
predictor of the next embedding, and errors averaged per source image (the unit its intervals resample).
Embeddings are ``(..., latent)`` in standardised units (:mod:`bench.downstream.downstream`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

RIDGE_PENALTIES = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # tried on held-back training images (standardised units)
BOOTSTRAP = 2000


@dataclass
class Ridge:
    """A one-step linear predictor ``z[t+1] = z[t] @ weight + bias`` on ``(..., latent)`` embeddings."""

    weight: torch.Tensor  # (latent, latent)
    bias: torch.Tensor    # (latent,)
    penalty: float

    @classmethod
    def fit(cls, sequences: torch.Tensor, penalty: float) -> "Ridge":
        """Least squares with an L2 penalty on every consecutive pair of ``sequences`` ``(N, T+1, latent)``.
        Solved in whichever of the primal (latent x latent) or dual (pairs x pairs) form is smaller."""
        x = sequences[:, :-1].reshape(-1, sequences.shape[-1]).double()
        y = sequences[:, 1:].reshape(-1, sequences.shape[-1]).double()
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        n, d = xc.shape
        if d <= n:
            weight = torch.linalg.solve(xc.T @ xc + penalty * torch.eye(d, dtype=xc.dtype), xc.T @ yc)
        else:  # more dimensions than pairs (latent 8192): W = X^T (X X^T + penalty I)^-1 Y
            weight = xc.T @ torch.linalg.solve(xc @ xc.T + penalty * torch.eye(n, dtype=xc.dtype), yc)
        bias = y_mean - x_mean @ weight
        return cls(weight.float(), bias.float(), float(penalty))

    def predict(self, sequences: torch.Tensor) -> torch.Tensor:
        """Predictions of windows 1..T from 0..T-1: ``(N, T+1, latent) -> (N, T, latent)``."""
        return sequences[:, :-1] @ self.weight + self.bias


def fit_ridge(sequences: torch.Tensor, groups: list[str], penalties=RIDGE_PENALTIES) -> Ridge:
    """The penalty with the lowest error on a quarter of the training images (held back), refitted on all."""
    names = sorted(set(groups))
    back = set(names[::4]) if len(names) >= 2 else set()
    mask = torch.tensor([g in back for g in groups])
    if back and (~mask).any():
        scores = {p: F.mse_loss(Ridge.fit(sequences[~mask], p).predict(sequences[mask]), sequences[mask][:, 1:]).item()
                  for p in penalties}
        penalty = min(penalties, key=lambda p: (scores[p], p))
    else:
        penalty = penalties[len(penalties) // 2]
    return Ridge.fit(sequences, penalty)


def per_image(errors: np.ndarray, images: list[str]) -> dict[str, float]:
    """Per-sequence errors ``(N,)`` averaged per source image (``images[i]``: sequence i's image)."""
    return {name: float(np.mean([e for e, n in zip(errors, images) if n == name])) for name in dict.fromkeys(images)}


def bootstrap_interval(values: np.ndarray, groups: np.ndarray, seed: int, resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values``, resampling whole ``groups`` (images): values of one
    group share pixels, so they are not independent draws."""
    ids, index = np.unique(groups, return_inverse=True)
    sums, counts = np.bincount(index, weights=values), np.bincount(index).astype(float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(ids), size=(resamples, len(ids)))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
