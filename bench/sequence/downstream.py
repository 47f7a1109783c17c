"""Do the autoencoder's embeddings serve the LSTM? One family and latent size at a time:

1. **Data** (``bench/quality/dataset.py``, read only): the bundled photographs (or ``--images``), each
   resized (never shrunk) so that a strip of ``context + 1`` windows fits both of its bands: the top
   75% trains, the bottom 25% is held out, 8 rows between them unused. ``rows`` random rows per image
   and band; along each row, windows of ``window`` (``(H, W)``, 640x152 by default) every ``step`` px
   across the image's whole width: consecutive, overlapping windows of a wide strip.
2. **Autoencoder**: trained on windows cut from the training bands (reconstruction MSE, AdamW, the
   harness's own train step) for ``ae_seconds`` of training clock, then frozen.
3. **Embeddings**: every window of every row through ``SequencePipeline.encode`` (eval mode, no
   gradient). Standardised per dimension with the training rows' mean and std, so every error below is
   in units of a dimension's spread, and "predict the mean" scores about 1.
4. **LSTM**: ``LSTMModel`` (2 layers, hidden 256, head to the latent size) reads windows ``0..T-1`` of a
   sequence (every run of ``context + 1`` consecutive windows of a training row) and predicts windows
   ``1..T`` (teacher forcing); AdamW, MSE, ``lstm_steps`` steps of ``batch`` sequences. The training loss
   and the held-out MSE are followed along the way (the curves).
5. **Scores**, on the held-out rows, at every position of every sequence: the LSTM's MSE, "repeat the
   last embedding" (window t predicts window t+1) and "the mean embedding". The difference between the
   LSTM and repeat-last gets a 95% bootstrap interval over held-out sequences. In pixels, for the last
   position of up to ``pixel_sequences`` held-out sequences: the prediction decoded by the autoencoder's
   own decoder against the true next window, next to the decoded last embedding and the decoded true
   next embedding (the decoder's floor) -- pixels in [0, 1], the same units for both families.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ae_models import build_model
from ae_models.sequence import LSTMModel, SequencePipeline, frame_windows

from bench.core.steps import train_step
from bench.quality.dataset import CropDataset, PreparedImage, make_split, sample_rects

WINDOW = (152, 640)   # (H, W): a 640x152 window
STEP = 64             # px between consecutive windows: each overlaps the next by 90%
CONTEXT = 8           # windows the LSTM reads before each prediction
TRAIN_ROWS, HELDOUT_ROWS = 16, 8   # rows per image and band
AE_SECONDS = 30.0
AE_BATCH = 8
LSTM_STEPS = 300
LSTM_BATCH = 32
LSTM_LR = 1e-3
AE_LR = 1e-3           # the quality run's AdamW rate: trains both families in a few hundred steps
EVAL_POINTS = 10       # held-out evaluations over the LSTM's training
PIXEL_SEQUENCES = 64
BOOTSTRAP = 2000


@dataclass
class Rows:
    """Embedded rows of one band: ``z[i]`` is ``(windows, latent)``; ``strips[i]`` the row's pixels ``(H, W_image)``."""

    z: list[torch.Tensor]
    strips: list[torch.Tensor]

    def sequences(self, length: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Every run of ``length`` consecutive windows: ``(N, length, latent)``, and (row, first window) of each."""
        runs, where = [], []
        for i, z in enumerate(self.z):
            if z.shape[0] >= length:
                runs.append(z.unfold(0, length, 1).permute(0, 2, 1))  # (n - length + 1, length, latent)
                where += [(i, s) for s in range(z.shape[0] - length + 1)]
        if not runs:
            raise ValueError(f"no row is long enough for a sequence of {length} windows")
        return torch.cat(runs), where


@dataclass
class CurvePoint:
    step: int
    train_mse: float      # mean LSTM training loss since the previous point (NaN at step 0)
    heldout_mse: float


@dataclass
class DownstreamResult:
    family: str
    preset: str
    latent: int
    window: tuple[int, int]
    step_px: int
    context: int
    ae_steps: int = 0
    ae_seconds: float = 0.0
    ae_heldout_mse_start: float = math.nan   # pixels, before training
    ae_heldout_mse: float = math.nan         # pixels, after training
    train_sequences: int = 0
    heldout_sequences: int = 0
    lstm_steps: int = 0
    lstm_loss_start: float = math.nan        # the first training batch's loss
    lstm_loss_end: float = math.nan          # mean loss of the last tenth of the steps
    lstm_mse: float = math.nan               # held-out, standardised embedding units
    repeat_mse: float = math.nan
    mean_mse: float = math.nan
    diff_low: float = math.nan               # 95% interval of lstm_mse - repeat_mse over held-out sequences
    diff_high: float = math.nan
    pixel_lstm_mse: float = math.nan         # decoded prediction vs the true next window, pixels in [0, 1]
    pixel_repeat_mse: float = math.nan       # decoded last embedding vs the true next window
    pixel_floor_mse: float = math.nan        # decoded true next embedding vs the true next window
    seconds: float = 0.0
    curve: list[CurvePoint] = field(default_factory=list)
    ae_curve: list[float] = field(default_factory=list)  # autoencoder training loss, every step

    @property
    def verdict(self) -> str:
        if not (math.isfinite(self.diff_low) and math.isfinite(self.diff_high)):
            return "not scored"
        if self.diff_high < 0:
            return "LSTM beats repeat-last"
        if self.diff_low > 0:
            return "repeat-last beats the LSTM"
        return "no difference shown"


def prepare_images(sources, window: tuple[int, int], step: int, context: int, seed: int) -> tuple[list[PreparedImage], dict]:
    """The images resized so a strip of ``context + 1`` windows fits both bands; ``{name: why dropped}``."""
    height, width = window
    strip = (height, width + context * step)
    split = make_split(sources, strip, train_per_image=1, heldout_per_image=1, seed=seed)
    return split.images, split.dropped


def sample_rows(images: list[PreparedImage], height: int, per_image: int, heldout: bool, rng: np.random.Generator) -> list[torch.Tensor]:
    """``per_image`` random full-width rows of ``height`` px per image, inside one band: ``(height, W_image)`` each."""
    rows = []
    for image in images:
        lo, hi = (image.heldout_top, image.pixels.shape[0] - height) if heldout else (0, image.train_rows - height)
        for top in rng.integers(lo, hi + 1, size=per_image):
            rows.append(torch.from_numpy(np.ascontiguousarray(image.pixels[top:top + height])))
    return rows


@torch.no_grad()
def embed_rows(pipeline: SequencePipeline, strips: list[torch.Tensor], width: int, step: int, device: torch.device) -> Rows:
    """Each row's windows through the frozen encoder: one ``(windows, latent)`` tensor per row."""
    pipeline.eval()
    z = [pipeline.encode(frame_windows(s[None, None].to(device), width, step)).squeeze(0).float().cpu() for s in strips]
    return Rows(z, strips)


def train_autoencoder(model: nn.Module, crops: CropDataset, heldout: torch.Tensor, seconds: float, device: torch.device,
                      seed: int, lr: float = AE_LR) -> tuple[int, float, list[float], float, float]:
    """AdamW on reconstruction MSE for ``seconds`` of training clock: (steps, seconds, losses, held-out MSE before, after)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start_mse = reconstruction_mse(model, heldout, device)
    model.train()
    losses, spent = [], 0.0
    while spent < seconds:
        for index in torch.randperm(len(crops), generator=generator).split(AE_BATCH):
            t0 = time.perf_counter()
            loss = train_step(model, crops.stack(index.tolist()).to(device), optimizer, None, "fp32", device)
            spent += time.perf_counter() - t0
            losses.append(loss.item())
            if spent >= seconds:
                break
    return len(losses), spent, losses, start_mse, reconstruction_mse(model, heldout, device)


@torch.no_grad()
def reconstruction_mse(model: nn.Module, images: torch.Tensor, device: torch.device) -> float:
    was = model.training
    model.eval()
    total = sum(F.mse_loss(model(x.to(device))[0].float(), x.to(device), reduction="sum").item() for x in images.split(AE_BATCH))
    model.train(was)
    return total / images.numel()


def train_lstm(lstm: LSTMModel, train: torch.Tensor, heldout: torch.Tensor, steps: int, batch: int, seed: int,
               device: torch.device) -> tuple[list[float], list[CurvePoint]]:
    """Teacher-forced next-embedding prediction on standardised sequences ``(N, T+1, latent)``."""
    optimizer = torch.optim.AdamW(lstm.parameters(), lr=LSTM_LR)
    generator = torch.Generator().manual_seed(seed)
    every = max(1, steps // EVAL_POINTS)
    losses: list[float] = []
    curve = [CurvePoint(0, math.nan, heldout_mse(lstm, heldout, device))]
    lstm.train()
    for step in range(1, steps + 1):
        seq = train[torch.randint(len(train), (batch,), generator=generator)].to(device)
        loss = F.mse_loss(lstm(seq[:, :-1]), seq[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(lstm.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the LSTM's training loss became {losses[-1]} at step {step}")
        if step % every == 0 or step == steps:
            since = losses[-every:] if step % every == 0 else losses[-(step % every):]
            curve.append(CurvePoint(step, float(np.mean(since)), heldout_mse(lstm, heldout, device)))
    return losses, curve


@torch.no_grad()
def predictions(lstm: LSTMModel, sequences: torch.Tensor, device: torch.device, chunk: int = 256) -> torch.Tensor:
    """The LSTM's predictions of windows 1..T from 0..T-1: ``(N, T, latent)``, eval mode."""
    was = lstm.training
    lstm.eval()
    out = torch.cat([lstm(s[:, :-1].to(device)).cpu() for s in sequences.split(chunk)])
    lstm.train(was)
    return out


def heldout_mse(lstm: LSTMModel, sequences: torch.Tensor, device: torch.device) -> float:
    return F.mse_loss(predictions(lstm, sequences, device), sequences[:, 1:]).item()


def bootstrap_interval(values: np.ndarray, groups: np.ndarray, seed: int, resamples: int = BOOTSTRAP) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` (one per held-out sequence), resampling whole
    ``groups`` (rows): sequences of one row share windows, so they are not independent draws."""
    ids, index = np.unique(groups, return_inverse=True)
    sums, counts = np.bincount(index, weights=values), np.bincount(index).astype(float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(ids), size=(resamples, len(ids)))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


@torch.no_grad()
def pixel_scores(ae: nn.Module, rows: Rows, where: list[tuple[int, int]], pred: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, window: tuple[int, int], step: int, context: int, count: int,
                 device: torch.device) -> tuple[float, float, float]:
    """Decoded last-position prediction, last embedding and true next embedding against the true next window."""
    if not callable(getattr(ae, "decode", None)):
        return math.nan, math.nan, math.nan
    pick = np.unique(np.linspace(0, len(where) - 1, min(count, len(where))).round().astype(int))
    height, width = window
    truth, guess, last, nxt = [], [], [], []
    for k in pick:
        row, first = where[k]
        left = (first + context) * step
        truth.append(rows.strips[row][:, left:left + width])
        guess.append(pred[k, -1] * std + mean)          # back to the encoder's units
        last.append(rows.z[row][first + context - 1])
        nxt.append(rows.z[row][first + context])
    truth_t = torch.stack(truth)[:, None].to(device)   # (n, 1, H, W)
    ae.eval()

    def decoded_mse(z: list[torch.Tensor]) -> float:
        return F.mse_loss(ae.decode(torch.stack(z).to(device), (height, width)).float(), truth_t).item()

    return decoded_mse(guess), decoded_mse(last), decoded_mse(nxt)


def run_downstream(family: str, preset: str, latent: int, images: list[PreparedImage], device: torch.device, seed: int = 0,
                   window: tuple[int, int] = WINDOW, step: int = STEP, context: int = CONTEXT, ae_seconds: float = AE_SECONDS,
                   lstm_steps: int = LSTM_STEPS, train_rows: int = TRAIN_ROWS, heldout_rows: int = HELDOUT_ROWS,
                   log: Callable[[str], None] = lambda line: None) -> DownstreamResult:
    """The whole check for one family and latent size (see the module docstring)."""
    started = time.perf_counter()
    result = DownstreamResult(family, preset, latent, window, step, context)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    ae = build_model(family, preset, window, latent_dim=latent).to(device)
    crops = CropDataset(images, sample_rects(images, window, 64, heldout=False, rng=rng))
    heldout_crops = CropDataset(images, sample_rects(images, window, 2, heldout=True, rng=rng)).stack()
    result.ae_steps, result.ae_seconds, result.ae_curve, result.ae_heldout_mse_start, result.ae_heldout_mse = train_autoencoder(
        ae, crops, heldout_crops, ae_seconds, device, seed)
    log(f"  autoencoder: {result.ae_steps} steps in {result.ae_seconds:.0f} s, held-out pixel MSE "
        f"{result.ae_heldout_mse_start:.4f} -> {result.ae_heldout_mse:.4f}")
    lstm = LSTMModel(LSTMEmbdSize=latent).to(device)
    pipeline = SequencePipeline(ae, lstm, freeze_encoder=True)
    train = embed_rows(pipeline, sample_rows(images, window[0], train_rows, False, rng), window[1], step, device)
    held = embed_rows(pipeline, sample_rows(images, window[0], heldout_rows, True, rng), window[1], step, device)
    train_seq, _ = train.sequences(context + 1)
    held_seq, where = held.sequences(context + 1)
    flat = torch.cat(train.z)
    mean, std = flat.mean(0), flat.std(0)
    std = std.clamp_min(1e-6 * float(std.mean()) + 1e-12)  # a dead dimension must not divide by zero
    train_std, held_std = (train_seq - mean) / std, (held_seq - mean) / std
    result.train_sequences, result.heldout_sequences = len(train_seq), len(held_seq)
    log(f"  embedded {sum(len(z) for z in train.z) + sum(len(z) for z in held.z)} windows: "
        f"{len(train_seq)} training and {len(held_seq)} held-out sequences of {context + 1}")
    losses, result.curve = train_lstm(lstm, train_std, held_std, lstm_steps, LSTM_BATCH, seed, device)
    result.lstm_steps = len(losses)
    result.lstm_loss_start = losses[0]
    result.lstm_loss_end = float(np.mean(losses[-max(1, len(losses) // 10):]))
    pred = predictions(lstm, held_std, device)
    target = held_std[:, 1:]
    lstm_err = ((pred - target) ** 2).mean(dim=(1, 2)).numpy()            # per held-out sequence
    repeat_err = ((held_std[:, :-1] - target) ** 2).mean(dim=(1, 2)).numpy()
    result.lstm_mse, result.repeat_mse = float(lstm_err.mean()), float(repeat_err.mean())
    result.mean_mse = float((target ** 2).mean())
    result.diff_low, result.diff_high = bootstrap_interval(lstm_err - repeat_err, np.array([r for r, _ in where]), seed)
    result.pixel_lstm_mse, result.pixel_repeat_mse, result.pixel_floor_mse = pixel_scores(
        ae, held, where, pred, mean, std, window, step, context, PIXEL_SEQUENCES, device)
    result.seconds = time.perf_counter() - started
    log(f"  LSTM: loss {result.lstm_loss_start:.3f} -> {result.lstm_loss_end:.3f}; held-out MSE {result.lstm_mse:.3f} vs "
        f"repeat-last {result.repeat_mse:.3f} (mean {result.mean_mse:.3f}): {result.verdict} ({result.seconds:.0f} s)")
    return result
