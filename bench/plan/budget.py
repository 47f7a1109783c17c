"""What a card of a given size leaves to a batch, and where the plan's figures come from.

Budget accounting, what the card sees (all in bytes of the card's memory):

    card = allocator reserved peak + CUDA context and library workspaces + display reserve

- The allocator's reserved peak is ``torch.cuda.max_memory_reserved`` when measured; predicted,
  it is the model's peak of live tensors times ``1 + ALLOC_OVERHEAD`` (the caching allocator
  rounds blocks up and keeps freed blocks cached: reserved/allocated peaks of 1.05-1.2 are common
  for a training loop; the measured rows record both so the figure can be checked).
- The context is measured with NVML on a GPU (process memory minus the allocator's reserve after a
  cuBLAS call); predicted, it is ``DEFAULT_CONTEXT_MIB`` = 450 MiB: ~300-400 MiB of CUDA context
  with lazy module loading (CUDA >= 11.7, PyTorch's default; pytorch/pytorch#107667 and #109888
  quote ~300 and ~400 MiB), plus cuBLAS/cuBLASLt workspaces (a few MiB to 32 MiB per handle, by
  GPU generation; the allocator reserves them but no tensor owns them) and the kernels a training
  step loads lazily: 450 MiB errs on the safe side of these figures.
- The display reserve (``--display-reserve``, default 256 MiB) is what a desktop takes on a card
  that drives the monitor (compositor, browser): 150-400 MiB is typical; give 0 for a headless card.
- A batch fits when its reserved peak is at most ``(budget - context - display) x (1 - margin)``;
  the margin (``--margin``, default 5%) covers fragmentation over a long run and the few tens of MiB
  a driver holds back (an "8 GB" card shows 8188 MiB in nvidia-smi).

Where the figures come from (:class:`PlanEnv`'s ``source``): ``measured`` on this GPU, whose memory
is the budget; ``emulated`` on a larger GPU held to the budget; ``predicted`` by the memory model
without a GPU.
"""

from __future__ import annotations

import re

import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from bench.core.cases import Case, why_skip
from bench.plan.defaults import DEFAULT_CONTEXT_MIB, DEFAULT_DISPLAY_RESERVE, DEFAULT_MARGIN, DEFAULT_MAX_BATCH
from bench.trackers.device import DeviceFacts, gpu_table
from bench.units import MIB, format_bytes, parse_bytes

ALLOC_OVERHEAD = 0.10           # predicted reserved = live tensors x (1 + this)

MEASURED, EMULATED, PREDICTED = "measured", "emulated", "predicted"


