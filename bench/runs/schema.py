"""The row: one per case, the one place its columns, units and meanings are written down.

``results.csv`` has exactly these columns in this order; the README's column table is
generated from here (``python -m bench columns``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

# ``invalid``: the case ran, but a figure of its row is outside physics (see :func:`invalid_reasons`);
# ``missing``: a merged run's case that no shard measured (``merge --allow-partial``, bench/scale/coverage.py)
STATUSES = ("ok", "oom", "unsupported", "error", "timeout", "invalid", "missing")


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    meaning: str


COLUMNS: tuple[Column, ...] = (
    Column("run_id", "", "the run this row belongs to"),
    Column("case_key", "", "stable case identity across runs (compare matches on it)"),
    Column("case_id", "", "readable id, as in pytest's test id"),
    Column("status", "", "ok, oom, unsupported, error, timeout, invalid (ran, but a figure is outside physics), or missing (a merge's case no shard measured)"),
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
    Column("mode", "", "infer (forward), train (forward+backward+AdamW step), embed (Embedding only), sequence-infer / "
           "sequence-train (frames -> Embedding -> LSTM, ae_models/sequence.py: the batch*seq_len frames encoded as one batch, "
           "then an LSTMModel of 2 layers, hidden 256; train: AdamW on the MSE of the LSTM's output against a fixed target)"),
    Column("batch", "images", "batch size; one iteration = one batch (in the sequence modes: sequences of seq_len frames each)"),
    Column("seq_len", "frames", "sequence modes: frames per sequence (T); empty in other modes"),
    Column("encoder", "", "sequence-train: frozen (no gradient, run under no_grad in eval mode) or finetune (trained with the "
           "LSTM); empty in other modes"),
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
    Column("processes", "count", "fresh processes that measured the case (--processes; each builds the model anew); the "
           "row's figures are those of the process with the middle median, every sample is in samples.jsonl"),
    Column("process_medians_ms", "", "each process's median time per batch in ms, space-separated (empty for one process)"),
    Column("bimodal", "", "True when the process medians differ far more than the samples within a process do: the speed "
           "depends on the build (memory layout, kernel choice), so one process cannot stand for the case"),
    Column("images_per_s", "images/s", "batch / median time (in the sequence modes: frames, batch x seq_len / median time)"),
    Column("sequences_per_s", "sequences/s", "sequence modes: batch / median time; empty in other modes"),
    Column("frames_per_s", "frames/s", "sequence modes: batch x seq_len / median time (= images_per_s); empty in other modes"),
    Column("encoder_pct", "%", "sequence modes: share of a step's time in the encoder (Embedding of the batch x seq_len "
           "frames, and its backward when fine-tuned), from torch.profiler over 2 extra eager steps: each op's self time "
           "(CPU; on CUDA the device time of its kernels) under the pipeline's encoder scope, backward ops by the "
           "forward op that made their autograd node (bench/core/sequence_metrics.py); empty in other modes"),
    Column("lstm_pct", "%", "sequence modes: the same for the LSTM and its head; the rest of the step (100 - encoder_pct "
           "- lstm_pct) is the loss, AdamW and the reshape between the parts; empty in other modes"),
    Column("gflop_per_image", "GFLOP", "floating-point operations per image for the mode (2 per multiply-add; per frame "
           "in the sequence modes, the LSTM's share included)"),
    Column("flops_source", "", "how gflop_per_image was counted"),
    Column("attn_gflop_analytic", "GFLOP", "attention score and value matmuls per image, from the shapes"),
    Column("attn_gflop_counted", "GFLOP", "the same as torch.utils.flop_counter saw it (0 where a fused kernel hides it)"),
    Column("tflops", "TFLOP/s", "achieved: FLOPs per batch / median time"),
    Column("peak_tflops", "TFLOP/s", "device peak for this precision"),
    Column("peak_source", "", "table entry (with its source) or measured GEMM"),
    Column("mfu", "ratio", "model FLOPs utilisation: tflops / peak_tflops"),
    Column("tensor_peak_mib", "MiB", "peak bytes of live tensors during one step (memory pass): torch.cuda.max_memory_allocated "
           "on CUDA; on a CPU the tensors the step starts with (weights, gradients, optimizer state, inputs) plus the "
           "CPU allocator's own running total during the step (torch.profiler events). The same on any device up to "
           "kernel workspaces"),
    Column("predicted_tensor_mib", "MiB", "the memory model's prediction of tensor_peak_mib for the same case and batch "
           "(bench/core/memory_model.py, traced on fake tensors for this device type)"),
    Column("prediction_error_pct", "%", "(predicted_tensor_mib - tensor_peak_mib) / tensor_peak_mib x 100"),
    Column("alloc_peak_mib", "MiB", "torch allocator peak allocated during the memory pass (CUDA)"),
    Column("reserved_peak_mib", "MiB", "torch allocator peak reserved during the memory pass (CUDA)"),
    Column("nvml_process_peak_mib", "MiB", "NVML peak of this process's GPU memory, CUDA context included"),
    Column("nvml_process_source", "", "how nvml_process_peak_mib was found: 'nvml: this process' (matched by PID), 'nvml: the "
           "only compute process' (a container's PIDs), 'fallback: allocator reserved peak + measured context' (NVML lists "
           "the GPU's processes but cannot say which is this one: MIG, several containers), or why it is empty"),
    Column("nvml_device_peak_mib", "MiB", "NVML peak of the whole GPU's used memory"),
    Column("rss_peak_mib", "MiB", "peak resident memory of the process during the memory pass (secondary: it includes "
           "the interpreter, torch and what earlier cases left)"),
    Column("energy_j_per_image", "J/image", "NVML energy over the timed loop / images (GPUs that report it)"),
    Column("sm_clock_mhz", "MHz", "SM clock at the end of the case"),
    Column("throttled", "", "True when NVML reported a slowdown reason at the end of the case"),
    Column("throttle_reasons", "", "NVML clock-event reasons (power cap, thermal, ...)"),
    Column("threads", "count", "torch intra-op threads"),
    Column("torch", "", "torch version"),
    Column("timestamp", "ISO 8601", "when the case finished (UTC)"),
    # where the case's time went (wall seconds per phase, bench/core/measure.py): the harness's own cost beside the timed loop
    Column("build_s", "s", "phase time: building the model, its inputs and optimizer (wall seconds)"),
    Column("warmup_s", "s", "phase time: the untimed steps before the timed loop, the first (compiling) one included"),
    Column("timed_loop_s", "s", "phase time: the timed loop, all its iterations (what the statistics come from)"),
    Column("memory_pass_s", "s", "phase time: the memory pass (its own steps, polled and profiled)"),
    Column("prediction_s", "s", "phase time: the memory model's prediction (a fit, once per configuration and process; "
           "the configuration's other batches reuse it)"),
    Column("flops_s", "s", "phase time: the FLOP count and attention-kernel detection (sequence modes: the profiled "
           "encoder/LSTM shares pass too)"),
    Column("check_s", "s", "phase time: the output check (one more forward, untimed)"),
    Column("case_s", "s", "the whole case in the process that measured it: the phases above, the release of its memory "
           "and what lies between them"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
# A case's phases, in the order they run; ``case_s`` holds them all (bench/report/display.py:time_shares reads them).
PHASE_COLUMNS: tuple[str, ...] = ("build_s", "warmup_s", "timed_loop_s", "memory_pass_s", "prediction_s", "flops_s",
                                  "check_s", "case_s")
UNITS: dict[str, str] = {c.name: c.unit for c in COLUMNS}
# Columns added after runs were first written: a results.csv without them still reads (they are empty).
LATER_COLUMNS: tuple[str, ...] = ("tensor_peak_mib", "predicted_tensor_mib", "prediction_error_pct",
                                  "seq_len", "encoder", "sequences_per_s", "frames_per_s", "encoder_pct", "lstm_pct",
                                  "processes", "process_medians_ms", "bimodal", "nvml_process_source") + PHASE_COLUMNS


def _number(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def invalid_reasons(row: dict[str, Any], timer_floor_ms: Optional[float] = None) -> list[str]:
    """Why the figures of a measured row cannot be true (empty when they can): MFU above 100%, a
    throughput or time that is not positive, a time below the timer's floor (``timer_floor_ms``, from
    the run's calibration), a tensor peak that is not positive. Such a row is ``invalid``, never a result."""
    reasons = []
    mfu = _number(row.get("mfu"))
    if mfu is not None and (mfu > 1.0 or not math.isfinite(mfu)):
        peak = _number(row.get("peak_tflops"))
        reasons.append(f"MFU {mfu:.1%} is above 100% of the {row.get('precision') or ''} peak "
                       f"({'%.3g TFLOP/s' % peak if peak is not None else 'unknown'}, {row.get('peak_source') or 'source unknown'})")
    rate = _number(row.get("images_per_s"))
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        reasons.append(f"throughput {rate:g} images/s is not positive and finite")
    median = _number(row.get("median_ms"))
    if median is not None and not (math.isfinite(median) and median > 0):
        reasons.append(f"median time {median:g} ms per batch is not positive and finite")
    elif median is not None and timer_floor_ms is not None and median < timer_floor_ms:
        reasons.append(f"median time {median:.3g} ms per batch is below the timer's floor ({timer_floor_ms:.3g} ms, an empty "
                       "timed call in the run's calibration): the timer did not see the work")
    tensor = _number(row.get("tensor_peak_mib"))
    if tensor is not None and not (math.isfinite(tensor) and tensor > 0):
        reasons.append(f"tensor peak {tensor:g} MiB is not positive (the inputs alone take memory)")
    return reasons


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
