"""Training for a fixed budget, with the held-out loss followed along the way.

The budget is a number of optimizer steps or a number of seconds of training. Seconds are the
fairer comparison between models of different speed (a faster model sees more batches in the
same time, as it would in the user's own training); steps compare what one batch teaches.

The training clock runs only around training steps (loading the batch, forward, backward,
optimizer step, synchronised on CUDA): held-out evaluations pause it, so evaluating more often
never shortens training. The curve is evaluated at step 0 (the untrained model), at points
spread over the budget, and after the last step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bench.core import precision as prec
from bench.core.steps import synchronizer, train_step
from bench.quality.defaults import DEFAULT_LR, DEFAULT_WARMUP_STEPS

DEFAULT_EVALS = 8       # curve points over the budget when no interval is given
EVAL_BATCH = 8          # held-out crops per forward pass while evaluating
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Schedule:
    """The learning rate over a budget: linear warm-up over ``warmup_steps`` steps, then ``cosine``
    decay to ``min_ratio`` x ``lr`` at the end of the budget (its steps, or its seconds of training
    clock), or ``constant``. Warm-up is capped at a fifth of a step budget."""

    lr: float = DEFAULT_LR
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    kind: str = "cosine"
    min_ratio: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"bad learning rate {self.lr!r}: expected a finite number > 0")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"bad warm-up {self.warmup_steps!r}: expected a number of steps >= 0")
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise ValueError(f"bad min_ratio {self.min_ratio!r}: expected a fraction of the learning rate in [0, 1]")

    def lr_at(self, step: int, progress: float, budget_steps: Optional[int] = None) -> float:
        """Learning rate of step ``step`` (0 = the first) taken at ``progress`` (0..1) of the budget."""
        warmup = self.warmup_steps if budget_steps is None else min(self.warmup_steps, budget_steps // 5)
        factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        if self.kind == "cosine":
            p = min(max(progress, 0.0), 1.0)
            factor *= self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
        return self.lr * factor

    def describe(self) -> str:
        head = f"AdamW lr {self.lr:g}"
        warm = f", {self.warmup_steps}-step linear warm-up" if self.warmup_steps else ""
        tail = f", cosine decay to {self.min_ratio:g}x over the budget" if self.kind == "cosine" else ", constant"
        return head + warm + tail


@dataclass(frozen=True)
class Budget:
    """How long to train: ``steps`` optimizer steps or ``seconds`` of training clock (exactly one).

    ``eval_every``: evaluate the held-out loss every this many steps; ``None`` spreads
    :data:`DEFAULT_EVALS` evaluations evenly over the budget (in steps, or in seconds).
    The budget is checked between steps, so a time budget is overshot by less than one step.
    """

    steps: Optional[int] = None
    seconds: Optional[float] = None
    eval_every: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("give exactly one training budget: a number of steps or a number of seconds")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"bad step budget {self.steps!r}: expected a positive integer")
        if self.seconds is not None and not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"bad time budget {self.seconds!r}: expected seconds > 0")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise ValueError(f"bad evaluation interval {self.eval_every!r}: expected a positive number of steps")

    def done(self, steps: int, seconds: float) -> bool:
        return steps >= self.steps if self.steps is not None else seconds >= self.seconds

    def progress(self, steps: int, seconds: float) -> float:
        """How much of the budget is spent, 0..1 (steps, or seconds of training clock)."""
        return steps / self.steps if self.steps is not None else seconds / self.seconds

    def describe(self) -> str:
        return f"{self.steps} steps" if self.steps is not None else f"{self.seconds:g} s"


@dataclass
class CurvePoint:
    step: int
    train_s: float       # training clock when evaluated, evaluations excluded
    heldout_mse: float   # mean squared error over the curve's held-out crops, pixels in [0, 1]
    train_mse: float     # mean training loss over the steps since the previous point (NaN at step 0)


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    train_s: float
    images: int                       # training images seen (steps x batch)
    curve: list[CurvePoint] = field(default_factory=list)
    eval_s: float = 0.0               # wall time spent in evaluations (not in train_s)
    last_lr: float = float("nan")     # learning rate of the last step
    step: Optional[Callable[[], torch.Tensor]] = None  # one more training step (same optimizer): for the memory pass

    @property
    def images_per_s(self) -> float:
        return self.images / self.train_s if self.train_s > 0 else float("nan")


def batches(dataset: Dataset, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Shuffled batches ``(B, 1, H, W)`` forever, epoch after epoch, in a seeded order."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=len(dataset) >= batch, generator=generator)
    while True:
        yield from loader


@torch.no_grad()
def heldout_mse(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str = "fp32",
                batch: int = EVAL_BATCH) -> float:
    """Mean squared error of ``model``'s reconstructions of ``images`` ``(N, 1, H, W)`` in [0, 1],
    in eval mode (BatchNorm on running statistics, no dropout); the model's mode is restored."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, images.shape[0], batch):
            x = images[start:start + batch].to(device=device, dtype=prec.weight_dtype(precision))
            with prec.autocast(precision, device):
                recon, _ = model(x)
            total += F.mse_loss(recon.float(), x.float(), reduction="sum").item()
            count += x.numel()
    finally:
        model.train(was_training)
    return total / count


