"""Transformer image autoencoder with the seed's API (``create_autoencoder``, ``Embedding``, ...).

Two tokenizers share one set of pre-LN blocks:

- ``patch`` (default): ViT/MAE-style. The image is padded to a multiple of the patch size, cut
  into patches, embedded, given fixed 2-D sin-cos positions computed for whatever grid arrives
  (so one model serves 1280x152, 640x152, 2000x152 without retraining), encoded and pooled onto the
  latent through the cells of ``ae_models.bottleneck``; the decoder maps the latent back to one token
  per output patch, adds positions, runs its blocks, predicts pixels per patch, adds the cells' coarse
  preview and crops the padding. ``pooling="mean"`` is the first design (issue 18: it did not learn).
- ``flat``: the seed's V2.0 layout exactly: flatten -> ``Linear(H*W, latent)`` -> one token ->
  blocks of width ``latent`` -> ``Linear(latent, H*W)``. Kept to measure what it really costs:
  at 1280x152 and latent 2048 the two projections alone hold 797M parameters, and attention over
  one token is the identity on V, so W_q and W_k never receive a gradient.

Sizes: ``input_size`` is ``(H, W)`` in tensor order, or a ``"WxH"`` string (``"1280x152"``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import ATTENTION_IMPLS, check_attention_name
from .catalog import PRESETS
from .bottleneck import LatentGrid, add_preview, cell_channels, check_grid, default_grid, init_output
from .layers import BlockStack, init_weights
from .sizes import SizeLike, as_hw, check_image_batch, format_size

LATENT_MIN, LATENT_MAX = 128, 8192
TOKENIZERS = ("patch", "flat")
POOLINGS = ("grid", "mean")

# Widths follow the seed (128..2048). Depth 2+1 blocks with an MLP ratio of 2 put each preset
# within 30% of the seed's parameter table at 201x201, latent 512 (see README for the figures):
# with width fixed per preset, doubling it quadruples the block parameters, as the seed's table does.

# The seed's keyword names, accepted so the user's existing calls keep working.
_SEED_ALIASES = {"use_gradient_checkpointing": "grad_checkpointing", "use_flash_attention": "attention"}


def check_latent_dim(latent_dim: int) -> int:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or not LATENT_MIN <= latent_dim <= LATENT_MAX:
        raise ValueError(f"latent_dim must be an integer from {LATENT_MIN} to {LATENT_MAX}, got {latent_dim!r}")
    return latent_dim


def check_preset(preset: str, presets: dict) -> str:
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    return preset


@dataclass
class TransformerAEConfig:
    """Everything that defines a transformer autoencoder; ``get_config()`` returns it as a dict."""

    input_size: tuple = (201, 201)  # (H, W): the default output size, and the only size a flat model takes
    preset: str = "medium"          # the preset the defaults came from (recorded, not re-applied)
    tokenizer: str = "patch"        # "patch" (real attention over patches) or "flat" (the seed's V2.0)
    in_channels: int = 1            # the user's images are single-channel
    embed_dim: int = 512            # token width (patch); a flat model's width is latent_dim, as in the seed
    latent_dim: int = 512           # the embedding handed to the LSTM, 128..8192
    depth: int = 2                  # encoder blocks
    decoder_depth: int = 1          # decoder blocks: reconstruction needs less depth than encoding
    num_heads: int = 8              # head_dim = width / heads; 64 suits flash kernels
    mlp_ratio: float = 2.0          # 2 rather than 4 keeps presets near the seed's parameter table
    patch_size: int = 16            # 201x201 -> 13x13 tokens, 1280x152 -> 80x10
    pooling: str = "grid"           # "grid": pool tokens onto bottleneck_grid cells; "mean": one mean (first design)
    bottleneck_grid: tuple = ()     # (rows, cols) of cells; empty = bottleneck.default_grid(input_size)
    preview: bool = True            # add the cells' upsampled first channel to the output (bottleneck.add_preview)
    bottleneck_channels: int = 0    # values per cell; 0 = max(8, embed_dim // cells): cells x channels = embed_dim
    dropout: float = 0.0            # autoencoders are rarely dropout-regularised; off by default
    attention: str = "auto"         # one of ATTENTION_IMPLS
    grad_checkpointing: bool = False  # per block, use_reentrant=False

    def __post_init__(self) -> None:
        self.input_size = as_hw(self.input_size)
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.bottleneck_grid = check_grid(self.bottleneck_grid or default_grid(self.input_size))
        cell_channels(self.bottleneck_grid, self.embed_dim, self.bottleneck_channels)  # checks the value
        check_latent_dim(self.latent_dim)
        check_attention_name(self.attention)
        for name in ("in_channels", "embed_dim", "depth", "num_heads", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.decoder_depth < 0:
            raise ValueError(f"decoder_depth must be >= 0, got {self.decoder_depth}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        width = self.width
        if width % self.num_heads:
            raise ValueError(f"width {width} ({'latent_dim' if self.tokenizer == 'flat' else 'embed_dim'}) "
                             f"is not divisible by num_heads={self.num_heads}; choose heads that divide it")
        if self.tokenizer == "patch":
            if self.embed_dim % 4:
                raise ValueError(f"embed_dim must be divisible by 4 for 2-D sin-cos positions, got {self.embed_dim}")
            height, width_px = self.input_size
            if self.patch_size > min(height, width_px):
                raise ValueError(f"patch_size {self.patch_size} is larger than the image {format_size(self.input_size)}; "
                                 f"use a patch size of at most {min(height, width_px)}")

    @property
    def width(self) -> int:
        """Token width of the blocks."""
        return self.latent_dim if self.tokenizer == "flat" else self.embed_dim

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def cell_channels(self) -> int:  # values per bottleneck cell (grid pooling)
        return cell_channels(self.bottleneck_grid, self.embed_dim, self.bottleneck_channels)


def sincos_2d(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE), ``(grid_h * grid_w, dim)``, row-major.

    Half the channels encode the row, half the column, so any grid gets a consistent embedding.
    """
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))  # (dim/4,)
    rows = torch.arange(grid_h, dtype=torch.float64)[:, None] * omega  # (gh, dim/4)
    cols = torch.arange(grid_w, dtype=torch.float64)[:, None] * omega  # (gw, dim/4)
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(grid_h, grid_w, 2 * quarter)
    col_emb = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(grid_h, grid_w, 2 * quarter)
    return torch.cat([row_emb, col_emb], dim=-1).reshape(grid_h * grid_w, dim).float()


