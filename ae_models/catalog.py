"""The names users choose from (families, presets, attention kernels), without importing torch:
the command line lists and checks them before any model exists."""

from __future__ import annotations

from typing import Any

FAMILIES = ("transformer", "transformer-flat", "cnn")
ATTENTION_IMPLS = ("flash", "mem-efficient", "cudnn", "math", "eager", "auto")

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=128, num_heads=4),
    "small": dict(embed_dim=256, num_heads=4),
    "medium": dict(embed_dim=512, num_heads=8),
    "large": dict(embed_dim=1024, num_heads=16),
    "xlarge": dict(embed_dim=2048, num_heads=16),
}

CNN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(base_channels=8, latent_dim=128),
    "small": dict(base_channels=16, latent_dim=256),
    "medium": dict(base_channels=32, latent_dim=512),
    "large": dict(base_channels=64, latent_dim=1024),
    "xlarge": dict(base_channels=128, latent_dim=2048),
}


def is_transformer(family: str) -> bool:
    return family.startswith("transformer")
