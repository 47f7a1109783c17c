"""The seed's Quality column judged on a quality run's rows, only between models that learned.

A transformer case is paired with the CNN case of the same size, preset, latent, precision and
batch (one run: one budget). A pair in which either model beats its crops' own means by less than
``LEARNED_MARGIN_DB`` is "not judged". The rule is ``[quality]`` in ``data/seed_claims.toml``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from bench.quality.baselines import LEARNED_MARGIN_DB
from bench.runs.seed_claims import CLAIMS_FILE, load_claims

# quality_verdicts.csv: the first four are the contract with the main report
VERDICT_COLUMNS = ["claim", "size", "verdict", "reason", "transformer_case", "cnn_case", "transformer_psnr_db", "cnn_psnr_db",
                   "delta_psnr_db"]
NOT_LEARNED = "not judged: models did not learn in this budget"


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v == ""


def load_quality_claims(path: Path = CLAIMS_FILE) -> dict:
    """The seed's Quality column (``[[speed_comparison.row]]`` ``quality``) and the verdict rule ``[quality]``."""
    return load_claims(path, need=("quality", "speed_comparison"))


def _learned(row) -> bool:
    """A row's ``learned`` flag, also from a CSV (``True``/``"True"``/``"true"``); rows without baselines did not learn."""
    value = row.get("learned") if hasattr(row, "get") else None
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else False


def _margin_text(row) -> str:
    return (f"{row['case_id']} {float(row['psnr_db']):.2f} dB vs crop mean {float(row['baseline_crop_mean_db']):.2f} dB "
            f"({float(row['psnr_db']) - float(row['baseline_crop_mean_db']):+.2f} dB)"
            if not _missing(row.get("baseline_crop_mean_db")) else f"{row['case_id']}: no baseline")


def seed_quality_verdicts(rows: pd.DataFrame, claims: Optional[dict] = None) -> pd.DataFrame:
    """One line per (seed row, transformer case): the seed's grade, both PSNRs and SSIMs, the verdict and its reason.

    A transformer case is paired with the CNN case of the same size, preset, latent, precision and
    batch (one run: one budget). Only models that learned are compared: when either beats its crops'
    own means by less than ``LEARNED_MARGIN_DB`` the line is "not judged" (:data:`NOT_LEARNED`).
    Rule (``[quality]`` in the claims file): "Better" holds when ΔPSNR = transformer - CNN > noise_db;
    "Good" (the CNN's grade) holds when ΔPSNR >= -noise_db. A preset row is judged on cases of its
    preset, whatever the attention kernel (kernels compute the same function); a row naming no
    preset ("Transformer + Flash") on every transformer case.
    """
    claims = claims or load_quality_claims()
    rule = claims["quality"]
    noise = float(rule["noise_db"])
    families = claims["speed_comparison"].get("families", ["transformer"])
    ok = rows[(rows["status"] == "ok") & rows["psnr_db"].notna()]
    cnn = ok[ok["family"] == "cnn"]
    out = []
    for claim in claims["speed_comparison"]["row"]:
        if claim.get("baseline"):
            continue
        presets = claim.get("presets") or None
        text = f"{claim['configuration']}: quality \"{claim['quality']}\" (CNN: \"Good\")"
        candidates = ok[ok["family"].isin(families) & (ok["preset"].isin(presets) if presets else True)]
        if candidates.empty:
            out.append({"configuration": claim["configuration"], "claim": text, "seed_quality": claim["quality"], "size": "—",
                        "case": "—", "verdict": "not judged",
                        "reason": f"no transformer case of preset {', '.join(presets) if presets else 'any'} in this run"})
            continue
        for _, t in candidates.iterrows():
            match = cnn[(cnn["size"] == t["size"]) & (cnn["preset"] == t["preset"]) & (cnn["latent"] == t["latent"])
                        & (cnn["precision"] == t["precision"]) & (cnn["batch"] == t["batch"])]
            line = {"configuration": claim["configuration"], "claim": text, "seed_quality": claim["quality"], "size": t["size"],
                    "case": t["case_id"], "transformer_case": t["case_id"], "psnr_db": t["psnr_db"], "ssim": t["ssim"],
                    "transformer_psnr_db": t["psnr_db"]}
            if match.empty:
                line.update(verdict="not judged", reason="no CNN case of the same size, preset, latent, precision and batch")
                out.append(line)
                continue
            c = match.iloc[0]
            delta = float(t["psnr_db"] - c["psnr_db"])
            line.update(cnn_case=c["case_id"], cnn_psnr_db=c["psnr_db"], cnn_ssim=c["ssim"], delta_psnr_db=delta,
                        delta_ssim=float(t["ssim"] - c["ssim"]))
            idle = [r for r in (t, c) if not _learned(r)]
            if idle:
                line.update(verdict="not judged", reason=f"{NOT_LEARNED} (needs +{LEARNED_MARGIN_DB:g} dB over the crop mean): "
                            + "; ".join(_margin_text(r) for r in idle))
            elif claim["quality"] == rule["better"]:
                line.update(verdict="holds" if delta > noise else "does not hold",
                            reason=f"ΔPSNR transformer - CNN = {delta:+.2f} dB; \"Better\" needs > +{noise:g} dB")
            elif claim["quality"] == rule["same"]:
                line.update(verdict="holds" if delta >= -noise else "does not hold",
                            reason=f"ΔPSNR transformer - CNN = {delta:+.2f} dB; \"Good\" needs >= -{noise:g} dB")
            else:
                line.update(verdict="not judged", reason=f"no rule for grade {claim['quality']!r}")
            out.append(line)
    return pd.DataFrame(out)


def verdicts_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The machine-readable verdicts (``quality_verdicts.csv``): :data:`VERDICT_COLUMNS`."""
    return verdicts.reindex(columns=VERDICT_COLUMNS)


