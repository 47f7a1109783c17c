"""The report's tables, computed from a run's rows with pandas (numbers unformatted, schema units).

Pivots (written next to results.csv): throughput and peak memory by preset x input size x
precision, latency percentiles, attention kernel requested vs ran, and the cases that did not
run. Paired comparisons: every ratio pairs two ``ok`` rows that differ in one axis only (or, for
the CNN, that match on the axes the seed's comparison names), so no ratio mixes configurations.
A speed or time ratio is only taken over *clean* pairs, where neither side's timing is ``noisy``
(its spread says the machine was busy); memory and parameter ratios do not depend on the timed
loop and take every pair. Rows whose figures are outside physics are ``invalid`` and in no table
but the validity section's (:func:`refuse_impossible_rows` applies the same rule to runs written before it).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import pandas as pd

from bench.runs.schema import invalid_reasons

# The axes that make a case (schema columns); two rows equal on all of these are the same case.
CASE_AXES = ("family", "preset", "size", "latent", "precision", "attention", "checkpointing", "compile", "mode", "batch",
             "seq_len", "encoder")  # the last two: the sequence modes' axes, empty elsewhere
# Transformer vs CNN: the seed's comparison pairs models of one preset on one workload. compile is
# added so that a compiled transformer is never set against an eager CNN.
CNN_MATCH = ("size", "precision", "mode", "batch", "preset", "compile", "seq_len", "encoder")
PIVOT_INDEX = ("family", "preset", "latent", "mode", "attention", "checkpointing", "compile", "batch", "seq_len", "encoder")
PIVOT_COLUMNS = ("size", "precision")
MEMORY_COLUMNS = ("tensor_peak_mib", "alloc_peak_mib", "reserved_peak_mib", "nvml_process_peak_mib", "nvml_device_peak_mib",
                  "rss_peak_mib")
# Where the one "peak memory" figure of a row comes from, best first. On a GPU, NVML's per-process
# figure includes the CUDA context and library workspaces that the allocator never sees, so it is
# what has to fit in the card. On a CPU, the peak of live tensors: the bytes a step keeps alive are
# the same on any device up to kernel workspaces, while the process's resident set (RSS, kept as a
# secondary column and the figure of runs made before the tensor peak existed) holds the
# interpreter, torch and what earlier cases left.
PEAK_SOURCES = {"cuda": ("nvml_process_peak_mib", "reserved_peak_mib", "alloc_peak_mib"),
                "cpu": ("tensor_peak_mib", "rss_peak_mib")}
PEAK_LABELS = {"tensor_peak_mib": "live tensors (device-independent)", "rss_peak_mib": "process RSS",
               "nvml_process_peak_mib": "NVML per-process", "reserved_peak_mib": "allocator reserved",
               "alloc_peak_mib": "allocator allocated",
               "nvml_process_fallback": "allocator reserved + measured context (NVML could not name the process)"}
MIN_CLEAN_PAIRS = 3  # a speed verdict or ratio summary needs this many pairs with neither side noisy


def ok_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"]


def refuse_impossible_rows(rows: pd.DataFrame, timer_floor_ms: Optional[float] = None) -> tuple[pd.DataFrame, int]:
    """``rows`` with every ``ok`` row whose figures are outside physics made ``invalid`` (the reason
    says which, and that the report refused it), and how many it refused. Rows measured since the
    rule existed were refused when they were measured; this catches older runs."""
    rows = rows.copy()
    refused = 0
    for index, row in rows[rows["status"] == "ok"].iterrows():
        reasons = invalid_reasons({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()},
                                  timer_floor_ms)
        if reasons:
            rows.at[index, "status"] = "invalid"
            rows.at[index, "reason"] = "refused by the report: " + "; ".join(reasons)
            refused += 1
    return rows, refused


def invalid_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows refused as impossible, with why."""
    return rows[rows["status"] == "invalid"][["case_id", "reason", "mfu", "images_per_s", "median_ms"]].reset_index(drop=True)


