"""The pipeline the embeddings exist for: frames -> ``Embedding`` -> LSTM.

The seed feeds ``autoencoder.Embedding(images)`` to an existing LSTM
(``lstm = LSTMModel(LSTMEmbdSize=embeddings.size(1), ...)``). This module gives that LSTM the
seed's spelling and puts the two together:

- :class:`LSTMModel`: ``nn.LSTM`` (batch first) and a linear head, ``(B, T, E) -> (B, T, output_size)``;
  by default the head predicts a vector of the embedding's size (the next window's embedding).
- :class:`SequencePipeline`: a batch of frame sequences ``(B, T, C, H, W)`` (C = 1 for the user's
  images: consecutive windows of a wide strip, :func:`frame_windows`) is encoded as one batch of
  ``B*T`` frames through ``Embedding``, reshaped to ``(B, T, latent)`` and run through the LSTM.
  With ``freeze_encoder`` (the default) the encoder takes no gradient, runs under ``no_grad`` (no
  activations kept for a backward that never comes) and stays in eval mode (a CNN's BatchNorm keeps
  its running statistics while the LSTM trains).

Sizes are ``(H, W)`` in tensor order, as everywhere in ``ae_models``.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn as nn
from torch.profiler import record_function

DEFAULT_HIDDEN = 256  # a mid-sized LSTM: the seed does not say what the user's existing one has
DEFAULT_LAYERS = 2
# profiler scopes around the two parts (a few µs a step when no profiler runs): the harness reads the
# share of a step each takes from them, and they label a user's own profiles the same way
ENCODER_SCOPE = "ae.sequence.encoder"
LSTM_SCOPE = "ae.sequence.lstm"


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class LSTMModel(nn.Module):
    """``nn.LSTM`` over embeddings, then a linear head per time step.

    ``forward(z)``: ``(B, T, LSTMEmbdSize) -> (B, T, output_size)``, or one unbatched sequence
    ``(T, LSTMEmbdSize) -> (T, output_size)`` as ``nn.LSTM`` takes it. ``output_size`` defaults to
    ``LSTMEmbdSize``: the head predicts the next frame's embedding.
    """

    def __init__(self, LSTMEmbdSize: int, hidden_size: int = DEFAULT_HIDDEN,  # noqa: N803 - the seed's keyword
                 num_layers: int = DEFAULT_LAYERS, output_size: Optional[int] = None, dropout: float = 0.0,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.embedding_size = _positive_int("LSTMEmbdSize", LSTMEmbdSize)
        _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        self.output_size = _positive_int("output_size", output_size) if output_size is not None else LSTMEmbdSize
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        # nn.LSTM applies dropout between layers only: with one layer it would warn and do nothing
        made = dict(device=device, dtype=dtype)  # built in place (Module.to cannot swap the tensors of a fake-tensor trace)
        self.lstm = nn.LSTM(LSTMEmbdSize, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0, **made)
        self.head = nn.Linear(hidden_size, self.output_size, **made)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() not in (2, 3) or z.shape[-1] != self.embedding_size:
            raise ValueError(f"LSTMModel expects embeddings (B, T, {self.embedding_size}) or (T, {self.embedding_size}), "
                             f"got a tensor of shape {tuple(z.shape)}")
        out, _ = self.lstm(z)  # (B, T, hidden)
        return self.head(out)  # (B, T, output_size)


def latent_size(autoencoder: nn.Module) -> Optional[int]:
    """The autoencoder's embedding size from its config, or None when it has none (a plug-in)."""
    return getattr(getattr(autoencoder, "config", None), "latent_dim", None)


def lstm_input_size(lstm: nn.Module) -> Optional[int]:
    """The embedding size an LSTM takes: an :class:`LSTMModel`'s, an ``nn.LSTM``'s, or None."""
    if isinstance(lstm, LSTMModel):
        return lstm.embedding_size
    if isinstance(lstm, nn.RNNBase):
        return lstm.input_size
    return None


def check_frames(frames: torch.Tensor, channels: int) -> None:
    """Reject anything but frame sequences ``(B, T, channels, H, W)``, naming the shape received."""
    if not isinstance(frames, torch.Tensor) or frames.dim() != 5:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"expected frame sequences (B, T, {channels}, H, W), got {shape}; "
                         f"a single sequence is frames[None], a batch of images (B, {channels}, H, W) is images[:, None]")
    if frames.shape[2] != channels:
        raise ValueError(f"expected frame sequences (B, T, {channels}, H, W): the model takes {channels} channel(s), "
                         f"got {frames.shape[2]} (input shape {tuple(frames.shape)})")


