"""The downstream check's files: ``downstream.csv`` (one row per family and latent), ``curves.csv``
(every LSTM and autoencoder curve point), ``downstream.md`` and ``curves.png``. Each names the command
that made it."""

from __future__ import annotations

import csv
import io
import math
import textwrap
from dataclasses import asdict, fields
from pathlib import Path
from typing import Sequence

from bench.runs.files import atomic_write_bytes, atomic_write_text
from bench.runs.markdown import markdown_table
from bench.runs.provenance import source_text
from bench.downstream.downstream import DownstreamResult

SKIP = ("curve", "ae_curve", "window")


def result_columns() -> list[str]:
    return ["size"] + [f.name for f in fields(DownstreamResult) if f.name not in SKIP] + ["verdict"]


def result_row(r: DownstreamResult) -> dict:
    row = {k: v for k, v in asdict(r).items() if k not in SKIP}  # asdict leaves out the verdict property
    row.update(size=f"{r.window[1]}x{r.window[0]}", verdict=r.verdict)
    return {k: row[k] for k in result_columns()}


def _csv(header: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(header))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buf.getvalue()


def curve_rows(results: Sequence[DownstreamResult]) -> list[dict]:
    out = []
    for r in results:
        for p in r.curve:
            out.append(dict(family=r.family, latent=r.latent, curve="lstm", step=p.step, train_mse=p.train_mse,
                            heldout_mse=p.heldout_mse, repeat_mse=r.repeat_mse))
        for i, loss in enumerate(r.ae_curve, 1):
            out.append(dict(family=r.family, latent=r.latent, curve="autoencoder", step=i, train_mse=loss,
                            heldout_mse=math.nan, repeat_mse=math.nan))
    return out


