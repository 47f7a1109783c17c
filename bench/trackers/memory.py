"""The memory pass: a few steps run apart from the timed loop, with the peaks recorded.

CUDA: the torch allocator's peak allocated and reserved, and NVML's per-process and device-wide
peaks (sampled on a thread; they include the CUDA context and library workspaces that the
allocator never sees). Every device: the process's peak resident memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from bench.trackers.nvml import MIB, MemorySampler


@dataclass
class MemoryStats:
    alloc_peak_mib: Optional[float] = None
    reserved_peak_mib: Optional[float] = None
    nvml_process_peak_mib: Optional[float] = None
    nvml_device_peak_mib: Optional[float] = None
    rss_peak_mib: Optional[float] = None


def memory_pass(step: Callable[[], object], device: torch.device, iters: int = 2, interval_s: float = 0.01) -> MemoryStats:
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
    return stats