class AttentionMaps(dict):
    """``{"layer_0": (B, N, N), ..., "average": (B, N, N)}`` head-averaged attention, rows sum to 1.

    ``grid_size`` is the token grid ``(gh, gw)``, so that a map's row ``i`` (what query patch ``i``
    looks at) reshapes to ``(gh, gw)`` and can be drawn over the image.
    """

    grid_size: tuple[int, int] = (1, 1)


class _AutoencoderBase(nn.Module):
    """API shared by both tokenizers."""

    config: TransformerAEConfig
    encoder: BlockStack
    decoder: BlockStack

    # -- switches ------------------------------------------------------------------------
    def set_attention(self, attention: str) -> None:
        """Switch every block's attention implementation (one of ``ATTENTION_IMPLS``)."""
        check_attention_name(attention)
        self.config.attention = attention
        for stack in (self.encoder, self.decoder):
            for block in stack.blocks:
                block.attn.attention = attention

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block (``use_reentrant=False``): activations recomputed in backward."""
        self.config.grad_checkpointing = bool(enable)
        self.encoder.grad_checkpointing = bool(enable)
        self.decoder.grad_checkpointing = bool(enable)

    # -- the seed's API ----------------------------------------------------------------------
    def Embedding(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the seed's name
        """Latent vectors for the LSTM: ``(B, C, H, W) -> (B, latent_dim)``."""
        return self.encode(x)[0]

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """``(B, C, H, W) -> (reconstruction (B, C, H, W), AttentionMaps or None)``.

        With ``return_attention`` the maps are computed with the eager kernel, whatever
        ``attention`` is set to: fused kernels never form them.
        """
        if return_attention:
            return self._forward_with_maps(x)
        z, _ = self.encode(x)
        return self.decode(z, tuple(x.shape[-2:])), None

    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor) -> AttentionMaps:
        """Attention of every layer (encoder then decoder) and their average, for ``x``."""
        return self._forward_with_maps(x)[1]

    def _forward_with_maps(self, x: torch.Tensor):
        previous = self.config.attention
        self.set_attention("eager")
        try:
            z, grid, enc_maps = self._encode(x, return_weights=True)
            recon, dec_maps = self._decode(z, tuple(x.shape[-2:]), return_weights=True)
        finally:
            self.set_attention(previous)
        maps = AttentionMaps()
        layers = [m.mean(dim=1) for m in enc_maps + dec_maps]  # (B, N, N), averaged over heads
        for i, layer in enumerate(layers):
            maps[f"layer_{i}"] = layer
        maps["average"] = torch.stack(layers).mean(dim=0)
        maps.grid_size = grid
        return recon, maps

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C, H, W) -> (z (B, latent_dim), token grid)``."""
        z, grid, _ = self._encode(x, return_weights=False)
        return z, grid

    def decode(self, z: torch.Tensor, output_size: SizeLike) -> torch.Tensor:
        """``z (B, latent_dim) -> (B, C, H, W)`` for ``output_size`` ``(H, W)`` or ``"WxH"``."""
        if not isinstance(output_size, str):
            output_size = tuple(int(v) for v in output_size)
        return self._decode(z, as_hw(output_size), return_weights=False)[0]

    def get_config(self) -> dict[str, Any]:
        """A plain dict; ``create_autoencoder(**model.get_config())`` rebuilds the same model."""
        cfg = dataclasses.asdict(self.config)
        cfg["input_size"] = tuple(cfg["input_size"])
        return cfg

    def get_num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # Each tokenizer defines _encode(x, return_weights) -> (z, grid, maps)
    # and _decode(z, output_size, return_weights) -> (image, maps).


