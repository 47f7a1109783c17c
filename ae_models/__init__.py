"""The models under test: the transformer image autoencoder and the CNN baseline.

The names are loaded on first use (PEP 562), so ``from ae_models.catalog import PRESETS`` or
``from ae_models.sizes import parse_size`` does not import torch; ``from ae_models import
build_model`` imports what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ATTENTION_IMPLS": "catalog", "CNN_PRESETS": "catalog", "FAMILIES": "catalog", "PRESETS": "catalog",
    "is_transformer": "catalog",
    "as_hw": "sizes", "format_size": "sizes", "parse_size": "sizes",
    "UnsupportedAttentionError": "attention", "detect_attention_kernels": "attention", "record_attention_kernels": "attention",
    "Autoencoder_CNN": "cnn", "create_cnn_autoencoder": "cnn",
    "build_model": "registry",
    "AttentionMaps": "transformer", "Autoencoder_Transformer": "transformer", "FlatTransformerAutoencoder": "transformer",
    "PatchTransformerAutoencoder": "transformer", "TransformerAEConfig": "transformer", "create_autoencoder": "transformer",
    "visualize_attention_map": "visualize",
    "LSTMModel": "sequence", "SequencePipeline": "sequence", "frame_windows": "sequence",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ae_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
