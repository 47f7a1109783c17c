"""The seed's Quality column judged on a quality run's rows, only between models that learned.

A transformer case is paired with the CNN case of the same size, preset, latent, precision and
batch (one run: one budget), over the seeds both trained with. A pair in which either model beats
its images' own crop means by less than ``LEARNED_MARGIN_DB`` (mean over seeds) is "not judged".
The difference is the PSNR of the MSE pooled over held-out images, transformer - CNN, averaged over
seeds; it is shown (:func:`bench.quality.evidence.direction`) only when its 95% interval from
resampling held-out images excludes zero and it exceeds the seed-to-seed spread of the difference.
"Better" holds when the transformer is shown better; "Good" (not worse than the CNN) holds only when
that too is shown, and does not hold when the transformer is shown worse; anything else is "not
shown", with the numbers. ``[quality]`` in ``data/seed_claims.toml`` names the grades.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from bench.quality.baselines import LEARNED_MARGIN_DB
from bench.quality.evidence import Difference, direction, paired_difference
from bench.runs.seed_claims import CLAIMS_FILE, load_claims

# quality_verdicts.csv: the first four are the contract with the main report
VERDICT_COLUMNS = ["claim", "size", "verdict", "reason", "transformer_case", "cnn_case", "transformer_psnr_db", "cnn_psnr_db",
                   "delta_psnr_db", "interval_low_db", "interval_high_db", "seed_spread_db", "seeds", "images"]
NOT_SHOWN = "not shown"
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


def image_errors(images: Optional[pd.DataFrame], predictor: str, seeds: Optional[list] = None) -> pd.DataFrame:
    """Per-image MSEs of ``predictor`` (a case id, or ``baseline:<name>:<size>:<latent>``) from
    ``quality_images.csv``: a ``seeds x images`` table (rows sorted by seed, columns by image)."""
    if images is None or images.empty:
        return pd.DataFrame()
    mine = images[images["predictor"] == predictor]
    if seeds is not None:
        mine = mine[mine["seed"].isin(seeds)]
    return mine.pivot_table(index="seed", columns="image", values="mse", aggfunc="mean").sort_index()


def compare_cases(images: Optional[pd.DataFrame], a: str, b: str) -> Optional[Difference]:
    """PSNR(a) - PSNR(b) in dB over the seeds and held-out images both have; None without per-image figures."""
    ea, eb = image_errors(images, a), image_errors(images, b)
    if ea.empty or eb.empty:
        return None
    if not b.startswith("baseline:"):
        seeds = sorted(set(ea.index) & set(eb.index))
        ea, eb = ea.loc[seeds], eb.loc[seeds]
    common = sorted(set(ea.columns) & set(eb.columns))
    if not common or ea.empty:
        return None
    return paired_difference(ea[common].to_numpy(), eb[common].to_numpy(), "db")


def judged_words(diff: Optional[Difference], positive: str, negative: str) -> str:
    """``positive`` / ``negative`` when the difference is shown that way, else "not shown"."""
    if diff is None:
        return "not scored"
    return {1: positive, -1: negative}.get(direction(diff), NOT_SHOWN)


def _per_case(ok: pd.DataFrame) -> pd.DataFrame:
    """One line per case over its seeds: PSNR and margins averaged, the ``learned`` flag from the mean margin."""
    numeric = ["psnr_db", "ssim", "margin_crop_mean_db", "baseline_crop_mean_db"]
    agg = ok.groupby("case_id", sort=False).agg({**{c: "mean" for c in numeric if c in ok},
                                                 **{c: "first" for c in ok.columns if c not in numeric and c != "case_id"}})
    agg = agg.reset_index()
    if "margin_crop_mean_db" in agg:  # else each row's own flag stands
        agg["learned"] = agg["margin_crop_mean_db"] >= LEARNED_MARGIN_DB
    return agg


def _judge_pair(line: dict, grade: str, rule: dict, diff: Optional[Difference]) -> None:
    if diff is None:
        line.update(verdict="not judged", reason="no per-image figures for this pair (quality_images.csv)")
        return
    line.update(delta_psnr_db=diff.estimate, interval_low_db=diff.low, interval_high_db=diff.high,
                seed_spread_db=diff.seed_spread, seeds=diff.seeds, images=diff.images)
    shown = direction(diff)
    numbers = f"ΔPSNR transformer - CNN = {diff.text()}"
    if grade == rule["better"]:
        verdict = {1: "holds", -1: "does not hold"}.get(shown, NOT_SHOWN)
        line.update(verdict=verdict, reason=f"{numbers}; \"Better\" needs the interval above 0 and ΔPSNR above the seed spread")
    elif grade == rule["same"]:
        verdict = {1: "holds", -1: "does not hold"}.get(shown, NOT_SHOWN)
        line.update(verdict=verdict, reason=f"{numbers}; \"Good\" (not worse) holds only when shown better, "
                                            "fails when shown worse")
    else:
        line.update(verdict="not judged", reason=f"no rule for grade {grade!r}")


def seed_quality_verdicts(rows: pd.DataFrame, claims: Optional[dict] = None,
                          images: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One line per (seed row, transformer case): the seed's grade, both PSNRs, the difference with its
    image-level interval and seed spread, the verdict and its reason (module docstring: the rule).

    ``rows``: quality.csv (a row per case and seed); ``images``: quality_images.csv (per-image MSEs).
    A preset row is judged on cases of its preset, whatever the attention kernel (kernels compute the
    same function); a row naming no preset ("Transformer + Flash") on every transformer case.
    """
    claims = claims or load_quality_claims()
    rule = claims["quality"]
    families = claims["speed_comparison"].get("families", ["transformer"])
    ok = rows[(rows["status"] == "ok") & rows["psnr_db"].notna()]
    ok = _per_case(ok) if len(ok) else ok
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
            line.update(cnn_case=c["case_id"], cnn_psnr_db=c["psnr_db"], cnn_ssim=c["ssim"],
                        delta_psnr_db=float(t["psnr_db"] - c["psnr_db"]), delta_ssim=float(t["ssim"] - c["ssim"]))
            diff = compare_cases(images, t["case_id"], c["case_id"])
            _judge_pair(line, claim["quality"], rule, diff)
            idle = [r for r in (t, c) if not _learned(r)]
            if idle:  # the figures stay in the line; the verdict does not
                line.update(verdict="not judged", reason=f"{NOT_LEARNED} (needs +{LEARNED_MARGIN_DB:g} dB over the crop mean): "
                            + "; ".join(_margin_text(r) for r in idle) + (f"; ΔPSNR {diff.text()}" if diff else ""))
            out.append(line)
    return pd.DataFrame(out)