def _eval_due(budget: Budget, steps: int, train_s: float, next_point: list[float]) -> bool:
    """Whether the curve gets a point now; ``next_point`` holds the next threshold (steps or seconds)."""
    if budget.eval_every is not None:
        return steps % budget.eval_every == 0
    done_so_far = steps if budget.steps is not None else train_s
    if done_so_far >= next_point[0]:
        total = budget.steps if budget.steps is not None else budget.seconds
        while next_point[0] <= done_so_far:
            next_point[0] += total / DEFAULT_EVALS
        return True
    return False


def train_for_budget(model: nn.Module, train: Dataset, curve_images: torch.Tensor, budget: Budget,
                     device: torch.device, batch: int, precision: str = "fp32", lr: float = DEFAULT_LR,
                     seed: int = 0, on_point: Optional[Callable[[CurvePoint], None]] = None,
                     schedule: Optional[Schedule] = None) -> TrainResult:
    """Train ``model`` (already on ``device``) with AdamW on MSE until ``budget`` is spent.

    ``curve_images``: held-out crops ``(N, 1, H, W)`` for the loss curve. ``batch``: images per
    step. ``precision``: as in :mod:`bench.core.precision` (autocast, GradScaler for amp-fp16).
    ``schedule``: the learning rate over the budget (default: warm-up and cosine decay from ``lr``).
    """
    schedule = schedule if schedule is not None else Schedule(lr)
    sync = synchronizer(device)
    dtype = prec.weight_dtype(precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr_at(0, 0.0, budget.steps))
    scaler = torch.amp.GradScaler(device.type) if prec.needs_grad_scaler(precision) else None
    data = batches(train, batch, seed)
    result = TrainResult(model, 0, 0.0, 0)

    def point(train_loss: float) -> None:
        start = time.perf_counter()
        p = CurvePoint(result.steps, result.train_s, heldout_mse(model, curve_images, device, precision), train_loss)
        result.curve.append(p)
        result.eval_s += time.perf_counter() - start
        if on_point is not None:
            on_point(p)

    result.step = lambda: train_step(model, next(data).to(device=device, dtype=dtype), optimizer, scaler, precision, device)
    model.train()
    point(float("nan"))
    next_point = [0.0]
    _eval_due(budget, 0, 0.0, next_point)  # step 0 is evaluated above: move the threshold past it
    losses: list[float] = []
    while not budget.done(result.steps, result.train_s):
        sync()
        start = time.perf_counter()
        x = next(data).to(device=device, dtype=dtype, non_blocking=True)
        result.last_lr = schedule.lr_at(result.steps, budget.progress(result.steps, result.train_s), budget.steps)
        for group in optimizer.param_groups:
            group["lr"] = result.last_lr
        loss = train_step(model, x, optimizer, scaler, precision, device)
        sync()
        result.train_s += time.perf_counter() - start
        result.steps += 1
        result.images += x.shape[0]
        losses.append(loss.item())  # after the clock: .item() would synchronise on CUDA anyway
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"training loss became {losses[-1]} at step {result.steps}")
        if _eval_due(budget, result.steps, result.train_s, next_point) and not budget.done(result.steps, result.train_s):
            point(sum(losses) / len(losses))
            losses = []
    point(sum(losses) / len(losses) if losses else float("nan"))
    return result
