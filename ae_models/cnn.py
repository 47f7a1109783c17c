"""The CNN autoencoder baseline the transformer is compared with.

Strided 3x3 convolutions halve the image four times (widths c, 2c, 4c, 8c), a 1x1 convolution
narrows the channels, adaptive pooling fixes the bottleneck grid, and a linear layer gives the
latent vector. The decoder mirrors it with transposed convolutions, and adds the bottleneck's first
channel upsampled to pixels (``preview``: a coarse image the convolutions refine; the output head
starts at mid-grey). Any input size works: the image is padded to a multiple of 16 and the output
cropped back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .catalog import CNN_PRESETS
from .sizes import SizeLike, as_hw, check_image_batch
from .bottleneck import add_preview, init_output
from .transformer import check_latent_dim, check_preset

STAGES = 4  # each halves H and W: the image is padded to a multiple of 2**STAGES



@dataclass
class CNNAEConfig:
    input_size: tuple = (201, 201)  # (H, W); sets the default bottleneck grid's aspect
    preset: str = "medium"
    in_channels: int = 1
    base_channels: int = 32         # widths c, 2c, 4c, 8c over the four stages
    latent_dim: int = 512           # 128..8192, as the transformer
    bottleneck_channels: int = 32   # 1x1 conv before flattening keeps the linear layer small
    bottleneck_grid: tuple = ()     # (gh, gw); empty = 4 rows and the input's aspect, at most 16 columns
    preview: bool = True            # add the bottleneck's first channel, upsampled to pixels, to the output: a coarse
                                    # image from the first steps, which the decoder refines (issue 18)

    def __post_init__(self) -> None:
        self.input_size = as_hw(self.input_size)
        check_latent_dim(self.latent_dim)
        for name in ("in_channels", "base_channels", "bottleneck_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.bottleneck_grid:
            height, width = self.input_size
            self.bottleneck_grid = (4, max(1, min(16, round(4 * width / height))))
        self.bottleneck_grid = tuple(int(v) for v in self.bottleneck_grid)
        if len(self.bottleneck_grid) != 2 or min(self.bottleneck_grid) < 1:
            raise ValueError(f"bottleneck_grid must be two positive integers (gh, gw), got {self.bottleneck_grid!r}")


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Autoencoder_CNN(nn.Module):  # noqa: N801 - the seed's class name
    """CNN autoencoder: ``forward(x) -> (reconstruction, None)``, ``Embedding(x) -> (B, latent_dim)``."""

    def __init__(self, config: CNNAEConfig | None = None, *, embedding_dim: int | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            if embedding_dim is not None:  # the seed's spelling: Autoencoder_CNN(embedding_dim=512)
                overrides["latent_dim"] = embedding_dim
            config = CNNAEConfig(**overrides)
        self.config = config
        c = config.base_channels
        widths = [c * 2**i for i in range(STAGES)]
        self.encoder = nn.Sequential(*[_down(w_in, w_out) for w_in, w_out in zip([config.in_channels] + widths[:-1], widths)])
        self.squeeze = nn.Conv2d(widths[-1], config.bottleneck_channels, 1)
        gh, gw = config.bottleneck_grid
        flat = config.bottleneck_channels * gh * gw
        self.to_latent = nn.Linear(flat, config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, flat)
        self.unsqueeze = nn.Conv2d(config.bottleneck_channels, widths[-1], 1)
        self.decoder = nn.Sequential(*[_up(w_in, w_out) for w_in, w_out in zip(widths[::-1], widths[::-1][1:] + [widths[0]])])
        self.head = nn.Conv2d(widths[0], config.in_channels, 3, padding=1)
        init_output(self.head)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, latent_dim)``."""
        check_image_batch(x, self.config.in_channels)
        m = 2**STAGES
        H, W = x.shape[-2:]
        x = F.pad(x, (0, math.ceil(W / m) * m - W, 0, math.ceil(H / m) * m - H))
        features = self.squeeze(self.encoder(x))  # (B, bc, H/16, W/16)
        pooled = F.adaptive_avg_pool2d(features, self.config.bottleneck_grid)  # (B, bc, gh, gw)
        return self.to_latent(pooled.flatten(1))

    def decode(self, z: torch.Tensor, output_size: SizeLike) -> torch.Tensor:
        """``(B, latent_dim) -> (B, C, H, W)`` for ``output_size`` ``(H, W)`` or ``"WxH"``."""
        H, W = as_hw(output_size if isinstance(output_size, str) else tuple(int(v) for v in output_size))
        m = 2**STAGES
        gh, gw = self.config.bottleneck_grid
        features = self.from_latent(z).reshape(z.shape[0], self.config.bottleneck_channels, gh, gw)
        grid = F.interpolate(features, size=(math.ceil(H / m), math.ceil(W / m)), mode="nearest")
        out = self.head(self.decoder(self.unsqueeze(grid)))[:, :, :H, :W]  # (B, C, H, W)
        if self.config.preview and self.config.bottleneck_channels >= self.config.in_channels:
            out = add_preview(out, features)
        return out

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """``(B, C, H, W) -> (reconstruction, None)``; a CNN has no attention to return."""
        if return_attention:
            raise ValueError("the CNN autoencoder has no attention maps; use a transformer family")
        return self.decode(self.encode(x), tuple(x.shape[-2:])), None

    def Embedding(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the seed's name
        """Latent vectors for the LSTM: ``(B, C, H, W) -> (B, latent_dim)``."""
        return self.encode(x)

    def get_config(self) -> dict[str, Any]:
        """A plain dict; ``create_cnn_autoencoder(**model.get_config())`` rebuilds the same model."""
        cfg = dataclasses.asdict(self.config)
        cfg["input_size"] = tuple(cfg["input_size"])
        return cfg

    def get_num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_cnn_autoencoder(input_size: SizeLike = (201, 201), preset: str = "medium", **overrides: Any) -> Autoencoder_CNN:
    """Build the CNN baseline; ``input_size`` is ``(H, W)`` or ``"WxH"``, presets as the transformer's."""
    check_preset(preset, CNN_PRESETS)
    fields = {f.name for f in dataclasses.fields(CNNAEConfig)}
    if "embedding_dim" in overrides:
        overrides["latent_dim"] = overrides.pop("embedding_dim")
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown CNN option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(fields))}")
    values = dict(CNN_PRESETS[preset])
    values.update(overrides)
    values["preset"] = preset
    return Autoencoder_CNN(CNNAEConfig(input_size=input_size, **values))