def verdicts_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The machine-readable verdicts (``quality_verdicts.csv``): :data:`VERDICT_COLUMNS`."""
    return verdicts.reindex(columns=VERDICT_COLUMNS)




def case_margins(rows: pd.DataFrame, images: Optional[pd.DataFrame]) -> pd.DataFrame:
    """Per case over its seeds: pooled PSNR (mean and seed range), per-image PSNR, and the margins over the
    crop-mean and latent baselines with their image-level intervals and what they show."""
    ok = rows[(rows["status"] == "ok") & rows["psnr_db"].notna()]
    out = []
    for case_id, group in ok.groupby("case_id", sort=False):
        first = group.iloc[0]
        line = {"case_id": case_id, "seeds": len(group), "steps": "/".join(str(int(v)) for v in sorted(set(group["steps"]))),
                "latent": first["latent"], "effective_latent": first.get("effective_latent"),
                "psnr_db": group["psnr_db"].mean(), "psnr_seed_range_db": group["psnr_db"].max() - group["psnr_db"].min(),
                "psnr_image_db": group["psnr_image_db"].mean() if "psnr_image_db" in group else math.nan,
                "ssim": group["ssim"].mean(), "images": first.get("n_heldout_images")}
        width = first.get("effective_latent") if not _missing(first.get("effective_latent")) else first["latent"]
        for name, label in (("crop_mean", "crop_mean"), ("latent", "latent")):
            diff = compare_cases(images, case_id, f"baseline:{name}:{first['size']}:{int(float(width))}")
            line[f"vs_{label}"] = diff
            line[f"vs_{label}_shown"] = judged_words(diff, "better", "worse")
        out.append(line)
    return pd.DataFrame(out)


def step_mismatch(rows: pd.DataFrame) -> list[str]:
    """Compared cases (same size and latent) whose rows trained different numbers of steps: one line each."""
    ok = rows[rows["status"] == "ok"]
    lines = []
    for (size, latent), group in ok.groupby(["size", "latent"]):
        steps = sorted({int(v) for v in group["steps"].dropna()})
        if len(steps) > 1:
            lines.append(f"{size}, latent {int(latent)}: the rows compared trained {', '.join(map(str, steps))} steps")
    return lines
