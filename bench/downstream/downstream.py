"""Do the autoencoder's embeddings serve the LSTM? One family and latent size at a time, over seeds:

1. **Data** (``bench/quality/dataset.py``, read only): the bundled images (or ``--images``), deduplicated,
   whole images held out (one in three by pixel hash: no held-out image gives a training window), each
   resized by at most 2x so a strip of ``context + 1`` windows fits. ``rows`` random full-width rows per
   image; along each row, windows of ``window`` (``(H, W)``, 640x152 by default) every ``step`` px:
   consecutive, overlapping windows of a wide strip.
2. **Autoencoder**: trained on windows cut from the training images (reconstruction MSE, AdamW, the
   harness's own train step) for a **step** budget (``ae_steps``; ``ae_seconds`` is allowed, and the row
   records the steps it gave), then frozen. On CUDA the clock is read after a synchronisation.
3. **Embeddings**: every window of every row through ``SequencePipeline.encode`` (eval mode, no
   gradient). Standardised per dimension with the training rows' mean and std, so every error below is
   in units of a dimension's spread, and "predict the mean" scores about 1.
4. **LSTM**: ``LSTMModel`` (2 layers, hidden 256, head to the latent size) reads windows ``0..T-1`` of a
   sequence and predicts windows ``1..T`` (teacher forcing); AdamW, MSE, ``lstm_steps`` steps.
5. **Baselines** on the same sequences: "repeat the last embedding", and a **ridge** one-step linear
   predictor ``z[t+1] = W z[t] + b`` fitted on the training sequences (penalty chosen on a quarter of
   the training images, then refitted on all). The verdict is against the better baseline.
6. **Scores** per held-out image (its sequences' errors averaged): the difference LSTM - best baseline
   gets a 95% interval from resampling held-out images (:mod:`bench.quality.evidence`), shown only past
   zero and past its seed-to-seed spread. In pixels (last position of up to ``PIXEL_SEQUENCES`` held-out
   sequences): each prediction decoded by the autoencoder against the true next window, pixels in [0, 1].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ae_models import build_model
from ae_models.sequence import LSTMModel, SequencePipeline, frame_windows

from bench.core.steps import train_step
from bench.quality.dataset import CropDataset, PreparedImage, make_split, sample_rects
from bench.quality.evidence import Difference, direction, paired_difference
from bench.downstream.baselines import Ridge, bootstrap_interval, fit_ridge, per_image  # noqa: F401 - re-exported

WINDOW = (152, 640)   # (H, W): a 640x152 window
STEP = 64             # px between consecutive windows: each overlaps the next by 90%
CONTEXT = 4           # windows the LSTM reads before each prediction: a strip of 5 (896 px) fits 15 images within 2x
TRAIN_ROWS, HELDOUT_ROWS = 16, 8   # rows per training / held-out image
AE_STEPS = 200        # the autoencoder's step budget: steps compare what training teaches, whatever the machine
AE_BATCH = 8
LSTM_STEPS = 300
LSTM_BATCH = 32
LSTM_LR = 1e-3
AE_LR = 1e-3           # trains both families in a few hundred steps
EVAL_POINTS = 10       # held-out evaluations over the LSTM's training
PIXEL_SEQUENCES = 64


@dataclass
class Rows:
    """Embedded rows: ``z[i]`` is ``(windows, latent)``; ``strips[i]`` the row's pixels ``(H, W_image)``;
    ``images[i]`` the name of the source image the row was cut from (the unit of the statistics)."""

    z: list[torch.Tensor]
    strips: list[torch.Tensor]
    images: list[str] = field(default_factory=list)

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
class SeedRun:
    """One seed of one family and latent: figures, and per held-out image errors (standardised embedding units)."""

    seed: int
    ae_steps: int = 0
    ae_seconds: float = 0.0
    ae_heldout_mse_start: float = math.nan
    ae_heldout_mse: float = math.nan
    train_sequences: int = 0
    heldout_sequences: int = 0
    lstm_steps: int = 0
    lstm_loss_start: float = math.nan
    lstm_loss_end: float = math.nan
    ridge_penalty: float = math.nan
    image_errors: dict = field(default_factory=dict)  # "lstm"/"repeat-last"/"ridge"/"mean" -> {image: MSE}
    pixel: dict = field(default_factory=dict)          # "lstm"/"repeat-last"/"ridge"/"floor" -> pixel MSE
    seconds: float = 0.0
    curve: list[CurvePoint] = field(default_factory=list)
    ae_curve: list[float] = field(default_factory=list)


BASELINES = ("repeat-last", "ridge")


@dataclass
class DownstreamResult:
    """One family and latent over its seeds. Embedding MSEs are pooled over held-out images and averaged
    over seeds; ``diff`` is LSTM - ``baseline`` (the better baseline), ``diff_low``/``diff_high`` its 95%
    interval over held-out images, ``seed_spread`` the range of the per-seed differences."""

    family: str
    preset: str
    latent: int
    window: tuple[int, int]
    step_px: int
    context: int
    seeds: int = 0
    images: int = 0                          # held-out images the interval resamples
    ae_steps: int = 0                        # fewest autoencoder steps over the seeds
    ae_steps_max: int = 0                    # most (differs only under a time budget)
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
    ridge_mse: float = math.nan
    mean_mse: float = math.nan
    baseline: str = ""                       # the better baseline: repeat-last or ridge
    diff: float = math.nan                   # LSTM - baseline, mean over seeds
    diff_low: float = math.nan               # 95% interval of diff over held-out images
    diff_high: float = math.nan
    seed_spread: float = math.nan            # max - min of the per-seed differences
    pixel_lstm_mse: float = math.nan         # decoded prediction vs the true next window, pixels in [0, 1]
    pixel_repeat_mse: float = math.nan       # decoded last embedding vs the true next window
    pixel_ridge_mse: float = math.nan        # decoded ridge prediction vs the true next window
    pixel_floor_mse: float = math.nan        # decoded true next embedding vs the true next window
    seconds: float = 0.0
    curve: list[CurvePoint] = field(default_factory=list)   # the first seed's
    ae_curve: list[float] = field(default_factory=list)     # the first seed's autoencoder loss, every step

    @property
    def difference(self) -> Difference:
        return Difference(self.diff, self.diff_low, self.diff_high, self.seed_spread, self.seeds, self.images, "")

    @property
    def verdict(self) -> str:
        if not all(math.isfinite(v) for v in (self.diff, self.diff_low, self.diff_high, self.seed_spread)):
            return "not scored"
        shown = direction(self.difference)
        if shown < 0:
            return f"LSTM beats {self.baseline}"
        if shown > 0:
            return f"{self.baseline} beats the LSTM"
        return "no difference shown"


def prepare_images(sources, window: tuple[int, int], step: int, context: int, seed: int) -> tuple[list[PreparedImage], dict]:
    """The images, whole ones held out, resized (at most 2x) so a strip of ``context + 1`` windows fits;
    ``{name: why dropped}``."""
    height, width = window
    strip = (height, width + context * step)
    split = make_split(sources, strip, train_per_image=1, heldout_per_image=1, seed=seed)
    return split.images, split.dropped


def sample_rows(images: list[PreparedImage], height: int, per_image: int, heldout: bool,
                rng: np.random.Generator) -> tuple[list[torch.Tensor], list[str]]:
    """``per_image`` random full-width rows of ``height`` px in each image of one side: ``(height, W_image)``
    each, and the name of each row's image."""
    rows, names = [], []
    for image in images:
        if image.heldout != heldout:
            continue
        for top in rng.integers(0, image.pixels.shape[0] - height + 1, size=per_image):
            rows.append(torch.from_numpy(np.ascontiguousarray(image.pixels[top:top + height])))
            names.append(image.name)
    return rows, names


