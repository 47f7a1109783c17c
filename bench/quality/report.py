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

from bench.quality.baselines import LEARNED_MARGIN_DB
from bench.quality.columns import QUALITY_COLUMNS  # noqa: F401 - the columns of quality.csv, re-exported
from bench.quality.pareto import with_pareto
from bench.quality.verdicts import (  # noqa: F401 - re-exported: the report's verdicts live there
    NOT_LEARNED, VERDICT_COLUMNS, _learned, _missing, case_margins, load_quality_claims, seed_quality_verdicts, step_mismatch,
    verdicts_table,
)
from bench.runs.contract import QUALITY_MD, QUALITY_META, QUALITY_VERDICTS
from bench.runs.files import atomic_write_bytes, atomic_write_text
from bench.runs.markdown import markdown_table as md_table
from bench.runs.provenance import source_text

QUALITY_CSV, CURVES_CSV, STRIPS_NPZ, IMAGES_CSV = "quality.csv", "quality_curves.csv", "quality_strips.npz", "quality_images.csv"
IMAGE_COLUMNS = ["predictor", "size", "seed", "image", "mse"]  # quality_images.csv: one MSE per predictor, seed and held-out image

EARLY_STEPS = 100  # below this many steps a verdict is flagged as about early training

def baseline_predictor(name: str, size: str, latent: Any) -> str:
    """The ``predictor`` of a baseline in quality_images.csv: ``baseline:crop_mean:201x201:128``."""
    return f"baseline:{name}:{size}:{int(float(latent)) if not _missing(latent) else 0}"


def empty_quality_row() -> dict[str, Any]:
    return {c: None for c in QUALITY_COLUMNS} | {"reason": "", "status": ""}


def to_8bit(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 grey levels (what a PNG holds)."""
    return (np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def from_8bit(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


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
        self.image_rows: list[dict] = []
        self._write_meta()

    def set_data(self, description: dict) -> None:
        self.meta["data"] = description
        self._write_meta()

    def _write_meta(self) -> None:
        atomic_write_text(self.run_dir / QUALITY_META, json.dumps(self.meta, indent=2, default=str) + "\n")

    def add(self, result) -> None:
        """Append a :class:`bench.quality.run.QualityResult` and rewrite the run's files."""
        row = result.row
        self.rows.append(row)
        self.image_rows += [{"predictor": row["case_id"], "size": row["size"], "seed": row["seed"], "image": image, "mse": mse}
                            for image, mse in getattr(result, "image_mse", {}).items()]
        known = {r["predictor"] for r in self.image_rows}
        for name, per_image in getattr(result, "baseline_image_mse", {}).items():
            predictor = baseline_predictor(name, row["size"], row.get("effective_latent") or row["latent"])
            if predictor not in known:  # a baseline has no seed: one set of figures per size and width
                self.image_rows += [{"predictor": predictor, "size": row["size"], "seed": -1, "image": image, "mse": mse}
                                    for image, mse in per_image.items()]
        atomic_write_text(self.run_dir / IMAGES_CSV, pd.DataFrame(self.image_rows, columns=IMAGE_COLUMNS).to_csv(index=False))
        self.curves += [{"case_id": row["case_id"], "seed": row["seed"], "step": p.step, "train_s": p.train_s, "heldout_mse": p.heldout_mse,
                         "train_mse": p.train_mse} for p in result.curve]
        if result.originals is not None:  # 8-bit grey levels: the strips are for the eye, and 8 bits keep the file small
            self.strips.setdefault(f"original/{row['size']}", to_8bit(result.originals))
            self.strips.setdefault(f"recon/{row['size']}/{row['case_id']}", to_8bit(result.reconstructions))  # first seed
            for label, images in getattr(result, "baseline_strips", {}).items():
                self.strips.setdefault(f"baseline/{row['size']}/{label}", to_8bit(images))
        atomic_write_text(self.csv_path, pd.DataFrame(self.rows, columns=list(QUALITY_COLUMNS)).to_csv(index=False))
        atomic_write_text(self.run_dir / CURVES_CSV, pd.DataFrame(
            self.curves, columns=["case_id", "seed", "step", "train_s", "heldout_mse", "train_mse"]).to_csv(index=False))
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.strips)
        atomic_write_bytes(self.run_dir / STRIPS_NPZ, buf.getvalue())

    def finish(self) -> Path:
        return write_quality_report(self.run_dir)


