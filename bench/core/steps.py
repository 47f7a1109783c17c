"""The step a case times, per mode: ``infer``, ``train``, ``embed``, and the pipeline frames ->
Embedding -> LSTM (``sequence-infer``, ``sequence-train``; :func:`prepare_sequence`).

``prepare`` builds the model, its inputs and (for ``train``) the optimizer, and returns a
:class:`Scenario` whose ``step()`` runs exactly one batch. Nothing in ``step`` synchronises or
measures: the trackers wrap it.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ae_models import build_model, is_transformer

from bench.core import precision as prec
from bench.core.cases import SEQUENCE_MODES, Case


@dataclass
class Scenario:
    case: Case
    device: torch.device
    model: nn.Module
    inputs: torch.Tensor
    step: Callable[[], Any]
    eager_step: Callable[[], Any]  # the same step on the uncompiled model (for counting FLOPs and kernels)
    optimizer: Optional[torch.optim.Optimizer] = None
    compiled: Optional[Callable] = None
    extras: dict = field(default_factory=dict)

    def close(self) -> None:
        """Drop every reference to model, optimizer and inputs, and return the memory."""
        self.model = self.inputs = self.optimizer = self.compiled = None  # type: ignore[assignment]
        self.step = self.eager_step = None  # type: ignore[assignment]
        self.extras.clear()
        release_memory(self.device, compiled=self.case.compile != "off")


def release_memory(device: torch.device, compiled: bool = False) -> None:
    """Between cases: free compiled graphs, garbage, and the allocator's cache."""
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def model_overrides(case: Case) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if case.latent:
        overrides["latent_dim"] = case.latent
    if is_transformer(case.family):
        overrides["attention"] = case.attention
        overrides["grad_checkpointing"] = case.checkpointing
    return overrides


def build_for(case: Case, device: torch.device) -> nn.Module:
    model = build_model(case.family, case.preset, case.hw, **model_overrides(case))
    return model.to(device=device, dtype=prec.weight_dtype(case.precision))


def prepare(case: Case, device: torch.device, seed: int = 0) -> Scenario:
    """Build everything one step of ``case`` needs on ``device``."""
    torch.manual_seed(seed)
    model = build_for(case, device)
    if case.mode in SEQUENCE_MODES:
        return prepare_sequence(case, device, model)
    channels = getattr(getattr(model, "config", None), "in_channels", 1)
    height, width = case.hw
    inputs = torch.randn(case.batch, channels, height, width, device=device, dtype=prec.weight_dtype(case.precision))
    compile_mode = None if case.compile == "default" else case.compile
    # what a step calls: forward (infer, train) or Embedding (embed), compiled when asked
    eager_fn = model.Embedding if case.mode == "embed" else model
    compiled = torch.compile(eager_fn, mode=compile_mode) if case.compile != "off" else None
    runner = compiled if compiled is not None else eager_fn
    autocast = lambda: prec.autocast(case.precision, device)  # noqa: E731 - a fresh context each step

    if case.mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type) if prec.needs_grad_scaler(case.precision) else None

        def make_step(fn: Callable) -> Callable[[], torch.Tensor]:
            return lambda: train_step(fn, inputs, optimizer, scaler, case.precision, device)

        return Scenario(case, device, model, inputs, make_step(runner), make_step(eager_fn), optimizer, compiled)

    model.eval()

    def make_step(fn: Callable) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            with torch.inference_mode(), autocast():
                out = fn(inputs)
            return out if case.mode == "embed" else out[0]

        return step

    return Scenario(case, device, model, inputs, make_step(runner), make_step(eager_fn), None, compiled)


