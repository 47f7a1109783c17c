"""A row's figures held to physics and to the model that predicts them.

- :func:`rate_against_peak`: MFU against the device's peak for the precision. A measured peak (a CPU,
  an unlisted GPU) that a case outran was under-measured (a busy moment): the case's own rate is the
  peak, flagged in ``peak_source``. A table peak is a datasheet figure: outrunning it is impossible.
- :func:`refuse_impossible`: an ``ok`` row whose figures cannot be true (MFU above 100%, a throughput
  or time that is not positive, a time below the timer's floor) becomes ``invalid``, with the reason
  (:func:`bench.runs.schema.invalid_reasons`); the report keeps it out of every result.
- :func:`predicted_tensor_peak`: the memory model's prediction (``bench.core.memory_model``) of the row's
  ``tensor_peak_mib``, and its error, so every run re-checks the planner on the device it runs on.
- :func:`rerate_rows`: the run's end (``bench.core.session``), when the peak a precision is rated
  against changed (:func:`bench.trackers.calibration.compare_peaks`): MFU again, against it.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import zipfile
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from bench.core.cases import Case
from bench.runs.files import atomic_write_bytes
from bench.runs.schema import invalid_reasons
from bench.trackers.device import PEAK_DTYPE, Peak
from bench.units import MIB

MEASURED = "measured"  # how a measured peak's source begins (bench.trackers.device.peak_for)


def rate_against_peak(tflops: float, peak: Peak) -> dict[str, Any]:
    """``peak_tflops``, ``peak_source`` and ``mfu`` of a case that achieved ``tflops``."""
    if peak.tflops and tflops > peak.tflops and peak.source.startswith(MEASURED):
        return {"peak_tflops": tflops, "mfu": 1.0,
                "peak_source": f"{peak.source}; raised to this case's achieved rate (the GEMM measured only {peak.tflops:.3g} "
                               "TFLOP/s: the machine was busy when it ran)"}
    return {"peak_tflops": peak.tflops, "peak_source": peak.source, "mfu": tflops / peak.tflops if peak.tflops else None}


def refuse_impossible(row: dict[str, Any], timer_floor_ms: Optional[float]) -> None:
    """Mark an ``ok`` row ``invalid`` when one of its figures is outside physics; the reason says which."""
    if row.get("status") != "ok":
        return
    reasons = invalid_reasons(row, timer_floor_ms)
    if reasons:
        row.update(status="invalid", reason="; ".join(reasons))


MODELS_ENV = "AE_BENCH_MEMORY_MODELS"  # a folder through which a run's processes share fitted memory models


@functools.lru_cache(maxsize=64)
def _fitted(config: Case, target: str):
    """The memory model of ``config`` (its batch 1) for ``target``, fitted once per configuration and run: this
    process keeps it (the cache above), and where the run shares a folder of models (``MODELS_ENV``, which
    ``bench.core.session`` makes for the run and removes at its end) the run's other processes read it from
    there instead of fitting it again (a child per case, ``--processes``). Not across runs: the code of the
    models, the steps or the predictor may have changed in between."""
    from bench.core.memory_model import fit

    path = _shared_path(config, target)
    model = _load(path, config, target) if path is not None else None
    if model is None:
        model = fit(config, target)
        if path is not None:
            _save(path, model)
    return model


def _shared_path(config: Case, target: str) -> Optional[Path]:
    folder = os.environ.get(MODELS_ENV)
    if not folder or not os.path.isdir(folder):
        return None
    return Path(folder) / f"{config.key}-{target}.npz"


def _load(path: Path, config: Case, target: str):
    """The model another process of the run saved at ``path``; None when there is none (or a damaged one)."""
    from bench.core.memory_model import MemoryModel

    try:
        with np.load(path, allow_pickle=False) as data:
            return MemoryModel(config, target, data["fixed"], data["per_image"],
                               tuple(int(b) for b in data["fit_batches"]), [str(n) for n in data["notes"]])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _save(path: Path, model) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, fixed=model.fixed, per_image=model.per_image, fit_batches=np.asarray(model.fit_batches),
             notes=np.asarray(model.notes, dtype=str))
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:
        pass  # the folder went (the run ended): this process keeps the model all the same


def predicted_tensor_peak(case: Case, device_type: str, measured_mib: Optional[float]) -> dict[str, Optional[float]]:
    """``predicted_tensor_mib`` (the memory model fitted for this case's configuration and device
    type, at its batch) and ``prediction_error_pct`` against ``measured_mib``; empty when the model
    cannot trace the case (the columns stay empty). One fit per configuration and process."""
    config = dataclasses.replace(case, batch=1, skip=None)
    try:
        model = _fitted(config, "cuda" if device_type == "cuda" else "cpu")
    except Exception:  # noqa: BLE001 - a case the model cannot trace keeps its measurement, without a prediction
        return {}
    predicted = model.peak(case.batch) / MIB
    error = 100 * (predicted - measured_mib) / measured_mib if measured_mib else None
    return {"predicted_tensor_mib": predicted, "prediction_error_pct": error}


def achieved_by_dtype(rows: Iterable[dict[str, Any]], device_type: str) -> dict[str, tuple[float, str]]:
    """Per peak dtype, the best TFLOP/s a case rated against a measured peak achieved, and its case id."""
    from bench.trackers.calibration import peak_dtype

    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        tflops = row.get("tflops")
        if row.get("status") not in ("ok", "invalid") or not isinstance(tflops, (int, float)) or tflops != tflops:
            continue
        if not str(row.get("peak_source") or "").startswith(MEASURED) or row.get("precision") not in PEAK_DTYPE:
            continue
        dtype = peak_dtype(device_type, PEAK_DTYPE[row["precision"]])
        if dtype not in best or tflops > best[dtype][0]:
            best[dtype] = (float(tflops), str(row.get("case_id") or ""))
    return best


def rerate_rows(rows: Iterable[dict[str, Any]], device_type: str, peaks: dict[str, dict],
                timer_floor_ms: Optional[float]) -> list[dict[str, Any]]:
    """Rate again the rows whose measured peak is not the one the run settled on (``peaks``, per dtype,
    from :func:`~bench.trackers.calibration.compare_peaks`); returns the rows changed (changed in place)."""
    from bench.trackers.calibration import peak_dtype

    changed = []
    for row in rows:
        if not str(row.get("peak_source") or "").startswith(MEASURED) or row.get("precision") not in PEAK_DTYPE:
            continue
        dtype = peak_dtype(device_type, PEAK_DTYPE[row["precision"]])
        settled = peaks.get(dtype) or {}
        used = settled.get("used_tflops")
        if not used or row.get("peak_tflops") == used or not isinstance(row.get("tflops"), (int, float)):
            continue
        head = str(row["peak_source"]).split(";")[0]
        row.update(peak_tflops=used, mfu=row["tflops"] / used,
                   peak_source=f"{head}; the run's {dtype} peak, from {settled.get('used_from')} (meta.json peaks)")
        if row.get("status") == "invalid" and not invalid_reasons(row, timer_floor_ms):
            row.update(status="ok", reason="")  # it was refused for an MFU the corrected peak no longer gives
        refuse_impossible(row, timer_floor_ms)
        changed.append(row)
    return changed
