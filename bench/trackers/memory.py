"""The memory pass: a few steps run apart from the timed loop, with the peaks recorded.

CUDA: the torch allocator's peak allocated and reserved, and NVML's per-process and device-wide
peaks (sampled on a thread; they include the CUDA context and library workspaces that the
allocator never sees). Every device: the process's peak resident memory.

The figure every device has, ``tensor_peak_mib``: the peak bytes of live tensors during one step.
On CUDA it is the allocator's peak allocated. On a CPU, :func:`cpu_tensor_peak`: the bytes of the
tensors the step starts with (weights, buffers, gradients, optimizer state, inputs, tensors a module
keeps; each storage counted once), plus the highest running total of the CPU allocator during one
more step, read from its own events (``torch.profiler`` with ``profile_memory``; kernels' scratch
buffers included). The gradients are released first, as the step's ``zero_grad`` would. So the
figure is the same quantity as on CUDA, up to kernel workspaces and the caching allocator's rounding,
and does not depend on what else the process holds (which the RSS does). The independent check is
``bench.plan.reference`` (the same events on a fresh build, counted from an empty allocator).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch

from bench.trackers.nvml import MIB, MemorySampler


@dataclass
class MemoryStats:
    alloc_peak_mib: Optional[float] = None
    reserved_peak_mib: Optional[float] = None
    nvml_process_peak_mib: Optional[float] = None
    nvml_process_source: str = ""
    nvml_device_peak_mib: Optional[float] = None
    rss_peak_mib: Optional[float] = None
    tensor_peak_mib: Optional[float] = None


def memory_pass(step: Callable[[], object], device: torch.device, iters: int = 2, interval_s: float = 0.01,
                model: Optional[torch.nn.Module] = None, optimizer: Optional[torch.optim.Optimizer] = None,
                inputs: Optional[torch.Tensor] = None) -> MemoryStats:
    """Peaks of ``iters`` steps; with ``model`` (and the step's ``optimizer`` and ``inputs``) on a CPU, one
    more step for the live-tensor peak (:func:`cpu_tensor_peak`), after the sampled ones."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with MemorySampler(cuda_index=(device.index or 0) if cuda else None, interval_s=interval_s) as sampler:
        for _ in range(max(1, iters)):
            step()
            if cuda:
                torch.cuda.synchronize(device)
    stats = MemoryStats(rss_peak_mib=sampler.rss_peak_mib, nvml_process_peak_mib=sampler.process_peak_mib,
                        nvml_device_peak_mib=sampler.device_peak_mib)
    if cuda:
        stats.alloc_peak_mib = torch.cuda.max_memory_allocated(device) / MIB
        stats.reserved_peak_mib = torch.cuda.max_memory_reserved(device) / MIB
        stats.tensor_peak_mib = stats.alloc_peak_mib
        if sampler.handle is not None and stats.nvml_process_peak_mib is not None:
            stats.nvml_process_source = f"nvml: {sampler.process_note}" if sampler.process_note else "nvml: this process"
        elif sampler.handle is not None:
            stats.nvml_process_peak_mib, stats.nvml_process_source = process_fallback(sampler, device, stats.reserved_peak_mib)
    elif device.type == "cpu" and model is not None and not torch._C._autograd._profiler_enabled():
        # (inside a profile of its own, e.g. under `python -m bench profile`, the row goes without this figure)
        stats.tensor_peak_mib = cpu_tensor_peak(step, model, optimizer, inputs).peak_bytes / MIB
    return stats


def process_fallback(sampler: MemorySampler, device: torch.device, reserved_peak_mib: float) -> tuple[Optional[float], str]:
    """This process's GPU memory where NVML cannot name its process (MIG, several containers on one GPU):
    the allocator's reserved peak plus a measured context, in MiB, and a source that says so.

    context = NVML device used now - the device's use before this process initialised CUDA
    (``NVML.record_baseline``) - the allocator's reserve now: the CUDA context, loaded kernels and library
    workspaces, with the display and other processes left out (assumed steady over the case)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    why = sampler.process_note or "NVML gave no figure for this process"
    baseline, how = sampler.nvml.record_baseline(index)
    used = sampler.nvml.device_used_mib(sampler.handle)
    if baseline is None or used is None:
        return None, f"empty: {why}; no fallback: {how}"
    context = used - baseline - torch.cuda.memory_reserved(device) / MIB
    if context < 0:  # another process freed memory since the baseline: the difference is not this process's
        return None, f"empty: {why}; no fallback: the GPU holds {-context:.0f} MiB less than before this process started"
    return reserved_peak_mib + context, (f"fallback: allocator reserved peak + measured context {context:.0f} MiB (NVML device "
                                         f"used - {baseline:.0f} MiB in use before this process - allocator reserve); {why}")


@dataclass
class TensorPeak:
    peak_bytes: float       # highest live tensor bytes during the step, the starting tensors included
    start_bytes: float      # the tensors the step started with
    events: int             # allocator events seen during the step


def held_tensors(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                 inputs: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
    """The tensors a step starts with: parameters, their gradients, buffers, tensors a module keeps as
    attributes (caches, directly or in a dict, list or tuple), optimizer state and the inputs."""
    found: list = list(model.parameters()) + list(model.buffers())
    found += [p.grad for p in model.parameters() if p.grad is not None]
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, dict):
                found += list(value.values())
            elif isinstance(value, (list, tuple)):
                found += list(value)
            else:
                found.append(value)
    if optimizer is not None:
        for state in optimizer.state.values():
            found += list(state.values())
    if inputs is not None:
        found.append(inputs)
    return [t for t in found if isinstance(t, torch.Tensor)]


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared storages counted once)."""
    sizes: dict[int, int] = {}
    for t in tensors:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor without a storage (sparse, a subclass)
            continue
        sizes[storage._cdata] = storage.nbytes()
    return sum(sizes.values())


def cpu_tensor_peak(step: Callable[[], object], model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    inputs: Optional[torch.Tensor] = None) -> TensorPeak:
    """Peak live tensor bytes of one CPU step: the tensors it starts with, plus the CPU allocator's
    highest running total during it (profiler events; only blocks allocated inside the step are in
    that total, which is why the gradients are released first: the step would free them at its start)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # kineto's start/stop lines on stderr, once per case, otherwise
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    gc.collect()
    start = storage_bytes(held_tensors(model, optimizer, inputs))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = step()
        del result
    events = [node for node in _walk(prof.profiler.kineto_results.experimental_event_tree())
              if node.tag == _EventType.Allocation]
    if not events:
        return TensorPeak(float(start), float(start), 0)
    events.sort(key=lambda node: node.start_time_ns)
    first = events[0].extra_fields
    base = first.total_allocated - first.alloc_size  # the allocator's running total when the step began
    grown = max(node.extra_fields.total_allocated for node in events) - base
    return TensorPeak(float(start + max(grown, 0)), float(start), len(events))


def _walk(nodes):
    for node in nodes:
        yield node
        yield from _walk(node.children)