def prepare_sequence(case: Case, device: torch.device, autoencoder: nn.Module) -> Scenario:
    """The pipeline of ``ae_models.sequence``: inputs ``(batch, seq_len, C, H, W)``, the ``batch * seq_len``
    frames encoded as one batch, an ``LSTMModel`` (its default size) over the ``(batch, seq_len, latent)``
    embeddings. ``sequence-train`` trains the LSTM (and the encoder when ``case.encoder`` is ``finetune``)
    with AdamW on the MSE between its output and a constant ``(batch, seq_len, latent)`` target (one stored
    value, expanded: no tensor the memory pass would miss): the cost of a downstream loss, whatever the
    user's target is. The scenario's model is the whole pipeline."""
    from ae_models.sequence import LSTMModel, SequencePipeline, latent_size

    dtype = prec.weight_dtype(case.precision)
    height, width = case.hw
    channels = getattr(getattr(autoencoder, "config", None), "in_channels", 1)
    latent = latent_size(autoencoder)
    if latent is None:  # a plug-in without a config: its embedding of one frame says
        with torch.no_grad():
            latent = int(autoencoder.Embedding(torch.zeros(1, channels, height, width, device=device, dtype=dtype)).shape[-1])
    lstm = LSTMModel(LSTMEmbdSize=latent, device=device, dtype=dtype)
    pipeline = SequencePipeline(autoencoder, lstm, freeze_encoder=case.encoder != "finetune")
    inputs = torch.randn(case.batch, case.seq_len, channels, height, width, device=device, dtype=dtype)
    compiled = torch.compile(pipeline, mode=None if case.compile == "default" else case.compile) if case.compile != "off" else None
    runner = compiled if compiled is not None else pipeline
    if case.mode == "sequence-train":
        pipeline.train()
        optimizer = torch.optim.AdamW([p for p in pipeline.parameters() if p.requires_grad], lr=1e-4)
        scaler = torch.amp.GradScaler(device.type) if prec.needs_grad_scaler(case.precision) else None
        target = torch.zeros((), device=device).expand(case.batch, case.seq_len, lstm.output_size)

        def make_train(fn: Callable) -> Callable[[], torch.Tensor]:
            return lambda: sequence_train_step(fn, inputs, target, optimizer, scaler, case.precision, device)

        return Scenario(case, device, pipeline, inputs, make_train(runner), make_train(pipeline), optimizer, compiled)
    pipeline.eval()

    def make_infer(fn: Callable) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            with torch.inference_mode(), prec.autocast(case.precision, device):
                return fn(inputs)

        return step

    return Scenario(case, device, pipeline, inputs, make_infer(runner), make_infer(pipeline), None, compiled)


def _backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                       scaler: Optional[torch.amp.GradScaler]) -> torch.Tensor:
    """Backward (scaled for amp-fp16) and the optimizer's step; returns ``loss``."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss


def sequence_train_step(forward: Callable, inputs: torch.Tensor, target: torch.Tensor, optimizer: torch.optim.Optimizer,
                        scaler: Optional[torch.amp.GradScaler], precision: str, device: torch.device) -> torch.Tensor:
    """One step of the pipeline: the LSTM's output against ``target`` (MSE in fp32), backward, AdamW."""
    optimizer.zero_grad(set_to_none=True)
    with prec.autocast(precision, device):
        loss = F.mse_loss(forward(inputs).float(), target)
    return _backward_and_step(loss, optimizer, scaler)


def train_step(forward: Callable, inputs: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: Optional[torch.amp.GradScaler], precision: str, device: torch.device) -> torch.Tensor:
    """One reconstruction training step: MSE loss in fp32, backward (scaled for amp-fp16), AdamW."""
    optimizer.zero_grad(set_to_none=True)
    with prec.autocast(precision, device):
        recon, _ = forward(inputs)
        loss = F.mse_loss(recon.float(), inputs.float())
    return _backward_and_step(loss, optimizer, scaler)


@contextlib.contextmanager
def case_context(case: Case):
    """Global switches a case needs while it runs (TF32), restored afterwards."""
    with prec.tf32_flags(case.precision):
        yield


def timed_first_step(scenario: Scenario) -> float:
    """Seconds of the first step (compilation included when compiled)."""
    sync = synchronizer(scenario.device)
    sync()
    start = time.perf_counter()
    scenario.step()
    sync()
    return time.perf_counter() - start


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