class PatchTransformerAutoencoder(LatentGrid, _AutoencoderBase):
    """Patch tokens, any input size (see the module docstring)."""

    def __init__(self, config: TransformerAEConfig) -> None:
        super().__init__()
        self.config = config
        c, p, d = config.in_channels, config.patch_size, config.embed_dim
        self.patch_embed = nn.Linear(c * p * p, d)
        self.encoder = BlockStack(config.depth, d, config.num_heads, config.mlp_ratio, config.dropout, config.attention)
        self.encoder_norm = nn.LayerNorm(d)
        pooled = d if config.pooling == "mean" else config.bottleneck_grid[0] * config.bottleneck_grid[1] * config.cell_channels
        if config.pooling == "grid":
            self.to_cells, self.from_cells = nn.Linear(d, config.cell_channels), nn.Linear(config.cell_channels, d)
        self.to_latent, self.from_latent = nn.Linear(pooled, config.latent_dim), nn.Linear(config.latent_dim, pooled)
        self.decoder = BlockStack(config.decoder_depth, d, config.num_heads, config.mlp_ratio, config.dropout, config.attention)
        self.decoder_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, c * p * p)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.apply(init_weights)
        init_output(self.head)
        self.set_grad_checkpointing(config.grad_checkpointing)

    def grid_for(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Token grid for an image of ``(H, W)``: padded up to whole patches."""
        p = self.config.patch_size
        return math.ceil(hw[0] / p), math.ceil(hw[1] / p)

    def _pos(self, grid: tuple[int, int], ref: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # traced into the graph (constant there): a cache write would make the
            # compiled model's guards fail on its second call and compile it all again
            return sincos_2d(grid[0], grid[1], self.config.embed_dim).to(device=ref.device, dtype=ref.dtype)[None]
        key = (grid, ref.device, ref.dtype)
        pos = self._pos_cache.get(key)
        if pos is None:
            pos = sincos_2d(grid[0], grid[1], self.config.embed_dim).to(device=ref.device, dtype=ref.dtype)[None]
            self._pos_cache[key] = pos  # (1, N, D)
        return pos

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C, H, W) -> (B, gh*gw, p*p*C)``, zero-padding right and bottom to whole patches."""
        p = self.config.patch_size
        B, C, H, W = x.shape
        gh, gw = self.grid_for((H, W))
        x = F.pad(x, (0, gw * p - W, 0, gh * p - H))
        x = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
        return x.reshape(B, gh * gw, p * p * C), (gh, gw)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
        """``(B, gh*gw, p*p*C) -> (B, C, H, W)``, cropping the padding."""
        p, C = self.config.patch_size, self.config.in_channels
        B = tokens.shape[0]
        gh, gw = grid
        x = tokens.reshape(B, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
        return x.reshape(B, C, gh * p, gw * p)[:, :, : hw[0], : hw[1]]

    def _encode(self, x, return_weights):
        check_image_batch(x, self.config.in_channels)
        p = self.config.patch_size
        if p > min(x.shape[-2:]):
            raise ValueError(f"patch_size {p} is larger than the image {format_size(tuple(x.shape[-2:]))}")
        tokens, grid = self.patchify(x)
        tokens = self.patch_embed(tokens)  # (B, N, D)
        tokens = tokens + self._pos(grid, tokens)
        tokens, maps = self.encoder(tokens, return_weights)
        return self.tokens_to_latent(self.encoder_norm(tokens), grid), grid, maps

    def _decode(self, z, output_size, return_weights):
        grid = self.grid_for(output_size)
        tokens, cells = self.latent_to_tokens(z, grid)
        tokens = tokens + self._pos(grid, tokens)  # (B, N, D)
        tokens, maps = self.decoder(tokens, return_weights)
        pixels = self.head(self.decoder_norm(tokens))  # (B, N, p*p*C)
        image = self.unpatchify(pixels, grid, output_size)
        if cells is not None and self.config.preview:
            image = add_preview(image, cells)
        return image, maps


class FlatTransformerAutoencoder(_AutoencoderBase):
    """The seed's V2.0 layout: the whole flattened image is one token of width ``latent_dim``."""

    def __init__(self, config: TransformerAEConfig) -> None:
        super().__init__()
        self.config = config
        H, W = config.input_size
        pixels, d = config.in_channels * H * W, config.latent_dim
        self.input_proj = nn.Linear(pixels, d)
        self.enc_pos = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = BlockStack(config.depth, d, config.num_heads, config.mlp_ratio, config.dropout, config.attention)
        self.encoder_norm = nn.LayerNorm(d)
        self.expand = nn.Linear(d, d)
        self.dec_pos = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder = BlockStack(config.decoder_depth, d, config.num_heads, config.mlp_ratio, config.dropout, config.attention)
        self.decoder_norm = nn.LayerNorm(d)
        self.output_proj = nn.Linear(d, pixels)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.enc_pos, std=0.02)
        nn.init.trunc_normal_(self.dec_pos, std=0.02)
        self.set_grad_checkpointing(config.grad_checkpointing)

    def _encode(self, x, return_weights):
        check_image_batch(x, self.config.in_channels)
        if tuple(x.shape[-2:]) != tuple(self.config.input_size):
            got, want = tuple(x.shape[-2:]), tuple(self.config.input_size)
            hint = " (input_size is (H, W) in tensor order: did you pass (W, H)?)" if got == want[::-1] else ""
            raise ValueError(f"a flat model is bound to its size: built for {format_size(want)} (tensor H={want[0]}, W={want[1]}), "
                             f"got {format_size(got)} (tensor shape {tuple(x.shape)}){hint}")
        token = self.input_proj(x.flatten(1))[:, None, :] + self.enc_pos  # (B, 1, latent)
        token, maps = self.encoder(token, return_weights)
        return self.encoder_norm(token)[:, 0], (1, 1), maps

    def _decode(self, z, output_size, return_weights):
        if tuple(output_size) != tuple(self.config.input_size):
            raise ValueError(f"a flat model decodes only its own size {format_size(self.config.input_size)}, asked for {format_size(output_size)}")
        token = self.expand(z)[:, None, :] + self.dec_pos  # (B, 1, latent)
        token, maps = self.decoder(token, return_weights)
        flat = self.output_proj(self.decoder_norm(token))[:, 0]  # (B, C*H*W)
        H, W = self.config.input_size
        return flat.reshape(-1, self.config.in_channels, H, W), maps


def make_config(input_size: SizeLike = (201, 201), preset: str = "medium", **overrides: Any) -> TransformerAEConfig:
    """Preset defaults, then the user's overrides (seed keyword names accepted)."""
    check_preset(preset, PRESETS)
    overrides = dict(overrides)
    for seed_name, name in _SEED_ALIASES.items():
        if seed_name in overrides:
            value = overrides.pop(seed_name)
            if name == "attention":
                value = "auto" if value else "eager"  # the seed's flag: SDPA when True, explicit softmax when False
            overrides.setdefault(name, value)
    fields = {f.name for f in dataclasses.fields(TransformerAEConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(fields | set(_SEED_ALIASES)))}")
    values = dict(PRESETS[preset])
    values.setdefault("latent_dim", values["embed_dim"])
    values.update(overrides)
    values["preset"] = preset
    return TransformerAEConfig(input_size=input_size, **values)


def create_autoencoder(input_size: SizeLike = (201, 201), preset: str = "medium", **overrides: Any) -> _AutoencoderBase:
    """Build the transformer autoencoder.

    Args:
        input_size: ``(H, W)`` in tensor order, or ``"WxH"`` (``"1280x152"`` is 1280 wide).
        preset: ``tiny``, ``small``, ``medium``, ``large`` or ``xlarge`` (widths 128..2048).
        **overrides: any :class:`TransformerAEConfig` field (``latent_dim``, ``depth``,
            ``num_heads``, ``patch_size``, ``tokenizer``, ``attention``, ...), or the seed's
            ``use_flash_attention`` / ``use_gradient_checkpointing``.
    """
    config = make_config(input_size, preset, **overrides)
    cls = FlatTransformerAutoencoder if config.tokenizer == "flat" else PatchTransformerAutoencoder
    return cls(config)


# The seed's class name, for users' existing imports.
Autoencoder_Transformer = PatchTransformerAutoencoder

__all__ = [
    "ATTENTION_IMPLS", "PRESETS", "TransformerAEConfig", "PatchTransformerAutoencoder", "FlatTransformerAutoencoder",
    "Autoencoder_Transformer", "AttentionMaps", "create_autoencoder", "make_config", "sincos_2d",
]
