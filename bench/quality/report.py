"""A quality run's files and its report section.

A run folder holds (each rewritten atomically after every case, so a killed run keeps its rows):

- ``quality.csv``: one row per case, columns and units in :data:`QUALITY_COLUMNS`;
- ``quality_curves.csv``: the held-out loss curve, a row per evaluation (case_id, step, train_s, heldout_mse, train_mse);
- ``quality_strips.npz``: a few held-out crops per size and each case's reconstructions of them;
- ``quality_meta.json``: device, command, budget, data set and split;

and, when the run finishes (or ``python -m bench quality --report DIR``): ``quality.md`` and
``quality_loss.png``, ``quality_pareto.png``, ``quality_strip_<size>.png``.

The seed's Quality column is judged by the rule in ``data/seed_claims.toml`` ``[quality]``
(see :func:`seed_quality_verdicts`).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from bench.quality.pareto import with_pareto
from bench.runs.files import atomic_write_bytes, atomic_write_text
from bench.runs.markdown import markdown_table as md_table
from bench.runs.seed_claims import CLAIMS_FILE, load_claims

QUALITY_CSV, CURVES_CSV, STRIPS_NPZ, META_JSON, REPORT_MD = (
    "quality.csv", "quality_curves.csv", "quality_strips.npz", "quality_meta.json", "quality.md")
EARLY_STEPS = 100  # below this many steps a verdict is flagged as about early training

# column -> (unit, meaning); one row per case in quality.csv
QUALITY_COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("", "run"),
    "case_id": ("", "family-preset-size[-zLATENT]-precision[-attention]-bBATCH"),
    "case_key": ("", "the speed suite's key of the case trained"),
    "family": ("", "model family"), "preset": ("", "preset"), "size": ("WxH", "crop size"),
    "latent": ("values", "latent dimension as built"), "tokenizer": ("", "transformer tokenizer"),
    "precision": ("", "precision"), "attention": ("", "attention kernel requested (does not change the result)"),
    "batch": ("images", "training batch"),
    "params": ("", "parameters"),
    "budget_steps": ("steps", "step budget (empty for a time budget)"),
    "budget_seconds": ("s", "time budget (empty for a step budget)"),
    "steps": ("steps", "optimizer steps taken"),
    "train_s": ("s", "training clock (evaluations excluded)"),
    "eval_s": ("s", "time spent evaluating the curve (not in train_s)"),
    "images_per_s": ("images/s", "training throughput during the budget"),
    "peak_mib": ("MiB", "peak memory of two training steps: CUDA allocator peak, or a fresh process's peak RSS on a CPU"),
    "rss_base_mib": ("MiB", "CPU: that process's RSS before the model was built (Python and torch)"),
    "peak_source": ("", "what peak_mib measures"),
    "heldout_mse_init": ("", "held-out MSE of the untrained model (curve crops, unclipped)"),
    "heldout_mse_final": ("", "held-out MSE after the budget (curve crops, unclipped)"),
    "mse": ("", "mean over all held-out crops of scikit-image MSE (reconstruction clipped to [0, 1])"),
    "psnr_db": ("dB", "mean over held-out crops of PSNR, data_range 1"),
    "ssim": ("", "mean over held-out crops of SSIM, data_range 1"),
    "embed_spearman_init": ("", "Spearman(window distance, latent cosine similarity), untrained; negative = good"),
    "embed_spearman": ("", "the same after training"),
    "embed_windows": ("windows", "windows embedded"), "embed_images": ("images", "held-out bands slid along"),
    "n_train_crops": ("crops", "training crops"), "n_heldout_crops": ("crops", "held-out crops scored"),
    "seed": ("", "seed"), "lr": ("", "AdamW learning rate"),
    "device": ("", "cpu or cuda"), "device_name": ("", "device"), "torch": ("", "torch version"),
    "threads": ("", "torch CPU threads"),
    "status": ("", "ok, oom, unsupported, error"), "reason": ("", "why, when not ok"),
    "timestamp": ("", "UTC, when the case finished"),
}


def empty_quality_row() -> dict[str, Any]:
    return {c: None for c in QUALITY_COLUMNS} | {"reason": "", "status": ""}


class QualityWriter:
    """Collects the cases of a quality run and keeps its files up to date after every case."""

    def __init__(self, run_dir: Path, meta: dict) -> None:
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"output {self.run_dir} exists and is not a folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / QUALITY_CSV
        self.meta = dict(meta)
        self.rows: list[dict] = []
        self.curves: list[dict] = []
        self.strips: dict[str, np.ndarray] = {}
        self._write_meta()

    def set_data(self, description: dict) -> None:
        self.meta["data"] = description
        self._write_meta()

    def _write_meta(self) -> None:
        atomic_write_text(self.run_dir / META_JSON, json.dumps(self.meta, indent=2, default=str) + "\n")

    def add(self, result) -> None:
        """Append a :class:`bench.quality.run.QualityResult` and rewrite the run's files."""
        row = result.row
        self.rows.append(row)
        self.curves += [{"case_id": row["case_id"], "step": p.step, "train_s": p.train_s, "heldout_mse": p.heldout_mse,
                         "train_mse": p.train_mse} for p in result.curve]
        if result.originals is not None:
            self.strips.setdefault(f"original/{row['size']}", result.originals)
            self.strips[f"recon/{row['size']}/{row['case_id']}"] = result.reconstructions
        atomic_write_text(self.csv_path, pd.DataFrame(self.rows, columns=list(QUALITY_COLUMNS)).to_csv(index=False))
        atomic_write_text(self.run_dir / CURVES_CSV, pd.DataFrame(
            self.curves, columns=["case_id", "step", "train_s", "heldout_mse", "train_mse"]).to_csv(index=False))
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.strips)
        atomic_write_bytes(self.run_dir / STRIPS_NPZ, buf.getvalue())

    def finish(self) -> Path:
        return write_quality_report(self.run_dir)