def prediction_table(rows: pd.DataFrame, count: Optional[int] = None) -> pd.DataFrame:
    """Ok rows with a memory-model prediction, worst ``|prediction_error_pct|`` first (all of them without ``count``)."""
    ok = ok_rows(rows)
    ok = ok[ok["prediction_error_pct"].notna()].copy()
    ok["abs_error"] = ok["prediction_error_pct"].abs()
    ok = ok.sort_values("abs_error", ascending=False)
    columns = ["case_id", "tensor_peak_mib", "predicted_tensor_mib", "prediction_error_pct", "abs_error"]
    return (ok if count is None else ok.head(count))[columns].reset_index(drop=True)


def peak_label(sources: Iterable[str]) -> str:
    """What the peak figures drawn from ``sources`` (``peak_from`` values) are, in words."""
    found = [s for s in dict.fromkeys(sources) if s]
    return " / ".join(PEAK_LABELS.get(s, s) for s in found) or "no figure"


def with_peak(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` plus ``peak_mib`` (MiB) and ``peak_from`` (the column it came from)."""
    rows = rows.copy()
    peaks, sources = [], []
    for _, row in rows.iterrows():
        value, source = math.nan, ""
        for column in PEAK_SOURCES.get(row["device"], PEAK_SOURCES["cpu"]):
            if not pd.isna(row[column]):
                value, source = float(row[column]), column
                if column == "nvml_process_peak_mib" and str(row.get("nvml_process_source", "")).startswith("fallback"):
                    source = "nvml_process_fallback"  # not NVML's own figure: the row says so (runs/schema.py)
                break
        peaks.append(value)
        sources.append(source)
    rows["peak_mib"] = peaks
    rows["peak_from"] = sources
    return rows


def _keyed(rows: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Empty keys made explicit, so that groupby/pivot/merge never drop a row for a NaN."""
    rows = rows.copy()
    for column in columns:
        if rows[column].dtype == object:
            rows[column] = rows[column].map(lambda v: "" if v is None else v)
        else:
            rows[column] = rows[column].fillna(0)
    return rows


def _pivot(rows: pd.DataFrame, values: list[str], name_metric: bool) -> pd.DataFrame:
    """Columns are ``"<size> <precision>"``, or ``"<metric> <size> <precision>"`` with ``name_metric``."""
    index, columns = list(PIVOT_INDEX), list(PIVOT_COLUMNS)
    if rows.empty or not values:
        return pd.DataFrame(columns=index)
    keyed = _keyed(rows, index + columns)
    for column in ("latent", "batch", "seq_len"):  # whole numbers, written as 128 rather than 128.0 (seq_len 0: none)
        keyed[column] = keyed[column].astype("int64")
    table = keyed.pivot_table(index=index, columns=columns, values=values, aggfunc="first", dropna=True)
    table.columns = [" ".join(str(part) for part in (key if name_metric else key[1:])) for key in table.columns]
    return table.reset_index()


def throughput_table(rows: pd.DataFrame) -> pd.DataFrame:
    """images/s of every ok case: one line per preset and workload, one column per size and precision."""
    return _pivot(ok_rows(rows), ["images_per_s"], name_metric=False)


def memory_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Peak memory (MiB) of every ok case, per measured figure (allocator, NVML, RSS), same axes."""
    ok = ok_rows(rows)
    present = [c for c in MEMORY_COLUMNS if c in ok and ok[c].notna().any()]
    return _pivot(ok, present, name_metric=True)


def latency_table(rows: pd.DataFrame, samples_ms: dict[str, list[float]]) -> pd.DataFrame:
    """Per ok case, ms per batch: min, p10, median, p90, mean, IQR, and the slowest sample."""
    columns = ["case_id", "batch", "iters", "min_ms", "p10_ms", "median_ms", "p90_ms", "mean_ms", "iqr_ms", "cv", "noisy"]
    table = ok_rows(rows)[columns + ["case_key"]].copy()
    table["max_ms"] = [max(samples_ms[k]) if samples_ms.get(k) else math.nan for k in table["case_key"]]
    return table.drop(columns="case_key").reset_index(drop=True)


def attention_kernel_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Transformer cases: the attention requested, the kernel(s) seen at the dispatcher, and whether
    they agree (``auto`` agrees with anything; a case that did not run has nothing to compare)."""
    table = rows[rows["attention"].ne("none") & rows["attention"].ne("")][
        ["case_id", "status", "precision", "device", "attention", "attention_ran"]].copy()

    def agrees(row) -> str:
        if row["status"] != "ok" or not row["attention_ran"]:
            return ""
        if row["attention"] == "auto":
            return "yes"
        return "yes" if row["attention_ran"] == row["attention"] else "no"

    table["agrees"] = [agrees(r) for _, r in table.iterrows()]
    return table.reset_index(drop=True)


def not_ok_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Every case that did not produce a measurement, with its status and reason (``invalid`` rows, which
    ran but whose figures cannot be true, are in :func:`invalid_table`)."""
    return rows[~rows["status"].isin(["ok", "invalid"])][["case_id", "status", "reason"]].reset_index(drop=True)


def status_counts(rows: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in rows["status"].value_counts().sort_index().items()}


# -- paired comparisons ------------------------------------------------------------------------

def pair(rows: pd.DataFrame, is_baseline: pd.Series, is_candidate: pd.Series, match: Iterable[str]) -> pd.DataFrame:
    """Pair each ok candidate row with the ok baseline row equal on ``match``.

    Returns one line per pair: the candidate's case axes, ``case_id``/``baseline_case_id``,
    images/s, ms, peak MiB and parameters of both, and the ratios ``speed_ratio`` (images/s over
    the baseline's), ``time_ratio`` (median ms over the baseline's), ``memory_ratio`` (peak MiB
    over the baseline's) and ``params_ratio``.
    """
    match = list(match)
    ok = with_peak(ok_rows(rows))
    keep = ["case_id", "images_per_s", "median_ms", "peak_mib", "peak_from", "params", "device", "noisy"]
    base = _keyed(ok[is_baseline.reindex(ok.index, fill_value=False)], match)
    cand = _keyed(ok[is_candidate.reindex(ok.index, fill_value=False)], match)
    if base.empty or cand.empty:
        return pd.DataFrame(columns=list(CASE_AXES) + ["case_id", "baseline_case_id", "speed_ratio", "time_ratio",
                                                        "memory_ratio", "params_ratio", "peak_from", "noisy",
                                                        "baseline_noisy", "clean"])
    base = base.drop_duplicates(subset=match)[match + keep].rename(columns={c: f"baseline_{c}" for c in keep})
    merged = cand.merge(base, on=match, how="inner")
    merged["speed_ratio"] = merged["images_per_s"] / merged["baseline_images_per_s"]
    merged["time_ratio"] = merged["median_ms"] / merged["baseline_median_ms"]
    merged["memory_ratio"] = merged["peak_mib"] / merged["baseline_peak_mib"]
    merged.loc[merged["peak_from"] != merged["baseline_peak_from"], "memory_ratio"] = math.nan  # never two kinds of figure
    merged["params_ratio"] = merged["params"] / merged["baseline_params"]
    # neither side's timing noisy: only such a pair enters a speed or time ratio
    merged["clean"] = [not (a is True or b is True) for a, b in zip(merged["noisy"], merged["baseline_noisy"])]
    columns = list(CASE_AXES) + ["case_id", "baseline_case_id", "images_per_s", "baseline_images_per_s", "median_ms",
                                 "baseline_median_ms", "peak_mib", "baseline_peak_mib", "peak_from", "params",
                                 "baseline_params", "speed_ratio", "time_ratio", "memory_ratio", "params_ratio", "device",
                                 "noisy", "baseline_noisy", "clean"]
    return merged[columns].reset_index(drop=True)


def vs_cnn(rows: pd.DataFrame) -> pd.DataFrame:
    """Every transformer case next to the CNN case of the same size, precision, mode, batch, preset, compile."""
    family = rows["family"]
    return pair(rows, family.eq("cnn"), family.str.startswith("transformer"), CNN_MATCH)


def vs_axis(rows: pd.DataFrame, axis: str, baseline, modes: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """Cases that differ from a baseline case only in ``axis`` (fp32 for precision, eager for
    attention, False for checkpointing), paired with it."""
    match = [a for a in CASE_AXES if a != axis]
    scope = rows if modes is None else rows[rows["mode"].isin(list(modes))]
    values = scope[axis]
    is_base = values.map(lambda v: v == baseline)
    is_cand = values.map(lambda v: v != baseline and v not in (None, "", "none"))
    return pair(scope, is_base, is_cand, match)


def summarize_pairs(pairs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: the number of pairs, how many are clean and how many were left out as noisy, the
    median (and range) of the speed and time ratios over the clean pairs (empty with fewer than
    ``MIN_CLEAN_PAIRS``: too noisy to judge), and the median memory and parameter ratios over all pairs."""
    columns = by + ["pairs", "clean_pairs", "noisy_left_out", "speed_ratio", "speed_ratio_min", "speed_ratio_max",
                    "memory_ratio", "params_ratio", "time_ratio"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    keyed = _keyed(pairs, by)
    if "clean" not in keyed:
        keyed["clean"] = True
    timing = keyed[["speed_ratio", "time_ratio"]].where(keyed["clean"].astype(bool))
    keyed = keyed.assign(clean_speed=timing["speed_ratio"], clean_time=timing["time_ratio"],
                         clean_flag=keyed["clean"].astype(bool))
    grouped = keyed.groupby(by, sort=False)
    out = grouped.agg(pairs=("case_id", "size"), clean_pairs=("clean_flag", "sum"),
                      speed_ratio=("clean_speed", "median"), speed_ratio_min=("clean_speed", "min"),
                      speed_ratio_max=("clean_speed", "max"), memory_ratio=("memory_ratio", "median"),
                      params_ratio=("params_ratio", "median"), time_ratio=("clean_time", "median")).reset_index()
    out["clean_pairs"] = out["clean_pairs"].astype(int)
    out["noisy_left_out"] = out["pairs"] - out["clean_pairs"]
    too_few = out["clean_pairs"] < MIN_CLEAN_PAIRS
    for column in ("speed_ratio", "speed_ratio_min", "speed_ratio_max", "time_ratio"):
        out.loc[too_few, column] = math.nan
    return out[columns]


def checkpointing_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Training cases with and without per-block checkpointing: memory saved and time lost, in %.

    Only ``train`` counts: checkpointing recomputes activations in the backward pass, which
    inference and embedding never run.
    """
    pairs = vs_axis(rows, "checkpointing", False, modes=["train"])
    pairs["memory_saved_pct"] = (1 - pairs["memory_ratio"]) * 100
    pairs["time_lost_pct"] = (pairs["time_ratio"] - 1) * 100
    return pairs


def headline(rows: pd.DataFrame, budget_mib: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per input size and mode, the ok case with the most images/s whose peak fits ``budget_mib``.

    Returns (the winners, per size and mode how many ok cases exceeded the budget or had no peak).
    Sizes and modes are kept apart: a training and an inference throughput answer different questions.
    """
    ok = with_peak(ok_rows(rows))
    fits = ok[ok["peak_mib"] <= budget_mib]
    winners = (fits.sort_values("images_per_s", ascending=False).groupby(["size", "mode"], sort=False).head(1)
               .sort_values(["size", "mode"]))
    counts = []
    for (size, mode), group in ok.groupby(["size", "mode"], sort=True):
        counts.append({"size": size, "mode": mode, "ok": len(group), "fit": int((group["peak_mib"] <= budget_mib).sum()),
                       "over": int((group["peak_mib"] > budget_mib).sum()), "no_peak": int(group["peak_mib"].isna().sum())})
    return winners.reset_index(drop=True), pd.DataFrame(counts, columns=["size", "mode", "ok", "fit", "over", "no_peak"])