class SequencePipeline(nn.Module):
    """``frames (B, T, C, H, W) -> autoencoder.Embedding -> (B, T, latent) -> lstm -> (B, T, out)``."""

    def __init__(self, autoencoder: nn.Module, lstm: nn.Module, freeze_encoder: bool = True) -> None:
        super().__init__()
        if not callable(getattr(autoencoder, "Embedding", None)):
            raise ValueError(f"the autoencoder ({type(autoencoder).__name__}) has no Embedding(x) method")
        latent, wanted = latent_size(autoencoder), lstm_input_size(lstm)
        if latent is not None and wanted is not None and latent != wanted:
            raise ValueError(f"the autoencoder's embeddings have {latent} values but the LSTM takes {wanted}: "
                             f"build it with LSTMModel(LSTMEmbdSize={latent}, ...)")
        self.autoencoder = autoencoder
        self.lstm = lstm
        self.in_channels = int(getattr(getattr(autoencoder, "config", None), "in_channels", 1))
        self.freeze_encoder = True
        self.set_freeze_encoder(freeze_encoder)

    def set_freeze_encoder(self, freeze: bool = True) -> None:
        """Frozen: the encoder's weights take no gradient, it runs under ``no_grad`` in eval mode.
        Not frozen (fine-tuned): it trains with the LSTM."""
        self.freeze_encoder = bool(freeze)
        for p in self.autoencoder.parameters():
            p.requires_grad_(not self.freeze_encoder)
        self.train(self.training)

    def train(self, mode: bool = True) -> "SequencePipeline":
        super().train(mode)
        if self.freeze_encoder:
            self.autoencoder.eval()  # a frozen CNN's BatchNorm must not drift with the LSTM's batches
        return self

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W) -> (B, T, latent)``: the ``B*T`` frames through ``Embedding`` as one batch."""
        check_frames(frames, self.in_channels)
        B, T = frames.shape[:2]
        x = frames.reshape(B * T, *frames.shape[2:])  # (B*T, C, H, W)
        with record_function(ENCODER_SCOPE), torch.no_grad() if self.freeze_encoder else contextlib.nullcontext():
            z = self.autoencoder.Embedding(x)  # (B*T, latent)
        return z.reshape(B, T, z.shape[-1])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W) -> (B, T, output)``: the LSTM's output per frame."""
        z = self.encode(frames)
        with record_function(LSTM_SCOPE):
            out = self.lstm(z)
        return out[0] if isinstance(out, tuple) else out  # a bare nn.LSTM returns (output, (h, c))


def frame_windows(strip: torch.Tensor, width: int, step: int, count: Optional[int] = None) -> torch.Tensor:
    """Consecutive windows of a wide strip: ``(B, C, H, W_strip) -> (B, T, C, H, width)``.

    Windows start every ``step`` pixels from the left (``step < width`` overlaps them); ``count``
    keeps the first ``count`` (all that fit by default). A view where the strip allows, no copy.
    """
    if not isinstance(strip, torch.Tensor) or strip.dim() != 4:
        shape = tuple(strip.shape) if isinstance(strip, torch.Tensor) else type(strip).__name__
        raise ValueError(f"expected a batch of strips (B, C, H, W), got {shape}")
    _positive_int("width", width)
    _positive_int("step", step)
    if width > strip.shape[-1]:
        raise ValueError(f"a window of width {width} does not fit a strip {strip.shape[-1]} pixels wide")
    windows = strip.unfold(-1, width, step)  # (B, C, H, T, width)
    if count is not None:
        _positive_int("count", count)
        if count > windows.shape[3]:
            raise ValueError(f"{count} windows of width {width} every {step} px need a strip of "
                             f"{width + (count - 1) * step} px, got {strip.shape[-1]}")
        windows = windows[:, :, :, :count]
    return windows.permute(0, 3, 1, 2, 4)  # (B, T, C, H, width)


__all__ = ["DEFAULT_HIDDEN", "DEFAULT_LAYERS", "ENCODER_SCOPE", "LSTM_SCOPE", "LSTMModel", "SequencePipeline", "check_frames", "frame_windows"]