# -- analysis ---------------------------------------------------------------------------------------

def load_quality_claims(path: Path = CLAIMS_FILE) -> dict:
    """The seed's Quality column (``[[speed_comparison.row]]`` ``quality``) and the verdict rule ``[quality]``."""
    return load_claims(path, need=("quality", "speed_comparison"))


def seed_quality_verdicts(rows: pd.DataFrame, claims: Optional[dict] = None) -> pd.DataFrame:
    """One line per (seed row, transformer case): the seed's grade, both PSNRs and SSIMs, the verdict.

    A transformer case is paired with the CNN case of the same size, preset, latent, precision and
    batch (one run: one budget). Rule (``[quality]`` in the claims file): "Better" holds when
    ΔPSNR = transformer - CNN > noise_db; "Good" (the CNN's grade) holds when ΔPSNR >= -noise_db.
    A preset row is judged on cases of its preset, whatever the attention kernel (kernels compute
    the same function); a row naming no preset ("Transformer + Flash") on every transformer case.
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
        candidates = ok[ok["family"].isin(families) & (ok["preset"].isin(presets) if presets else True)]
        if candidates.empty:
            out.append({"configuration": claim["configuration"], "seed_quality": claim["quality"], "size": "—", "case": "—",
                        "verdict": "not measured in this run"})
            continue
        for _, t in candidates.iterrows():
            match = cnn[(cnn["size"] == t["size"]) & (cnn["preset"] == t["preset"]) & (cnn["latent"] == t["latent"])
                        & (cnn["precision"] == t["precision"]) & (cnn["batch"] == t["batch"])]
            line = {"configuration": claim["configuration"], "seed_quality": claim["quality"], "size": t["size"],
                    "case": t["case_id"], "psnr_db": t["psnr_db"], "ssim": t["ssim"]}
            if match.empty:
                line["verdict"] = "not measured in this run (no CNN case of the same size, preset, latent, precision and batch)"
            else:
                c = match.iloc[0]
                delta = float(t["psnr_db"] - c["psnr_db"])
                line.update(cnn_case=c["case_id"], cnn_psnr_db=c["psnr_db"], cnn_ssim=c["ssim"], delta_psnr_db=delta,
                            delta_ssim=float(t["ssim"] - c["ssim"]))
                if claim["quality"] == rule["better"]:
                    line["verdict"] = "holds" if delta > noise else "does not hold"
                elif claim["quality"] == rule["same"]:
                    line["verdict"] = "holds" if delta >= -noise else "does not hold"
                else:
                    line["verdict"] = f"no rule for grade {claim['quality']!r}"
            out.append(line)
    return pd.DataFrame(out)


def embedding_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Spearman(distance, similarity) per family, latent, preset and size: untrained and trained."""
    ok = rows[rows["status"] == "ok"]
    return ok[["family", "latent", "preset", "size", "embed_spearman_init", "embed_spearman", "embed_windows", "embed_images"]] \
        .sort_values(["family", "latent", "size"]).reset_index(drop=True)