@torch.no_grad()
def embed_rows(pipeline: SequencePipeline, strips: list[torch.Tensor], width: int, step: int, device: torch.device,
               names: Optional[list[str]] = None) -> Rows:
    """Each row's windows through the frozen encoder: one ``(windows, latent)`` tensor per row."""
    pipeline.eval()
    z = [pipeline.encode(frame_windows(s[None, None].to(device), width, step)).squeeze(0).float().cpu() for s in strips]
    return Rows(z, strips, list(names) if names is not None else [str(i) for i in range(len(strips))])


def _sync(device: torch.device) -> None:
    """Wait for queued kernels before reading the clock: on CUDA a step returns before it has run."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_autoencoder(model: nn.Module, crops: CropDataset, heldout: torch.Tensor, device: torch.device, seed: int,
                      lr: float = AE_LR, steps: Optional[int] = AE_STEPS,
                      seconds: Optional[float] = None) -> tuple[int, float, list[float], float, float]:
    """AdamW on reconstruction MSE for ``steps`` optimizer steps, or ``seconds`` of training clock (give one):
    (steps taken, training seconds, losses, held-out MSE before, after)."""
    if (steps is None) == (seconds is None):
        raise ValueError("give the autoencoder exactly one budget: steps or seconds")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start_mse = reconstruction_mse(model, heldout, device)
    model.train()
    losses: list[float] = []
    spent = 0.0

    def done() -> bool:
        return len(losses) >= steps if steps is not None else spent >= seconds

    while not done():
        for index in torch.randperm(len(crops), generator=generator).split(AE_BATCH):
            _sync(device)
            t0 = time.perf_counter()
            loss = train_step(model, crops.stack(index.tolist()).to(device), optimizer, None, "fp32", device)
            _sync(device)
            spent += time.perf_counter() - t0
            losses.append(loss.item())
            if done():
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


@torch.no_grad()
def pixel_scores(ae: nn.Module, rows: Rows, where: list[tuple[int, int]], guesses: dict[str, torch.Tensor],
                 held: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, window: tuple[int, int], step: int,
                 context: int, count: int, device: torch.device) -> dict[str, float]:
    """Each predictor's last-position guess (``guesses``: name -> ``(N, T, latent)`` standardised), the
    true next embedding ("floor") and the last embedding ("repeat-last") decoded against the true next window."""
    if not callable(getattr(ae, "decode", None)):
        return {}
    pick = np.unique(np.linspace(0, len(where) - 1, min(count, len(where))).round().astype(int))
    height, width = window
    truth = []
    for k in pick:
        row, first = where[k]
        left = (first + context) * step
        truth.append(rows.strips[row][:, left:left + width])
    truth_t = torch.stack(truth)[:, None].to(device)   # (n, 1, H, W)
    latents = {name: g[pick, -1] for name, g in guesses.items()}
    latents["repeat-last"] = held[pick, -2]
    latents["floor"] = held[pick, -1]
    ae.eval()
    return {name: F.mse_loss(ae.decode((z * std + mean).to(device), (height, width)).float(), truth_t).item()
            for name, z in latents.items()}


def run_seed(family: str, preset: str, latent: int, images: list[PreparedImage], device: torch.device, seed: int,
             window: tuple[int, int], step: int, context: int, ae_steps: Optional[int], ae_seconds: Optional[float],
             lstm_steps: int, train_rows: int, heldout_rows: int, log: Callable[[str], None]) -> SeedRun:
    """One seed of the check (module docstring): autoencoder, embeddings, LSTM, baselines, per-image errors."""
    started = time.perf_counter()
    run = SeedRun(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    ae = build_model(family, preset, window, latent_dim=latent).to(device)
    crops = CropDataset(images, sample_rects(images, window, 64, heldout=False, rng=rng))
    heldout_crops = CropDataset(images, sample_rects(images, window, 2, heldout=True, rng=rng)).stack()
    run.ae_steps, run.ae_seconds, run.ae_curve, run.ae_heldout_mse_start, run.ae_heldout_mse = train_autoencoder(
        ae, crops, heldout_crops, device, seed, steps=ae_steps, seconds=ae_seconds)
    log(f"  seed {seed}: autoencoder {run.ae_steps} steps in {run.ae_seconds:.0f} s, held-out pixel MSE "
        f"{run.ae_heldout_mse_start:.4f} -> {run.ae_heldout_mse:.4f}")
    lstm = LSTMModel(LSTMEmbdSize=latent).to(device)
    pipeline = SequencePipeline(ae, lstm, freeze_encoder=True)
    train_strips, train_names = sample_rows(images, window[0], train_rows, False, rng)
    held_strips, held_names = sample_rows(images, window[0], heldout_rows, True, rng)
    train = embed_rows(pipeline, train_strips, window[1], step, device, train_names)
    held = embed_rows(pipeline, held_strips, window[1], step, device, held_names)
    train_seq, train_where = train.sequences(context + 1)
    held_seq, where = held.sequences(context + 1)
    flat = torch.cat(train.z)
    mean, std = flat.mean(0), flat.std(0)
    std = std.clamp_min(1e-6 * float(std.mean()) + 1e-12)  # a dead dimension must not divide by zero
    train_std, held_std = (train_seq - mean) / std, (held_seq - mean) / std
    run.train_sequences, run.heldout_sequences = len(train_seq), len(held_seq)
    losses, run.curve = train_lstm(lstm, train_std, held_std, lstm_steps, LSTM_BATCH, seed, device)
    run.lstm_steps, run.lstm_loss_start = len(losses), losses[0]
    run.lstm_loss_end = float(np.mean(losses[-max(1, len(losses) // 10):]))
    ridge = fit_ridge(train_std, [train.images[r] for r, _ in train_where])
    run.ridge_penalty = ridge.penalty
    guesses = {"lstm": predictions(lstm, held_std, device), "ridge": ridge.predict(held_std)}
    target = held_std[:, 1:]
    seq_images = [held.images[r] for r, _ in where]
    errors = {name: ((g - target) ** 2).mean(dim=(1, 2)).numpy() for name, g in guesses.items()}
    errors["repeat-last"] = ((held_std[:, :-1] - target) ** 2).mean(dim=(1, 2)).numpy()
    errors["mean"] = (target ** 2).mean(dim=(1, 2)).numpy()
    run.image_errors = {name: per_image(e, seq_images) for name, e in errors.items()}
    run.pixel = pixel_scores(ae, held, where, guesses, held_std, mean, std, window, step, context, PIXEL_SEQUENCES, device)
    run.seconds = time.perf_counter() - started
    log(f"  seed {seed}: LSTM loss {run.lstm_loss_start:.3f} -> {run.lstm_loss_end:.3f}; held-out "
        + ", ".join(f"{k} {np.mean(list(v.values())):.3f}" for k, v in run.image_errors.items()) + f" ({run.seconds:.0f} s)")
    return run


def summarise(family: str, preset: str, latent: int, window: tuple[int, int], step: int, context: int,
              runs: list[SeedRun]) -> DownstreamResult:
    """The seeds of one family and latent as one result: means, the better baseline and the verdict's figures."""
    result = DownstreamResult(family, preset, latent, window, step, context, seeds=len(runs))
    images = sorted(set.intersection(*(set(r.image_errors["lstm"]) for r in runs)))
    result.images = len(images)

    def table(name: str) -> np.ndarray:  # (seeds, images)
        return np.array([[r.image_errors[name][i] for i in images] for r in runs])

    pooled = {name: float(table(name).mean()) for name in ("lstm", "repeat-last", "ridge", "mean")}
    result.lstm_mse, result.repeat_mse, result.ridge_mse, result.mean_mse = (
        pooled["lstm"], pooled["repeat-last"], pooled["ridge"], pooled["mean"])
    result.baseline = min(BASELINES, key=lambda b: (pooled[b], b))
    diff = paired_difference(table("lstm"), table(result.baseline), "linear", seed=runs[0].seed)
    result.diff, result.diff_low, result.diff_high, result.seed_spread = diff.estimate, diff.low, diff.high, diff.seed_spread
    result.ae_steps, result.ae_steps_max = min(r.ae_steps for r in runs), max(r.ae_steps for r in runs)
    for name in ("ae_seconds", "ae_heldout_mse_start", "ae_heldout_mse", "lstm_loss_start", "lstm_loss_end", "seconds"):
        setattr(result, name, float(np.mean([getattr(r, name) for r in runs])))
    result.seconds = float(sum(r.seconds for r in runs))
    result.train_sequences, result.heldout_sequences = runs[0].train_sequences, runs[0].heldout_sequences
    result.lstm_steps = runs[0].lstm_steps
    for attr, name in (("pixel_lstm_mse", "lstm"), ("pixel_repeat_mse", "repeat-last"), ("pixel_ridge_mse", "ridge"),
                       ("pixel_floor_mse", "floor")):
        values = [r.pixel[name] for r in runs if name in r.pixel]
        setattr(result, attr, float(np.mean(values)) if values else math.nan)
    result.curve, result.ae_curve = runs[0].curve, runs[0].ae_curve
    return result


def run_downstream(family: str, preset: str, latent: int, images: list[PreparedImage], device: torch.device,
                   seeds: Sequence[int] = (0, 1, 2), window: tuple[int, int] = WINDOW, step: int = STEP,
                   context: int = CONTEXT, ae_steps: Optional[int] = AE_STEPS, ae_seconds: Optional[float] = None,
                   lstm_steps: int = LSTM_STEPS, train_rows: int = TRAIN_ROWS, heldout_rows: int = HELDOUT_ROWS,
                   log: Callable[[str], None] = lambda line: None) -> DownstreamResult:
    """The whole check for one family and latent size over ``seeds`` (see the module docstring)."""
    if ae_seconds is not None:
        ae_steps = None
    runs = [run_seed(family, preset, latent, images, device, seed, window, step, context, ae_steps, ae_seconds,
                     lstm_steps, train_rows, heldout_rows, log) for seed in seeds]
    result = summarise(family, preset, latent, window, step, context, runs)
    log(f"  LSTM {result.lstm_mse:.3f} vs {result.baseline} {min(result.repeat_mse, result.ridge_mse):.3f}: "
        f"{result.verdict} ({result.difference.text('+.3f')})")
    return result