# -- analysis ---------------------------------------------------------------------------------------

def embedding_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Spearman(distance, similarity) per family, latent, preset and size: untrained and trained."""
    ok = rows[rows["status"] == "ok"]
    return ok[["family", "latent", "preset", "size", "embed_spearman_init", "embed_spearman", "embed_windows", "embed_images"]] \
        .sort_values(["family", "latent", "size"]).reset_index(drop=True)


# -- formatting --------------------------------------------------------------------------------------

def _num(v: Any, fmt: str = ".3g") -> str:
    if _missing(v):
        return "—"
    v = float(v)
    if math.isinf(v):
        return "∞"
    return f"{v:,.0f}" if abs(v) >= 1000 else format(v, fmt)


def summary_lines(rows: list[dict]) -> list[str]:
    """The console table: one line per case."""
    head = (f"{'case':<48} {'seed':>4} {'steps':>6} {'img/s':>8} {'peak MiB':>9} {'PSNR dB':>8} {'vs mean':>8} {'vs latent':>9} "
            f"{'SSIM':>6} {'rho':>6}  status")
    lines = [head, "-" * len(head)]
    for r in rows:
        status = r["status"] if r["status"] != "ok" or r.get("learned") else "ok, not learned"
        lines.append(f"{r['case_id']:<48} {_num(r['seed'], '.0f'):>4} {_num(r['steps'], '.0f'):>6} {_num(r['images_per_s']):>8} {_num(r['peak_mib'], '.0f'):>9} "
                     f"{_num(r['psnr_db'], '.2f'):>8} {_num(r.get('margin_crop_mean_db'), '+.2f'):>8} "
                     f"{_num(r.get('margin_latent_db'), '+.2f'):>9} {_num(r['ssim'], '.3f'):>6} {_num(r['embed_spearman'], '.2f'):>6}  {status}")
    return lines


def _budget_text(meta: dict) -> str:
    budget = meta.get("budget", {})
    if budget.get("steps"):
        return f"{budget['steps']} optimizer steps per case"
    if budget.get("seconds"):
        return f"{budget['seconds']:g} s of training clock per case (evaluations excluded)"
    return "unknown budget"


def _threads(rows: pd.DataFrame) -> str:
    values = sorted({int(v) for v in rows.get("threads", pd.Series(dtype=float)).dropna()})
    return ", ".join(map(str, values)) or "?"


def build_quality_markdown(rows: pd.DataFrame, meta: dict, figures: list[tuple[str, str]],
                           images: Optional[pd.DataFrame] = None) -> str:
    """quality.md: the results table, Pareto fronts, the seed's Quality column judged, embeddings, figures, method
    (one function per section, in the page's order)."""
    rows = with_pareto(rows)
    md = (_quality_heading(rows, meta) + _did_the_models_learn(rows, images) + _quality_next_to_speed(rows)
          + _seed_quality_column(rows, images) + _embeddings_for_the_lstm(rows) + _figures_section(figures)
          + _method_section(meta))
    return "\n".join(md)


def _quality_heading(rows: pd.DataFrame, meta: dict) -> list[str]:
    """The page's heading: where, when, which code and command, the budget and the data."""
    device = meta.get("device", {})
    provenance = f"measured on {device.get('name', '?')} ({device.get('type', '?')})"
    data = meta.get("data", {})
    md = ["# Reconstruction quality on real images", "",
          f"{provenance}, torch {device.get('torch', '?')}, {meta.get('created', '')}, {source_text(meta)}.  ",
          f"Command: `{meta.get('command', '?')}`  ",
          f"Budget: {_budget_text(meta)}, {meta.get('schedule') or 'AdamW lr ' + str(meta.get('lr', '?'))}, "
          f"training seeds {', '.join(map(str, meta.get('seeds', []))) or '?'} (crop seed {data.get('seed', '?')}), torch threads {_threads(rows)}.  ",
          f"Data: {data.get('source', '?')}.", ""]
    for text in data.get("splits", {}).values():
        md.append(f"- {text}")
    if data.get("unavailable"):
        md.append("- not loaded: " + "; ".join(f"{k} ({v})" for k, v in data["unavailable"].items()))
    for size, dropped in data.get("dropped", {}).items():
        md.append(f"- not used at {size}: " + "; ".join(f"{k}: {v}" for k, v in dropped.items()))
    return md


def _did_the_models_learn(rows: pd.DataFrame, images: Optional[pd.DataFrame]) -> list[str]:
    """Did the models learn? Held-out PSNR against the trivial predictors, per case with intervals."""
    md = ["", "## Did the models learn? Held-out PSNR against trivial predictors", "",
          "Every model is scored on the same held-out crops as four predictors that learn nothing (`bench/quality/baselines.py`): "
          "**train mean** (every pixel = the training crops' mean), **crop mean** (every pixel = that crop's own mean: one number "
          "per crop), **downsample** (the crop area-averaged onto at most `latent` cells with its aspect, bilinear back) and "
          "**PCA** (the first `latent` principal components of up to 512 training crops). The **latent** baseline is the better "
          "of the last two: what a latent of that size buys with no training. Each is computed at the case's *effective* "
          "latent (a linear map into a latent of 1024 from 128 values carries at most 128 numbers), and every dB here is "
          "the PSNR of the MSE pooled over held-out images. "
          f"A model is **learned** when it beats the crop mean by at least {LEARNED_MARGIN_DB:g} dB; the others are reported "
          "but never compared.", ""]
    ok_rows = rows[rows["status"] == "ok"]
    if "baseline_crop_mean_db" in ok_rows and ok_rows["baseline_crop_mean_db"].notna().any():
        width = "effective_latent" if "effective_latent" in ok_rows and ok_rows["effective_latent"].notna().all() else "latent"
        base = ok_rows.drop_duplicates(["size", width]).sort_values(["size", width])
        md.append(md_table(["size", "numbers (effective latent)", "train mean dB", "crop mean dB", "downsample dB (grid)", "PCA dB (components)",
                            "latent baseline dB"],
                           [[r["size"], _num(r[width], ".0f"), _num(r["baseline_train_mean_db"], ".2f"),
                             _num(r["baseline_crop_mean_db"], ".2f"),
                             f"{_num(r['baseline_downsample_db'], '.2f')} ({r['baseline_downsample_grid']})",
                             f"{_num(r['baseline_pca_db'], '.2f')} ({_num(r['baseline_pca_components'], '.0f')})",
                             f"{_num(r['baseline_latent_db'], '.2f')} ({r['baseline_latent_kind']})"]
                            for _, r in base.iterrows()]))
        md.append("")
    md += ["Per case over its seeds: **PSNR** is the headline, the PSNR of the MSE pooled over held-out images (each image's "
           "crops averaged first), the mean over seeds with the seed-to-seed range; **per-image PSNR** is the mean of each "
           "image's own PSNR, beside it. Each margin over a baseline (latent baselines at the case's *effective* latent, the "
           "numbers its latent can carry) has a 95% interval from resampling held-out images and is called better or worse "
           "only when the interval excludes 0 and the margin exceeds the seed spread; otherwise \"not shown\".", ""]
    margins = case_margins(rows, images)

    def margin_cell(d) -> str:
        return "—" if d is None else f"{d.estimate:+.2f} [{d.low:+.2f}, {d.high:+.2f}] ±{d.seed_spread:.2f}"
    md.append(md_table(["case", "latent (effective)", "seeds", "steps", "images", "PSNR dB (seed range)", "per-image PSNR dB",
                        "SSIM", "vs crop mean dB [95%] ±seed spread", "shown", "vs latent baseline dB [95%] ±seed spread",
                        "shown"],
                       [[m["case_id"], f"{_num(m['latent'], '.0f')} ({_num(m['effective_latent'], '.0f')})", m["seeds"],
                         m["steps"], _num(m["images"], ".0f"), f"{_num(m['psnr_db'], '.2f')} ({_num(m['psnr_seed_range_db'], '.2f')})",
                         _num(m["psnr_image_db"], ".2f"), _num(m["ssim"], ".3f"), margin_cell(m["vs_crop_mean"]),
                         m["vs_crop_mean_shown"], margin_cell(m["vs_latent"]), m["vs_latent_shown"]]
                        for m in margins.to_dict("records")]))
    for line in step_mismatch(rows):
        md += ["", f"**Warning: different step counts.** {line}: their comparison mixes training lengths."]
    return md


def _quality_next_to_speed(rows: pd.DataFrame) -> list[str]:
    """Quality next to speed and memory, and the Pareto fronts per size."""
    md = ["", "## Quality next to speed and memory", "",
          "PSNR, SSIM and MSE over every held-out crop (reconstruction clipped to [0, 1], `data_range=1`); the held-out "
          "loss is the training objective (unclipped MSE) on the curve's crops, untrained → after the budget. "
          "Images/s is training throughput during the budget; peak MiB as the column says. "
          "★ marks the Pareto front within a size (no other case has both higher PSNR and higher images/s, or lower MiB).", ""]
    lines = []
    for _, r in rows.iterrows():
        label = f"{r['case_id']} s{_num(r['seed'], '.0f')}"
        if r["status"] != "ok":
            lines.append([label, r["status"], r["reason"]] + [""] * 10)
            continue
        lines.append([label, _num(r["params"], ",.0f") if not _missing(r["params"]) else "—", _num(r["steps"], ".0f"),
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

    return md


def _seed_quality_column(rows: pd.DataFrame, images: Optional[pd.DataFrame]) -> list[str]:
    """The seed's Quality column, measured: each preset row judged against the CNN."""
    md = ["", "## The seed's Quality column, measured", "",
          "The seed (\"Speed Comparison (Relative to CNN)\") grades the CNN \"Good\" and the transformer presets \"Good\" "
          "(tiny) or \"Better\" (small, medium, + Flash). A transformer case is paired with the CNN case of the same size, "
          "preset, latent, precision, batch and budget, over the seeds both trained. ΔPSNR is transformer - CNN on the pooled "
          "MSE, averaged over seeds, with a 95% interval from resampling held-out images and the seed spread (the range of "
          "the per-seed ΔPSNR). \"Better\" holds when the interval lies above 0 and ΔPSNR exceeds the seed spread, and does "
          "not hold when the same is shown the other way; \"Good\" (not worse than the CNN) cannot be shown by an interval "
          "that includes 0: it holds only when the transformer is shown better and does not hold when shown worse. Anything "
          "else is \"not shown\", with the numbers. The attention kernel does not change what a model computes, so a "
          f"preset row is judged whatever kernel ran. Only models that learned (≥ {LEARNED_MARGIN_DB:g} dB over the crop "
          "mean, mean over seeds) are compared. The verdict is for this budget: a longer budget can change it. "
          f"Machine-readable: `{QUALITY_VERDICTS}`.", ""]
    ok = rows[rows["status"] == "ok"]
    fewest = ok["steps"].min() if len(ok) else None
    if fewest is not None and fewest < EARLY_STEPS:
        md += [f"**Early training:** the fewest optimizer steps any case took is {fewest:.0f} (< {EARLY_STEPS}); "
               "these verdicts describe the first steps of training, where a model's initialisation (and, for the CNN, "
               "BatchNorm running statistics that are still warming up) weighs more than its capacity. "
               "A longer budget is the fairer test of the claim.", ""]
    verdicts = seed_quality_verdicts(rows, images=images)
    vlines = [[v["configuration"], v["seed_quality"], v["size"], v.get("case", "—"), _num(v.get("psnr_db"), ".2f"),
               _num(v.get("cnn_psnr_db"), ".2f"), _num(v.get("delta_psnr_db"), "+.2f"),
               f"[{_num(v.get('interval_low_db'), '+.2f')}, {_num(v.get('interval_high_db'), '+.2f')}]",
               _num(v.get("seed_spread_db"), ".2f"), _num(v.get("seeds"), ".0f"), _num(v.get("images"), ".0f"),
               v["verdict"], v.get("reason", "")] for v in verdicts.to_dict("records")]
    md.append(md_table(["seed row", "seed's Quality", "size", "transformer case", "PSNR dB", "CNN PSNR dB", "ΔPSNR dB",
                        "95% over images", "seed spread dB", "seeds", "held-out images", "verdict", "why"], vlines))

    return md


def _embeddings_for_the_lstm(rows: pd.DataFrame) -> list[str]:
    """Embeddings for the LSTM: do neighbouring crops get similar latents?"""
    md = ["", "## Embeddings for the LSTM: do neighbouring crops get similar latents?", "",
          "A window of the case's size slides along the held-out band of up to 4 images (the roomiest, along the band's "
          "roomier axis, 12 positions each); ρ is Spearman's rank correlation between the distance of two windows (px) and "
          "the cosine similarity of their latents, averaged over images. Negative is good (nearer windows, more similar "
          "latents); 0 means the latent ignores position. Untrained = the same seeded model before any step.", ""]
    emb = embedding_table(rows)
    md.append(md_table(["family", "latent", "preset", "size", "ρ untrained", "ρ trained", "windows", "images"],
                       [[r["family"], _num(r["latent"], ".0f"), r["preset"], r["size"], _num(r["embed_spearman_init"], "+.2f"),
                         _num(r["embed_spearman"], "+.2f"), _num(r["embed_windows"], ".0f"), _num(r["embed_images"], ".0f")]
                        for r in emb.to_dict("records")]))
    return md


def _figures_section(figures: list[tuple[str, str]]) -> list[str]:
    """The figures, each under its title."""
    md = ["", "## Figures", ""]
    for title, rel in figures:
        md += [f"### {title}", "", f"![{title}]({rel})", ""]
    return md


def _method_section(meta: dict) -> list[str]:
    """Method: the data, the training, the columns and files."""
    md = ["## Method", "",
          "- Data: single-channel float32 in [0, 1] (colour via `rgb2gray`); no mean/std subtracted, so `data_range` is 1. "
          "Repeated arrays are removed by their pixels (not names). Whole images are held out (one in three, chosen by "
          "pixel hash): no held-out image gives a training crop. Images smaller than a crop are upscaled bilinearly by "
          "the smallest factor that fits, at most 2x (never downscaled); an image needing more is not used at that size.",
          f"- Training: {meta.get('schedule', 'AdamW')} on MSE, the same recipe for every family, seeded weights, crops "
          "and batch order. The training clock runs only around training steps; evaluations pause it.",
          "- Columns and units: `bench/quality/report.py` (`QUALITY_COLUMNS`). Files: quality.csv (a row per case and "
          "seed), quality_images.csv (every predictor's MSE per held-out image and seed: the intervals' input), "
          "quality_verdicts.csv, quality_curves.csv, quality_strips.npz (8-bit strips), quality_meta.json.", ""]
    return md


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
    meta = json.loads((run_dir / QUALITY_META).read_text()) if (run_dir / QUALITY_META).is_file() else {}
    device = meta.get("device", {})
    provenance = f"measured on {device.get('name', '?')} ({device.get('type', '?')})"
    figures: list[tuple[str, str]] = []

    def save(name: str, title: str, png: Optional[bytes]) -> None:
        if png is not None:
            atomic_write_bytes(run_dir / name, png)
            figures.append((title, name))

    first = rows.drop_duplicates("case_id")  # the figures show each case's first seed; the tables every seed
    if "seed" in curves and "seed" in first:
        keys = set(zip(first["case_id"], first["seed"]))
        curves = curves[[k in keys for k in zip(curves["case_id"], curves["seed"])]]
    save("quality_loss.png", "Held-out loss against training time and steps (first seed)", qp.loss_curves(first, curves, provenance))
    save("quality_pareto.png", "PSNR against images/s and peak MiB (first seed)", qp.pareto_figure(first, provenance))
    if (run_dir / STRIPS_NPZ).is_file():
        with np.load(run_dir / STRIPS_NPZ) as strips:
            labels = {r["case_id"]: qp.case_label(r) for _, r in rows.iterrows()}
            margins = {r["case_id"]: r.get("margin_crop_mean_db") for _, r in rows.iterrows()}

            def learned_mark(case_id: str) -> str:
                m = margins.get(case_id)
                return "" if _missing(m) else f"\n{float(m):+.1f} dB vs crop mean"
            for key in sorted(k for k in strips.files if k.startswith("original/")):
                size = key.split("/", 1)[1]
                recons = {f"{k.split('/', 2)[2]} (baseline)": from_8bit(strips[k]) for k in strips.files
                          if k.startswith(f"baseline/{size}/")}
                recons.update({labels.get(k.split("/", 2)[2], k.split("/", 2)[2]) + learned_mark(k.split("/", 2)[2]):
                               from_8bit(strips[k]) for k in strips.files if k.startswith(f"recon/{size}/")})
                save(f"quality_strip_{size}.png", f"{size}: held-out crops, baselines and reconstructions",
                     qp.reconstruction_strip(size, from_8bit(strips[key]), recons, provenance))
    images = pd.read_csv(run_dir / IMAGES_CSV) if (run_dir / IMAGES_CSV).is_file() else None
    atomic_write_text(run_dir / QUALITY_VERDICTS, verdicts_table(seed_quality_verdicts(rows, images=images)).to_csv(index=False))
    path = run_dir / QUALITY_MD
    atomic_write_text(path, build_quality_markdown(rows, meta, figures, images))
    return path
