"""What a sequence-mode case (frames -> Embedding -> LSTM) measures beyond every case's phases.

- :func:`sequence_flops`: the step's FLOPs. ``torch.utils.flop_counter`` counts the pipeline's
  matmuls and convolutions, by module. What it cannot see is added from the shapes, where it saw less
  than half of it: the attention a fused kernel hides (the encoder's blocks over ``batch * seq_len``
  frames: forward once, or forward and backward when the encoder is fine-tuned), as
  :mod:`bench.trackers.flops` does for the other modes; and the LSTM's gate matmuls, which the CPU's
  fused LSTM kernel runs without a FLOP formula (``2 * gates * hidden * (input + hidden)`` per frame and
  layer; backward twice the forward). The LSTM head's ``bmm`` (a linear over ``(B, T, hidden)`` under
  ``inference_mode``) is not attention and is not counted as such.
- :func:`step_shares`: the share of a step's time spent in the encoder and in the LSTM, from
  ``torch.profiler`` over :data:`PROFILED_STEPS` extra steps of the eager pipeline (never during
  timing). :class:`~ae_models.sequence.SequencePipeline` runs each part inside a profiler scope
  (``ae.sequence.encoder``, ``ae.sequence.lstm``); an op's *self* time (CPU time on a CPU, the device
  time of the kernels it launched on CUDA, so nothing counts twice) goes to the scope it runs under.
  Backward ops run outside those scopes, under the autograd node of the forward op that made them;
  the node carries that op's sequence number, so its time goes to the forward op's part. The rest
  (loss, AdamW, zero_grad, the reshape between the parts) is neither, so the two shares add up to
  less than 100%.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from ae_models.sequence import ENCODER_SCOPE, LSTM_SCOPE

from bench.core.cases import Case
from bench.trackers.flops import FlopCount, attention_flops_counted, attention_flops_forward

PROFILED_STEPS = 2
_NODE_PREFIX = "autograd::engine::evaluate_function: "
_PARTS = {ENCODER_SCOPE: "encoder", LSTM_SCOPE: "lstm"}
_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def trains_encoder(case: Case) -> bool:
    return case.mode == "sequence-train" and case.encoder == "finetune"


def recurrent_flops_forward(module: nn.Module, frames: int) -> float:
    """The gate matmuls of every ``nn.LSTM``/``GRU``/``RNN`` in ``module`` over ``frames`` time steps in all."""
    flops = 0.0
    for m in module.modules():
        if isinstance(m, nn.RNNBase):
            dirs = 2 if m.bidirectional else 1
            for layer in range(m.num_layers):
                inputs = m.input_size if layer == 0 else m.hidden_size * dirs
                flops += dirs * 2 * _GATES.get(m.mode, 4) * m.hidden_size * (inputs + m.hidden_size)
    return flops * frames


def sequence_flops(step: Callable[[], object], pipeline: nn.Module, case: Case) -> FlopCount:
    """FLOPs of one step of the pipeline (a batch of ``case.batch`` sequences), what the counter misses added."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    counts = counter.get_flop_counts()  # "Global", and per module: "SequencePipeline.lstm", ...
    root = type(pipeline).__name__
    total = float(counter.get_total_flops())
    attn_counted = attention_flops_counted(counts, pipeline)  # the one rule (trackers/flops.py): the LSTM head's bmm is not attention
    added = []
    forward = attention_flops_forward(pipeline.autoencoder, case.hw, case.images, "embed")
    analytic = None if forward is None else forward * ((3 + (1 if case.checkpointing else 0)) if trains_encoder(case) else 1)
    if analytic and attn_counted < 0.5 * analytic:
        total += analytic - attn_counted
        added.append("analytic attention (fused kernel not counted)")
    recurrent = recurrent_flops_forward(pipeline.lstm, case.images) * (3 if case.mode == "sequence-train" else 1)
    seen = sum(sum(counts.get(f"{root}.lstm.{name}" if name else f"{root}.lstm", {}).values())
               for name, m in pipeline.lstm.named_modules() if isinstance(m, nn.RNNBase))
    if recurrent and seen < 0.5 * recurrent:
        total += recurrent - seen
        added.append("analytic LSTM gates (fused kernel not counted)")
    return FlopCount(total=total, attn_analytic=analytic, attn_counted=attn_counted,
                     source=" + ".join(["flop_counter"] + added))


def _part(event, nodes: dict[tuple[int, int], str]) -> str:
    """``encoder``, ``lstm`` or ``other``: the scope ``event`` runs under, or in backward its forward op's."""
    node = event
    while node is not None:
        name = node.name
        if name in _PARTS:
            return _PARTS[name]
        if name.startswith(_NODE_PREFIX):
            return nodes.get((node.fwd_thread, node.sequence_nr), "other")
        node = node.cpu_parent
    return "other"


def _forward_nodes(events) -> dict[tuple[int, int], str]:
    """(forward thread, sequence number) -> the part of the forward op that made that autograd node."""
    out: dict[tuple[int, int], str] = {}
    for event in sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end)):
        if event.sequence_nr >= 0 and event.name.startswith("aten::") and event.device_type == DeviceType.CPU:
            out[(event.thread, event.sequence_nr)] = _part(event, out)
    return out


def _self_us(event, on_device: bool) -> float:
    if event.is_async or event.device_type != DeviceType.CPU or event.name.startswith("ProfilerStep"):
        return 0.0
    return float(event.self_device_time_total if on_device else event.self_cpu_time_total)


def attribute_parts(events, on_device: bool = False) -> dict[str, float]:
    """Self time in µs per part (``encoder``, ``lstm``, ``other``) over the profiled ``events``."""
    nodes = _forward_nodes(events)
    out = {"encoder": 0.0, "lstm": 0.0, "other": 0.0}
    for event in events:
        us = _self_us(event, on_device)
        if us:
            out[_part(event, nodes)] += us
    return out


def step_shares(step: Callable[[], object], device: torch.device, steps: int = PROFILED_STEPS) -> dict[str, Optional[float]]:
    """``encoder_pct`` and ``lstm_pct``: each part's share (%) of the profiled steps' self time."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    parts = attribute_parts(prof.events(), on_device=cuda)
    total = sum(parts.values())
    if total <= 0:
        return {"encoder_pct": None, "lstm_pct": None}
    return {"encoder_pct": 100 * parts["encoder"] / total, "lstm_pct": 100 * parts["lstm"] / total}