# -- formatting --------------------------------------------------------------------------------------

def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v == ""


def _num(v: Any, fmt: str = ".3g") -> str:
    if _missing(v):
        return "—"
    v = float(v)
    if math.isinf(v):
        return "∞"
    return f"{v:,.0f}" if abs(v) >= 1000 else format(v, fmt)


def summary_lines(rows: list[dict]) -> list[str]:
    """The console table: one line per case."""
    head = f"{'case':<48} {'steps':>6} {'img/s':>8} {'peak MiB':>9} {'PSNR dB':>8} {'SSIM':>6} {'rho':>6}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['case_id']:<48} {_num(r['steps'], '.0f'):>6} {_num(r['images_per_s']):>8} {_num(r['peak_mib'], '.0f'):>9} "
                     f"{_num(r['psnr_db'], '.2f'):>8} {_num(r['ssim'], '.3f'):>6} {_num(r['embed_spearman'], '.2f'):>6}  {r['status']}")
    return lines


def _budget_text(meta: dict) -> str:
    budget = meta.get("budget", {})
    if budget.get("steps"):
        return f"{budget['steps']} optimizer steps per case"
    if budget.get("seconds"):
        return f"{budget['seconds']:g} s of training clock per case (evaluations excluded)"
    return "unknown budget"


