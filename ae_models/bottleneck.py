"""The spatial bottleneck and output start both autoencoders share (issue 18).

A latent that keeps the image's layout learns fast: features are average-pooled onto a small
fixed grid of cells (4 rows, the input's aspect, at most 16 columns: any width arrives at the same
grid), flattened and projected to the latent; the decoder maps the latent back onto the cells and
resamples them to its own grid. The cells' first channel, upsampled to pixels, is added to the
output (``preview``): a coarse image from the first steps that the decoder refines. The pixel head
starts at mid-grey (:func:`init_output`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

OUTPUT_INIT = 0.5  # the middle of the [0, 1] pixel range the autoencoders reconstruct


def default_grid(input_size: tuple[int, int]) -> tuple[int, int]:
    """Bottleneck cells ``(rows, cols)`` for an input of ``(H, W)``: 4 rows and the aspect, at most 16 columns."""
    height, width = input_size
    return 4, max(1, min(16, round(4 * width / height)))


def check_grid(grid) -> tuple[int, int]:
    grid = tuple(grid)
    if len(grid) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in grid):
        raise ValueError(f"bottleneck_grid must be two positive integers (rows, cols), got {grid!r}")
    return grid


def pool_cells(features: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
    """``(B, D, gh, gw) -> (B, rows*cols, D)``: the mean of the features inside each cell (uneven cells allowed)."""
    return F.adaptive_avg_pool2d(features, cells).flatten(2).transpose(1, 2)


def unflatten_cells(flat: torch.Tensor, cells: tuple[int, int], channels: int) -> torch.Tensor:
    """``(B, rows*cols*channels)``, cell-major as :func:`pool_cells` leaves it, ``-> (B, channels, rows, cols)``."""
    return flat.reshape(flat.shape[0], cells[0] * cells[1], channels).transpose(1, 2).reshape(-1, channels, *cells)


def add_preview(image: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """``image (B, C, H, W)`` plus the first ``C`` channels of ``cells (B, c, rows, cols)``, bilinear to ``(H, W)``."""
    return image + F.interpolate(cells[:, : image.shape[1]], size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)


def init_output(head: nn.Module) -> None:
    """The pixel head starts at a flat mid-grey: zero weights, bias :data:`OUTPUT_INIT`.

    A random head starts far from every pixel and spends the first steps on the brightness alone
    (issue 18, tiny transformer at 201x201: held-out MSE at 6.6 dB untrained, 16.8 dB after 150 steps;
    from mid-grey it starts at 12.2 dB, and ended 600 steps 0.5 dB higher). Zero weights still get
    gradients (their input is not zero), so nothing stays stuck.
    """
    nn.init.zeros_(head.weight)
    if head.bias is not None:
        nn.init.constant_(head.bias, OUTPUT_INIT)


def cell_channels(cells: tuple[int, int], width: int, channels: int = 0) -> int:
    """Values per cell: ``channels``, or for 0 ``max(8, width // cells)`` (cells x channels = width where 8 allow)."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 0:
        raise ValueError(f"bottleneck_channels must be a positive integer (or 0 for automatic), got {channels!r}")
    return channels or max(8, width // (cells[0] * cells[1]))


class LatentGrid:
    """The transformer's side of the bottleneck (a mixin): tokens on a grid <-> latent. Needs ``config``
    (``pooling``, ``bottleneck_grid``, ``cell_channels``) and the Linear layers ``to_cells``, ``to_latent``,
    ``from_latent``, ``from_cells`` (the last two kept as attributes of the model, where profiles look for them)."""

    def tokens_to_latent(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(B, gh*gw, D) -> (B, latent)``."""
        if self.config.pooling == "mean":
            return self.to_latent(tokens.mean(dim=1))
        B, _, D = tokens.shape
        cells = self.to_cells(pool_cells(tokens.transpose(1, 2).reshape(B, D, *grid), self.config.bottleneck_grid))
        return self.to_latent(cells.flatten(1))  # (B, cells * c) -> (B, latent)

    def latent_to_tokens(self, z: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, latent) -> (tokens (B, gh*gw, D) or (B, 1, D) to broadcast, cells (B, c, rows, cols) or None)``."""
        if self.config.pooling == "mean":
            return self.from_latent(z)[:, None, :], None
        cells = unflatten_cells(self.from_latent(z), self.config.bottleneck_grid, self.config.cell_channels)
        resampled = F.interpolate(cells, size=grid, mode="bilinear", align_corners=False)  # (B, c, gh, gw)
        return self.from_cells(resampled.flatten(2).transpose(1, 2)), cells