@dataclass(frozen=True)
class Budget:
    """What a card of ``card_bytes`` leaves to PyTorch's allocator, and the card-level totals."""

    card_bytes: int
    display_reserve: int = 256 * MIB
    context_bytes: int = DEFAULT_CONTEXT_MIB * MIB
    context_source: str = f"default: {DEFAULT_CONTEXT_MIB} MiB (CUDA context with lazy loading + cuBLAS workspaces)"
    margin: float = DEFAULT_MARGIN
    alloc_overhead: float = ALLOC_OVERHEAD
    display_source: str = "assumed (--display-reserve)"

    def __post_init__(self) -> None:
        if self.card_bytes <= 0:
            raise ValueError(f"bad budget {self.card_bytes} bytes: expected a positive size such as 8GiB")
        if self.display_reserve < 0 or self.context_bytes < 0:
            raise ValueError("display reserve and context must be sizes >= 0")
        if not 0 <= self.margin < 1:
            raise ValueError(f"bad margin {self.margin!r}: expected a fraction from 0 to below 1, e.g. 0.05")
        if self.alloc_overhead < 0:
            raise ValueError(f"bad allocator overhead {self.alloc_overhead!r}: expected a fraction >= 0")

    @property
    def allocator_limit(self) -> int:
        """Bytes PyTorch's allocator may reserve before the card is full (can be <= 0)."""
        return self.card_bytes - self.display_reserve - self.context_bytes

    @property
    def usable(self) -> float:
        """The reserved peak a batch may reach and still count as fitting (the margin taken off)."""
        return max(0.0, self.allocator_limit * (1 - self.margin))

    @property
    def live_limit(self) -> float:
        """The live-tensor peak a predicted batch may reach (the allocator's overhead taken off)."""
        return self.usable / (1 + self.alloc_overhead)

    def predicted_reserved(self, live_bytes: float) -> float:
        return live_bytes * (1 + self.alloc_overhead)

    def card_total(self, reserved_bytes: float) -> float:
        """What the card holds at that reserved peak: reserved + context + display."""
        return reserved_bytes + self.context_bytes + self.display_reserve

    def fits(self, reserved_bytes: float) -> bool:
        return reserved_bytes <= self.usable

    def describe(self) -> list[str]:
        """The accounting, one line each, for plan.md."""
        return [
            f"  card budget                               {self.card_bytes / MIB:8.0f} MiB  ({format_bytes(self.card_bytes)})",
            f"- display reserve                           {self.display_reserve / MIB:8.0f} MiB  ({self.display_source})",
            f"- CUDA context and library workspaces       {self.context_bytes / MIB:8.0f} MiB  ({self.context_source})",
            f"= allocator limit                           {self.allocator_limit / MIB:8.0f} MiB",
            f"x (1 - {self.margin:.0%} margin) = usable reserved peak  {self.usable / MIB:8.0f} MiB  (a batch fits when the allocator's "
            f"reserved peak is at most this)",
            f"/ {1 + self.alloc_overhead:.2f} allocator overhead = live tensors  {self.live_limit / MIB:8.0f} MiB  (a predicted batch fits "
            f"when the model's live-tensor peak is at most this)",
        ]