def build_quality_markdown(rows: pd.DataFrame, meta: dict, figures: list[tuple[str, str]]) -> str:
    """quality.md: the results table, Pareto fronts, the seed's Quality column judged, embeddings, figures, method."""
    rows = with_pareto(rows)
    device = meta.get("device", {})
    provenance = f"measured on {device.get('name', '?')} ({device.get('type', '?')})"
    data = meta.get("data", {})
    noise = load_quality_claims()["quality"]["noise_db"]
    md = ["# Reconstruction quality on real images", "",
          f"{provenance}, torch {device.get('torch', '?')}, {meta.get('created', '')}, commit {meta.get('commit') or '?'}.  ",
          f"Command: `{meta.get('command', '?')}`  ",
          f"Budget: {_budget_text(meta)}, AdamW lr {meta.get('lr', '?')}, seed {data.get('seed', '?')}.  ",
          f"Data: {data.get('source', '?')}.", ""]
    for text in data.get("splits", {}).values():
        md.append(f"- {text}")
    if data.get("unavailable"):
        md.append("- not loaded: " + "; ".join(f"{k} ({v})" for k, v in data["unavailable"].items()))
    for size, dropped in data.get("dropped", {}).items():
        md.append(f"- not used at {size}: " + "; ".join(f"{k}: {v}" for k, v in dropped.items()))
    md += ["", "## Quality next to speed and memory", "",
           "PSNR, SSIM and MSE over every held-out crop (reconstruction clipped to [0, 1], `data_range=1`); the held-out "
           "loss is the training objective (unclipped MSE) on the curve's crops, untrained → after the budget. "
           "Images/s is training throughput during the budget; peak MiB as the column says. "
           "★ marks the Pareto front within a size (no other case has both higher PSNR and higher images/s, or lower MiB).", ""]
    lines = []
    for _, r in rows.iterrows():
        if r["status"] != "ok":
            lines.append([r["case_id"], r["status"], r["reason"]] + [""] * 10)
            continue
        lines.append([r["case_id"], _num(r["params"], ",.0f") if not _missing(r["params"]) else "—", _num(r["steps"], ".0f"),
                      _num(r["train_s"], ".1f"), _num(r["images_per_s"]) + (" ★" if r["pareto_speed"] else ""),
                      _num(r["peak_mib"], ".0f") + (" ★" if r["pareto_memory"] else ""),
                      f"{_num(r['heldout_mse_init'], '.4f')} → {_num(r['heldout_mse_final'], '.4f')}",
                      _num(r["mse"], ".4f"), _num(r["psnr_db"], ".2f"), _num(r["ssim"], ".3f"),
                      f"{_num(r['embed_spearman_init'], '.2f')} → {_num(r['embed_spearman'], '.2f')}", "", ""])
    header = ["case", "params", "steps", "train s", "images/s", "peak MiB", "held-out loss", "MSE", "PSNR dB", "SSIM",
              "ρ(dist, sim)", "", ""]
    md.append(md_table(header[:11], [line[:11] for line in lines]))
    peak_sources = rows["peak_source"].dropna().unique()
    if len(peak_sources):
        md += ["", f"Peak MiB: {', '.join(peak_sources)}."]
    md += ["", "### Pareto fronts (per size)", ""]
    ok = rows[rows["status"] == "ok"]
    for size, group in ok.groupby("size"):
        speed = ", ".join(group.loc[group["pareto_speed"], "case_id"]) or "—"
        memory = ", ".join(group.loc[group["pareto_memory"], "case_id"]) or "—"
        md += [f"- {size}, PSNR vs images/s: {speed}", f"- {size}, PSNR vs peak MiB: {memory}"]

    md += ["", "## The seed's Quality column, measured", "",
           "The seed (\"Speed Comparison (Relative to CNN)\") grades the CNN \"Good\" and the transformer presets \"Good\" "
           f"(tiny) or \"Better\" (small, medium, + Flash). Rule: \"Better\" holds when the transformer's held-out PSNR "
           f"exceeds the CNN's (same size, preset, latent, precision, batch and budget) by more than {noise:g} dB, the "
           f"run-to-run noise we allow; \"Good\" holds when it is not below the CNN's by more than {noise:g} dB. "
           "The attention kernel does not change what a model computes, so a preset row is judged whatever kernel ran. "
           "The verdict is for this budget: a longer budget can change it.", ""]
    fewest = ok["steps"].min() if len(ok) else None
    if fewest is not None and fewest < EARLY_STEPS:
        md += [f"**Early training:** the fewest optimizer steps any case took is {fewest:.0f} (< {EARLY_STEPS}); "
               "these verdicts describe the first steps of training, where a model's initialisation (and, for the CNN, "
               "BatchNorm running statistics that are still warming up) weighs more than its capacity. "
               "A longer budget is the fairer test of the claim.", ""]
    verdicts = seed_quality_verdicts(rows)
    vlines = [[v["configuration"], v["seed_quality"], v["size"], v.get("case", "—"), _num(v.get("psnr_db"), ".2f"),
               _num(v.get("cnn_psnr_db"), ".2f"), _num(v.get("delta_psnr_db"), "+.2f"), _num(v.get("ssim"), ".3f"),
               _num(v.get("cnn_ssim"), ".3f"), v["verdict"]] for v in verdicts.to_dict("records")]
    md.append(md_table(["seed row", "seed's Quality", "size", "transformer case", "PSNR dB", "CNN PSNR dB", "ΔPSNR dB",
                        "SSIM", "CNN SSIM", "verdict"], vlines))

    md += ["", "## Embeddings for the LSTM: do neighbouring crops get similar latents?", "",
           "A window of the case's size slides along the held-out band of up to 4 images (the roomiest, along the band's "
           "roomier axis, 12 positions each); ρ is Spearman's rank correlation between the distance of two windows (px) and "
           "the cosine similarity of their latents, averaged over images. Negative is good (nearer windows, more similar "
           "latents); 0 means the latent ignores position. Untrained = the same seeded model before any step.", ""]
    emb = embedding_table(rows)
    md.append(md_table(["family", "latent", "preset", "size", "ρ untrained", "ρ trained", "windows", "images"],
                       [[r["family"], _num(r["latent"], ".0f"), r["preset"], r["size"], _num(r["embed_spearman_init"], "+.2f"),
                         _num(r["embed_spearman"], "+.2f"), _num(r["embed_windows"], ".0f"), _num(r["embed_images"], ".0f")]
                        for r in emb.to_dict("records")]))
    md += ["", "## Figures", ""]
    for title, rel in figures:
        md += [f"### {title}", "", f"![{title}]({rel})", ""]
    md += ["## Method", "",
           "- Data: single-channel float32 in [0, 1] (colour via `rgb2gray`); no mean/std subtracted, so `data_range` is 1. "
           "Images smaller than a crop's bands are upscaled bilinearly by the smallest factor that fits (never downscaled); "
           "upscaled images are smoother, hence easier. Each image's bottom 25 % is held out, 8 rows between the bands are "
           "unused, and crops never cross a band: no held-out crop overlaps a training crop.",
           "- Training: AdamW on MSE, one learning rate for every family, seeded weights, crops and batch order. The "
           "training clock runs only around training steps; evaluations pause it.",
           "- Columns and units: `bench/quality/report.py` (`QUALITY_COLUMNS`). Files: quality.csv, quality_curves.csv, "
           "quality_strips.npz, quality_meta.json.", ""]
    return "\n".join(md)