def _f(value: float, fmt: str = ".3f") -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def curves_png(results: Sequence[DownstreamResult], provenance: str) -> bytes:
    """One panel per family and latent: the LSTM's training loss and held-out MSE by step, repeat-last and
    mean-embedding held-out MSE as lines (standardised embedding units, log scale)."""
    from matplotlib.figure import Figure

    n = len(results)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6.0 * cols, 4.2 * rows), layout="constrained")  # no panel's labels over another's title
    for i, r in enumerate(results):
        ax = fig.add_subplot(rows, cols, i + 1)
        steps = [p.step for p in r.curve]
        ax.plot(steps[1:], [p.train_mse for p in r.curve[1:]], "o-", label="LSTM training loss (mean since last point)")
        ax.plot(steps, [p.heldout_mse for p in r.curve], "s-", label="LSTM held-out MSE")
        ax.axhline(r.repeat_mse, color="black", linestyle="--", label=f"repeat-last, held-out ({r.repeat_mse:.3f})")
        ax.axhline(r.ridge_mse, color="tab:green", linestyle="-.", label=f"ridge one-step, held-out ({r.ridge_mse:.3f})")
        ax.axhline(r.mean_mse, color="grey", linestyle=":", label=f"mean embedding, held-out ({r.mean_mse:.3f})")
        ax.scatter([1], [r.lstm_loss_start], marker="x", color="red", zorder=5, label=f"first training batch ({r.lstm_loss_start:.3f})")
        ax.set_yscale("log")
        ax.set_xlabel("LSTM training step")
        ax.set_ylabel("MSE (standardised embedding units)")
        ax.set_title(f"{r.family} {r.preset}, latent {r.latent} (first seed): {r.verdict}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("\n".join(textwrap.wrap(provenance, 150)), fontsize=7)  # a long command wraps instead of running off the edge
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def step_warning(results: Sequence[DownstreamResult]) -> str:
    """A warning when the autoencoders compared trained different numbers of steps ("" when they did not)."""
    steps = sorted({r.ae_steps for r in results} | {r.ae_steps_max for r in results})
    if len(steps) <= 1:
        return ""
    return (f"**Warning: the autoencoders trained different numbers of steps** ({', '.join(map(str, steps))}) under a "
            "time budget: their rows compare different amounts of training. Use `--ae-steps`.")


def _budget(meta: dict) -> str:
    return (f"{meta['ae_steps']} optimizer steps" if meta.get("ae_steps") else f"{meta.get('ae_seconds', '?'):g} s of training clock")


def markdown(results: Sequence[DownstreamResult], meta: dict) -> str:
    r0 = results[0]
    h, w = r0.window
    seeds = ", ".join(map(str, meta.get("seeds", [])))
    out = [f"# Downstream check: do the embeddings serve the LSTM? ({meta['created']})", "",
           f"Command: `{meta['command']}`", "",
           f"Machine: {meta['device']}, torch {meta['torch']}, {source_text(meta)}; {meta['seconds']:.0f} s in all.", "",
           f"Data: {meta['data']}. Whole images held out (one in three by pixel hash), each resized by at most 2x so a strip "
           f"of {r0.context + 1} windows fits; not used: {meta['dropped'] or 'none'}. Training images: "
           f"{meta.get('train_images', '?')}. Held-out images: {meta.get('heldout_images', '?')}. Windows {w}x{h} every "
           f"{r0.step_px} px along full-width rows (consecutive windows overlap by {1 - r0.step_px / w:.0%}).", "",
           f"Each autoencoder trains for {_budget(meta)} on {w}x{h} crops of the training images (reconstruction MSE, AdamW "
           "1e-3, batch 8), then is frozen. Every window is embedded through `SequencePipeline.encode`; embeddings are "
           "standardised per dimension with the training rows' mean and std. "
           f"An `LSTMModel` (2 layers, hidden 256, head to the latent) reads {r0.context} windows and predicts the next at "
           f"every position (teacher forcing), AdamW 1e-3, batch 32 sequences, {r0.lstm_steps} steps. Baselines on the same "
           "sequences: repeat-last (window t predicts t+1) and a ridge one-step linear predictor fitted on the training "
           "sequences (its penalty chosen on a quarter of the training images). Seeds: "
           f"{seeds} (each seed: its own rows, weights and batches). MSEs are in standardised embedding units (predicting "
           "the mean scores about 1), averaged per held-out image, then over images and seeds.", "",
           "**Verdict**: LSTM - the better baseline, with a 95% interval from resampling held-out images (the same draw for "
           "every seed) and the seed spread (the range of the per-seed differences). A side \"beats\" the other only when "
           "the interval excludes 0 and the difference exceeds the seed spread; otherwise \"no difference shown\".", ""]
    warning = step_warning(results)
    if warning:
        out += [warning, ""]
    out += ["## Result (embedding space)", ""]
    header = ["family", "latent", "AE steps", "AE held-out pixel MSE (before -> after)", "LSTM loss: first batch -> last 10%",
              "held-out images (sequences)", "seeds", "LSTM MSE", "repeat-last MSE", "ridge MSE", "mean MSE",
              "best baseline", "LSTM - baseline [95% over images]", "seed spread", "verdict"]
    rows = [[r.family, r.latent, r.ae_steps if r.ae_steps == r.ae_steps_max else f"{r.ae_steps}-{r.ae_steps_max}",
             f"{_f(r.ae_heldout_mse_start, '.4f')} -> {_f(r.ae_heldout_mse, '.4f')}",
             f"{_f(r.lstm_loss_start)} -> {_f(r.lstm_loss_end)}", f"{r.images} ({r.heldout_sequences})", r.seeds,
             _f(r.lstm_mse), _f(r.repeat_mse), _f(r.ridge_mse), _f(r.mean_mse), r.baseline,
             f"{_f(r.diff, '+.3f')} [{_f(r.diff_low, '+.3f')}, {_f(r.diff_high, '+.3f')}]", _f(r.seed_spread),
             r.verdict] for r in results]
    out += [markdown_table(header, rows), "",
            "### In pixels (the same units for both families)", "",
            "The last position of up to 64 held-out sequences per seed, each embedding decoded by the autoencoder's own "
            "decoder and compared with the true next window (pixels in [0, 1], mean over seeds): the LSTM's prediction, "
            "the ridge prediction, the last embedding (repeat-last), and the true next embedding (what the decoder can do "
            "at best). No interval: these are the embedding-space verdict's figures seen through the decoder.", ""]
    header = ["family", "latent", "decoded LSTM prediction", "decoded ridge prediction", "decoded last embedding",
              "decoded true next embedding (floor)"]
    rows = [[r.family, r.latent, _f(r.pixel_lstm_mse, ".4f"), _f(r.pixel_ridge_mse, ".4f"), _f(r.pixel_repeat_mse, ".4f"),
             _f(r.pixel_floor_mse, ".4f")] for r in results]
    out += [markdown_table(header, rows), "", "![LSTM curves](curves.png)", "",
            "Curves (first seed): `curves.csv` (the LSTM's training loss and held-out MSE by step; the autoencoder's "
            "training loss every step). Rows: `downstream.csv`.", ""]
    return "\n".join(out)


def write_outputs(out_dir: Path, results: Sequence[DownstreamResult], meta: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "downstream.csv", _csv(result_columns(), [result_row(r) for r in results]))
    curves = curve_rows(results)
    atomic_write_text(out_dir / "curves.csv", _csv(list(curves[0]) if curves else ["family"], curves))
    atomic_write_bytes(out_dir / "curves.png", curves_png(results, f"{meta['command']} ({meta['device']}, {meta['created']})"))
    md = out_dir / "downstream.md"
    atomic_write_text(md, markdown(results, meta))
    return md
