"""The models under test: the transformer image autoencoder and the CNN baseline."""

from .attention import ATTENTION_IMPLS, UnsupportedAttentionError, detect_attention_kernels, record_attention_kernels
from .cnn import CNN_PRESETS, Autoencoder_CNN, create_cnn_autoencoder
from .registry import FAMILIES, build_model, is_transformer
from .sizes import as_hw, format_size, parse_size
from .transformer import (
    PRESETS, AttentionMaps, Autoencoder_Transformer, FlatTransformerAutoencoder, PatchTransformerAutoencoder,
    TransformerAEConfig, create_autoencoder,
)
from .visualize import visualize_attention_map

__all__ = [
    "ATTENTION_IMPLS", "CNN_PRESETS", "FAMILIES", "PRESETS", "AttentionMaps", "Autoencoder_CNN", "Autoencoder_Transformer",
    "FlatTransformerAutoencoder", "PatchTransformerAutoencoder", "TransformerAEConfig", "UnsupportedAttentionError",
    "as_hw", "build_model", "create_autoencoder", "create_cnn_autoencoder", "detect_attention_kernels", "format_size",
    "is_transformer", "parse_size", "record_attention_kernels", "visualize_attention_map",
]