def write_quality_report(run_dir: Path) -> Path:
    """Draw the figures and write ``quality.md`` from a quality run folder's files. Raises ValueError if it is not one."""
    from bench.quality import plots as qp

    run_dir = Path(run_dir)
    if not (run_dir / QUALITY_CSV).is_file():
        raise ValueError(f"{run_dir} is not a quality run folder: no {QUALITY_CSV} in it")
    rows = pd.read_csv(run_dir / QUALITY_CSV, dtype={"reason": object, "peak_source": object, "status": object})
    rows["reason"] = rows["reason"].where(rows["reason"].notna(), "")
    curves = pd.read_csv(run_dir / CURVES_CSV) if (run_dir / CURVES_CSV).is_file() else pd.DataFrame(
        columns=["case_id", "step", "train_s", "heldout_mse", "train_mse"])
    meta = json.loads((run_dir / META_JSON).read_text()) if (run_dir / META_JSON).is_file() else {}
    device = meta.get("device", {})
    provenance = f"measured on {device.get('name', '?')} ({device.get('type', '?')})"
    figures: list[tuple[str, str]] = []

    def save(name: str, title: str, png: Optional[bytes]) -> None:
        if png is not None:
            atomic_write_bytes(run_dir / name, png)
            figures.append((title, name))

    save("quality_loss.png", "Held-out loss against training time and steps", qp.loss_curves(rows, curves, provenance))
    save("quality_pareto.png", "PSNR against images/s and peak MiB", qp.pareto_figure(rows, provenance))
    if (run_dir / STRIPS_NPZ).is_file():
        with np.load(run_dir / STRIPS_NPZ) as strips:
            labels = {r["case_id"]: qp.case_label(r) for _, r in rows.iterrows()}
            for key in sorted(k for k in strips.files if k.startswith("original/")):
                size = key.split("/", 1)[1]
                recons = {labels.get(k.split("/", 2)[2], k.split("/", 2)[2]): strips[k] for k in strips.files
                          if k.startswith(f"recon/{size}/")}
                save(f"quality_strip_{size}.png", f"{size}: held-out crops and reconstructions",
                     qp.reconstruction_strip(size, strips[key], recons, provenance))
    path = run_dir / REPORT_MD
    atomic_write_text(path, build_quality_markdown(rows, meta, figures))
    return path