def find_gpu(name: str) -> dict:
    """The ``data/gpus.toml`` entry for ``rtx4060``, ``"RTX 4070 Laptop"``, ``rtx4060ti-16gb``, ...
    (letters and digits compared). A name sold with several memory sizes needs the size:
    ``rtx4060ti`` alone is an error that lists ``rtx4060ti-8gb, rtx4060ti-16gb``."""
    def norm(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    def short(entry: dict) -> str:
        return norm(entry["name"]).replace("nvidiageforce", "").replace("nvidia", "")

    wanted = norm(name)
    if not wanted:
        raise ValueError(f"--gpu: bad GPU name {name!r}")
    size = re.fullmatch(r"(.*?)(?:[\s_-]+|(?<=[a-z]))(\d+)\s*gb", name.strip().lower())
    table = gpu_table()

    def lookup(key: str) -> list[dict]:
        exact = [g for g in table if key in (norm(g["name"]), norm(g["match"]), short(g))]
        return exact or [g for g in table if key in norm(g["name"])]

    found = lookup(wanted)
    gib = None
    if len(found) != 1 and size:
        found, gib = lookup(norm(size.group(1))), int(size.group(2))
    if len(found) != 1:
        known = ", ".join(f"{short(g)}-{v}gb" for g in table for v in g.get("memory_variants_gib", [g["memory_gib"]]))
        raise ValueError(f"--gpu: unknown or ambiguous GPU {name!r}; known: {known}")
    entry = found[0]
    variants = entry.get("memory_variants_gib", [entry["memory_gib"]])
    if gib is None and len(variants) > 1:
        raise ValueError(f"--gpu {name}: the {entry['name']} is sold with {' and '.join(f'{v} GB' for v in variants)}; "
                         f"say which: {', '.join(f'{short(entry)}-{v}gb' for v in variants)}")
    if gib is not None and gib not in variants:
        raise ValueError(f"--gpu {name}: the {entry['name']} comes with {', '.join(f'{v} GB' for v in variants)}, "
                         f"not {gib} GB; say {', '.join(f'{short(entry)}-{v}gb' for v in variants)}")
    if gib is not None and len(variants) > 1:
        entry = {**entry, "name": f"{entry['name']} {gib}GB", "memory_gib": gib}
    return entry


def measure_context_bytes(device: torch.device) -> tuple[Optional[int], str]:
    """CUDA context + library workspaces of this process after one fp32 matmul, from NVML (or cudaMemGetInfo).

    The first estimate only: with lazy module loading, cuDNN, bf16 cuBLASLt and attention kernels
    load later, so the measured search takes the context again after every trial
    (:func:`context_after_steps`, ``bench.plan.search``) and keeps the largest.
    """
    a = torch.randn(1024, 1024, device=device)
    (a @ a).sum().item()  # create the cuBLAS handle and its workspace, as a training step would
    del a
    return context_after_steps(device)


def context_after_steps(device: torch.device) -> tuple[Optional[int], str]:
    """What this process holds on the GPU beyond the allocator's reserve, now: used memory minus reserved.

    That is the CUDA context, the kernels loaded so far and the library workspaces the allocator
    never sees. NVML's per-process figure when the driver reports it, else cudaMemGetInfo (the whole
    device: other processes count too).
    """
    from bench.trackers.nvml import NVML

    index = device.index if device.index is not None else torch.cuda.current_device()
    torch.cuda.synchronize(device)
    reserved = torch.cuda.memory_reserved(device)
    nvml = NVML.get()
    handle = nvml.handle(index) if nvml.available else None
    used = nvml.process_used_mib(handle) if handle is not None else None
    if used is not None:
        return int(used * MIB - reserved), f"measured with NVML on {torch.cuda.get_device_name(index)} (process memory - allocator reserve)"
    free, total = torch.cuda.mem_get_info(device)
    baseline, _ = nvml.record_baseline(index)
    if baseline is not None:  # the display and the other processes as they were before this one: left out
        return int(total - free - baseline * MIB - reserved), (
            f"measured with cudaMemGetInfo on {torch.cuda.get_device_name(index)} (device used - {baseline:.0f} MiB in use "
            f"before this process - allocator reserve; NVML could not name this process: {nvml.process_note or 'no NVML'})")
    return int(total - free - reserved), (f"measured with cudaMemGetInfo on {torch.cuda.get_device_name(index)} "
                                          "(device used - allocator reserve; other processes on the GPU count too)")


def measured_display(device: torch.device, assumed: int, assumed_source: str) -> tuple[int, str]:
    """On the planned card itself: what the display and other applications hold, measured (NVML device
    memory in use before this process initialised CUDA) instead of the assumed reserve; the assumption
    where NVML could not read it, with why."""
    from bench.trackers.nvml import NVML

    nvml = NVML.get()
    index = device.index if device.index is not None else 0
    used, how = nvml.record_baseline(index)
    if used is None:
        return assumed, f"{assumed_source}; not measured: {how}"
    handle = nvml.handle(index)
    drives = nvml.display_active(handle) if handle is not None else None
    what = {True: "this card drives a display", False: "no display on this card", None: "display unknown"}[drives]
    return int(used * MIB), f"measured: {how}; {what}"


TARGET_CAPABILITY = (8, 9)      # the cards planned for without a GPU: Ada (RTX 40xx)


def cuda_target_skip(case: Case, capability: tuple[int, int] = TARGET_CAPABILITY) -> Optional[str]:
    """Why ``case`` cannot run on a GPU of ``capability`` (an Ada card, 8.9, unless the plan's card says
    otherwise in ``data/gpus.toml``), judged without one: the model package's own CUDA rules
    (``ae_models.attention.why_unsupported``), asked for that card."""
    from ae_models.attention import why_unsupported
    from bench.core.precision import AUTOCAST_DTYPE, weight_dtype

    if case.attention in ("", "none"):
        return None
    dtype = AUTOCAST_DTYPE.get(case.precision) or weight_dtype(case.precision)
    return why_unsupported(case.attention, "cuda", dtype, 64, capability)


@dataclass
class PlanEnv:
    """Where and how the plan's figures are made."""

    budget: Budget
    target: str                        # what the budget is: "NVIDIA GeForce RTX 4060 (8 GiB)" or "8.00 GiB card"
    device: torch.device
    facts: DeviceFacts
    source: str = PREDICTED            # measured, emulated or predicted
    cap: int = DEFAULT_MAX_BATCH
    model_target: str = "cuda"
    check_fit: bool = True             # trace once more at the predicted maximum (fit_error_pct)
    capability: tuple = TARGET_CAPABILITY  # the card's compute capability (data/gpus.toml): which kernels it runs
    target_entry: Optional[dict] = None  # the planned card's data/gpus.toml entry (--gpu), None for a bare budget
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr)

    @property
    def device_label(self) -> str:
        if self.source == PREDICTED:
            return f"memory model traced on {self.facts.name} (fake tensors, CUDA semantics)"
        if self.source == EMULATED:
            return f"{self.facts.name} held to {format_bytes(self.budget.card_bytes)}"
        return self.facts.name

    def skip_reason(self, case: Case) -> Optional[str]:
        if case.compile != "off":
            return "the plan runs eager steps; a compiled step keeps other activations (plan it with compile off)"
        if self.source == PREDICTED:
            return cuda_target_skip(case, self.capability)
        return why_skip(case, self.facts)


