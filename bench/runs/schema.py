"""The row: one per case, the one place its columns, units and meanings are written down.

``results.csv`` has exactly these columns in this order; the README's column table is
generated from here (``python -m bench columns``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATUSES = ("ok", "oom", "unsupported", "error", "timeout")


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    meaning: str


COLUMNS: tuple[Column, ...] = (
    Column("run_id", "", "the run this row belongs to"),
    Column("case_key", "", "stable case identity across runs (compare matches on it)"),
    Column("case_id", "", "readable id, as in pytest's test id"),
    Column("status", "", "ok, oom, unsupported, error or timeout"),
    Column("reason", "", "why the status is not ok; empty when ok"),
    Column("family", "", "transformer, transformer-flat, cnn, or a plug-in import path"),
    Column("preset", "", "tiny, small, medium, large, xlarge"),
    Column("size", "WxH", "input size, width x height"),
    Column("latent", "", "latent dimension (the preset's default when the case gave none)"),
    Column("tokenizer", "", "patch or flat (transformer families)"),
    Column("precision", "", "fp32, tf32, amp-fp16, amp-bf16, fp16, bf16"),
    Column("attention", "", "attention requested: flash, mem-efficient, cudnn, math, eager, auto, none"),
    Column("attention_ran", "", "attention kernel(s) that actually ran, seen at the dispatcher"),
    Column("checkpointing", "", "gradient checkpointing per block (True/False)"),
    Column("compile", "", "torch.compile mode, or off"),
    Column("mode", "", "infer (forward), train (forward+backward+AdamW step), embed (Embedding only)"),
    Column("batch", "images", "batch size; one iteration = one batch"),
    Column("device", "", "cuda or cpu"),
    Column("device_name", "", "GPU or CPU model"),
    Column("params", "count", "model parameters"),
    Column("timer", "", "cuda-events, sync-perf-counter (pytest-benchmark) or perf-counter (CPU)"),
    Column("first_step_ms", "ms", "first step, compilation included; excluded from the statistics"),
    Column("warmup_iters", "iterations", "untimed steps before the timed loop (the first step included)"),
    Column("iters", "iterations", "timed iterations (samples)"),
    Column("median_ms", "ms", "median time per batch"),
    Column("mean_ms", "ms", "mean time per batch"),
    Column("iqr_ms", "ms", "interquartile range of time per batch"),
    Column("p10_ms", "ms", "10th percentile of time per batch"),
    Column("p90_ms", "ms", "90th percentile of time per batch"),
    Column("min_ms", "ms", "fastest batch"),
    Column("cv", "ratio", "coefficient of variation (std / mean) of time per batch"),
    Column("noisy", "", "True when IQR / median exceeds the noise threshold: the spread says the machine was busy"),
    Column("images_per_s", "images/s", "batch / median time"),
    Column("gflop_per_image", "GFLOP", "floating-point operations per image for the mode (2 per multiply-add)"),
    Column("flops_source", "", "how gflop_per_image was counted"),
    Column("attn_gflop_analytic", "GFLOP", "attention score and value matmuls per image, from the shapes"),
    Column("attn_gflop_counted", "GFLOP", "the same as torch.utils.flop_counter saw it (0 where a fused kernel hides it)"),
    Column("tflops", "TFLOP/s", "achieved: FLOPs per batch / median time"),
    Column("peak_tflops", "TFLOP/s", "device peak for this precision"),
    Column("peak_source", "", "table entry (with its source) or measured GEMM"),
    Column("mfu", "ratio", "model FLOPs utilisation: tflops / peak_tflops"),
    Column("alloc_peak_mib", "MiB", "torch allocator peak allocated during the memory pass (CUDA)"),
    Column("reserved_peak_mib", "MiB", "torch allocator peak reserved during the memory pass (CUDA)"),
    Column("nvml_process_peak_mib", "MiB", "NVML peak of this process's GPU memory, CUDA context included"),
    Column("nvml_device_peak_mib", "MiB", "NVML peak of the whole GPU's used memory"),
    Column("rss_peak_mib", "MiB", "peak resident memory of the process during the memory pass (the CPU figure)"),
    Column("energy_j_per_image", "J/image", "NVML energy over the timed loop / images (GPUs that report it)"),
    Column("sm_clock_mhz", "MHz", "SM clock at the end of the case"),
    Column("throttled", "", "True when NVML reported a slowdown reason at the end of the case"),
    Column("throttle_reasons", "", "NVML clock-event reasons (power cap, thermal, ...)"),
    Column("threads", "count", "torch intra-op threads"),
    Column("torch", "", "torch version"),
    Column("timestamp", "ISO 8601", "when the case finished (UTC)"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
UNITS: dict[str, str] = {c.name: c.unit for c in COLUMNS}


def empty_row() -> dict[str, Any]:
    return {name: None for name in COLUMN_NAMES}


def check_row(row: dict[str, Any]) -> None:
    """A row has every column and nothing else, and a known status."""
    missing = [c for c in COLUMN_NAMES if c not in row]
    extra = [c for c in row if c not in COLUMN_NAMES]
    if missing or extra:
        raise ValueError(f"row does not match the schema: missing {missing}, unexpected {extra}")
    if row["status"] not in STATUSES:
        raise ValueError(f"row status {row['status']!r} is not one of {', '.join(STATUSES)}")


def markdown_table() -> str:
    lines = ["| column | unit | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.unit or ''} | {c.meaning} |" for c in COLUMNS]
    return "\n".join(lines)