def make_env(device: torch.device, facts: DeviceFacts, budget_text: Optional[str], gpu: Optional[str] = None,
             display_reserve: str = DEFAULT_DISPLAY_RESERVE, margin: float = DEFAULT_MARGIN,
             context: Optional[str] = None, predict_only: bool = False, cap: int = DEFAULT_MAX_BATCH) -> PlanEnv:
    """Resolve the budget (``--budget`` or the ``--gpu``'s memory), the context figure and the source."""
    entry = find_gpu(gpu) if gpu else None
    if budget_text:
        card = parse_bytes(budget_text, "--budget")
    elif entry is not None:
        card = int(entry["memory_gib"] * 2**30)
    else:
        raise ValueError("give the card's memory with --budget (e.g. 8GiB) or a known card with --gpu (e.g. rtx4060)")
    if card <= 0:
        raise ValueError(f"bad budget {budget_text!r}: expected a positive size such as 8GiB")
    if cap < 1:
        raise ValueError(f"bad --max-batch {cap}: expected a positive integer")
    target = f"{format_bytes(card)} card"
    if entry is not None:
        target = f"{entry['name']} ({format_bytes(card)}"
        target += ")" if abs(entry["memory_gib"] * 2**30 - card) < 2**20 else f" of its {entry['memory_gib']} GiB, as --budget says)"
    source = PREDICTED
    context_bytes, context_source = DEFAULT_CONTEXT_MIB * MIB, Budget.context_source
    if device.type == "cuda" and torch.cuda.is_available() and not predict_only:
        total = torch.cuda.get_device_properties(device).total_memory
        if total < card * 0.98:
            raise ValueError(f"this GPU has {format_bytes(total)}, less than the {format_bytes(card)} budget: it cannot show "
                             "what the larger card holds; plan for this card's size or use --predict")
        source = EMULATED if total > card * 1.02 else MEASURED
        measured, how = measure_context_bytes(device)
        if measured is not None:
            context_bytes, context_source = measured, how
            if source == EMULATED:
                context_source += "; a large GPU's context can exceed a small card's, so the emulation errs on the safe side"
    if context:
        context_bytes, context_source = parse_bytes(context, "--context"), "given with --context"
    display_bytes, display_source = parse_bytes(display_reserve, "--display-reserve"), "assumed (--display-reserve)"
    if source == MEASURED and display_reserve == DEFAULT_DISPLAY_RESERVE:  # the card itself: what else it holds is measured
        display_bytes, display_source = measured_display(device, display_bytes, display_source)
    elif source == EMULATED:
        display_source = "assumed for the target card's desktop (--display-reserve); this GPU's own use is not the target's"
    budget = Budget(card, display_bytes, context_bytes, context_source, margin, display_source=display_source)
    if budget.allocator_limit <= 0:
        raise ValueError(f"the budget {format_bytes(card)} leaves nothing to PyTorch: the CUDA context "
                         f"({context_bytes / MIB:.0f} MiB) and the display reserve ({budget.display_reserve / MIB:.0f} MiB) take it all")
    env = PlanEnv(budget, target, device, facts, source, cap, target_entry=entry)
    if entry is not None and entry.get("capability"):
        env.capability = tuple(int(x) for x in str(entry["capability"]).split("."))
    return env
