"""The quality scenario: train a case on real images for a budget, then score it on held-out crops.

For each case: build the model (seeded), embed sliding windows once untrained, train with AdamW on
MSE for the budget (steps or seconds, warm-up and cosine decay; :mod:`bench.quality.training`) while
the held-out loss is followed, then reconstruct every held-out crop and score it with scikit-image's
MSE, PSNR and SSIM (reconstructions clipped to the images' [0, 1] range first: a display cannot show
values outside it, and clipping only lowers the error) next to the trivial predictors of
:mod:`bench.quality.baselines` on the same crops (a model that does not beat each crop's own mean by
``LEARNED_MARGIN_DB`` is ``learned = False``), embed the windows again, and measure the peak memory of two
training steps apart from the training clock: the CUDA allocator's peak in-process, or on a CPU the
peak RSS of a fresh process (see :func:`peak_cpu_memory`).

Axes that do not change the function a model computes (attention kernel, checkpointing, compile,
mode) are collapsed: one quality case per family, preset, size, latent, tokenizer, precision and
batch. Command: ``python -m bench quality [matrix options] --budget-steps N | --budget-seconds S``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from bench.core import precision as prec
from bench.core.cases import Case
from bench.quality.dataset import Split, load_sources, make_split
from bench.trackers.device import DeviceFacts
from bench.quality.embeddings import neighbour_similarity
from bench.quality.metrics import batch_metrics, mean_metrics
from bench.core.runner import CaseRun, run_case
from bench.quality.report import empty_quality_row
from bench.trackers.memory import memory_pass
from bench.runs.provenance import utc_now
from bench.core.steps import build_for, train_step
from bench.quality.defaults import DEFAULT_LR
from bench.quality.baselines import (
    LEARNED_MARGIN_DB, BaselineCache, BaselineScores, crop_mean_predictor, downsample_predictor,
)
from bench.quality.training import EVAL_BATCH, Budget, CurvePoint, Schedule, train_for_budget

CURVE_CROPS = 12      # held-out crops the loss curve is evaluated on (all of them are scored at the end)
STRIP_CROPS = 3       # held-out crops shown as original / reconstruction in the report
TRAIN_PER_IMAGE = 64  # training crops drawn per image
HELDOUT_PER_IMAGE = 4  # spread over each held-out image (bench.quality.dataset.sample_rects)


def quality_key(case: Case) -> tuple:
    """What decides a model's reconstructions: the axes that change the function it computes."""
    return (case.family, case.preset, case.size, case.latent, case.tokenizer, case.precision, case.batch)


def quality_case_id(case: Case) -> str:
    """The case's id without the mode (always training here): ``transformer-tiny-201x201-fp32-flash-b8``."""
    return case.id.replace(f"-{case.mode}-b{case.batch}", f"-b{case.batch}")


def quality_cases(cases: list[Case]) -> list[Case]:
    """One training case per :func:`quality_key`, in matrix order; skipped cases keep their reason."""
    seen: dict[tuple, Case] = {}
    for case in cases:
        key = quality_key(case)
        if key not in seen or (seen[key].skip and not case.skip):
            seen[key] = dataclasses.replace(case, mode="train", compile="off", checkpointing=False, skip=case.skip)
    return list(seen.values())


class QualityData:
    """Source images loaded once, and one :class:`~bench.quality.dataset.Split` per crop size, made on first use."""

    def __init__(self, images_dir: Optional[Path] = None, seed: int = 0, train_per_image: int = TRAIN_PER_IMAGE,
                 heldout_per_image: int = HELDOUT_PER_IMAGE) -> None:
        self.sources, self.unavailable, self.description = load_sources(images_dir)
        self.seed = seed
        self.train_per_image = train_per_image
        self.heldout_per_image = heldout_per_image
        self._splits: dict[tuple[int, int], Split] = {}

    def split(self, hw: tuple[int, int]) -> Split:
        """The split for crops of ``hw`` ``(H, W)``."""
        if hw not in self._splits:
            self._splits[hw] = make_split(self.sources, hw, self.train_per_image, self.heldout_per_image, self.seed)
        return self._splits[hw]

    def describe(self) -> dict:
        return {"source": self.description, "unavailable": self.unavailable, "seed": self.seed,
                "splits": {f"{w}x{h}": s.describe() for (h, w), s in self._splits.items()},
                "dropped": {f"{w}x{h}": s.dropped for (h, w), s in self._splits.items() if s.dropped},
                "normalisation": "pixels in [0, 1] (no mean/std subtracted); metrics with data_range=1",
                "train_mean_std": {f"{w}x{h}": [round(s.mean, 4), round(s.std, 4)] for (h, w), s in self._splits.items()}}


@dataclass
class QualityResult:
    row: dict
    curve: list[CurvePoint]
    originals: Optional[np.ndarray] = None        # (STRIP_CROPS, H, W) held-out crops
    reconstructions: Optional[np.ndarray] = None  # (STRIP_CROPS, H, W), clipped to [0, 1]
    baseline_strips: dict = dataclasses.field(default_factory=dict)  # label -> (STRIP_CROPS, H, W) of a baseline
    image_mse: dict = dataclasses.field(default_factory=dict)  # held-out image -> the model's MSE pooled over its crops
    baseline_image_mse: dict = dataclasses.field(default_factory=dict)  # "crop_mean"/"latent" -> {image: MSE}


def per_image_mse(crop_mse: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per-crop MSEs ``(N,)`` pooled per source image (``names[i]`` is crop i's image): ``{image: MSE}``,
    in the order the images first appear. Crops of one image get one figure: they are not independent."""
    crop_mse = np.asarray(crop_mse, dtype=np.float64)
    return {name: float(crop_mse[[i for i, n in enumerate(names) if n == name]].mean()) for name in dict.fromkeys(names)}


def pooled_db(image_mse: dict[str, float]) -> float:
    """PSNR (dB, data range 1) of the MSE pooled over images (each image weighs the same)."""
    mean = float(np.mean(list(image_mse.values())))
    return math.inf if mean == 0 else -10.0 * math.log10(mean)


def image_mean_db(image_mse: dict[str, float]) -> float:
    """The mean over images of each image's own PSNR (dB): shown beside the pooled figure."""
    return float(np.mean([math.inf if v == 0 else -10.0 * math.log10(v) for v in image_mse.values()]))


def effective_latent(model: torch.nn.Module, latent: int) -> int:
    """How many numbers the latent can carry: a linear map into it from a narrower vector (``to_latent``
    of ``in_features < latent``) spans at most ``in_features`` dimensions, whatever ``latent`` says."""
    to_latent = getattr(model, "to_latent", None)
    width = getattr(to_latent, "in_features", None) if isinstance(to_latent, torch.nn.Linear) else None
    return int(min(latent, width)) if width else int(latent)


def split_baselines(split: Split, latent: int) -> BaselineScores:
    """The baselines of ``split``'s held-out crops for ``latent`` values, computed once per split and latent."""
    if split.baseline_cache is None:
        split.baseline_cache = BaselineCache()
    return split.baseline_cache.get(split.train, split.heldout.stack()[:, 0].numpy(), latent)


def baseline_image_mse(base: BaselineScores, names: list[str]) -> dict[str, dict[str, float]]:
    """Every baseline pooled per held-out image, ``{name: {image: MSE}}`` (``names[i]``: crop i's image),
    plus ``"latent"``: the better of downsample and PCA by the pooled MSE."""
    out = {name: per_image_mse(mse, names) for name, mse in (base.crop_mse or {}).items()}
    latent = [k for k in ("downsample", "pca") if k in out]
    if latent:
        out["latent"] = out[min(latent, key=lambda k: (np.mean(list(out[k].values())), k))]
    return out


def baseline_columns(base: BaselineScores, psnr_db: float, names: Optional[list[str]] = None) -> dict:
    """The row's baseline columns and the model's margins over them (dB). With ``names`` (each held-out
    crop's image) every baseline is the PSNR of its MSE pooled per image, like the model's ``psnr_db``;
    without, the mean of per-crop PSNRs."""
    pooled = {k: pooled_db(v) for k, v in baseline_image_mse(base, names).items()} if names else {}
    per_crop = {"train_mean": base.train_mean.psnr_db, "crop_mean": base.crop_mean.psnr_db,
                "downsample": base.downsample.psnr_db, "pca": base.pca.psnr_db if base.pca is not None else None,
                "latent": base.latent_best.psnr_db}
    db = {k: pooled.get(k, v) for k, v in per_crop.items()}
    kind = base.latent_name
    if "latent" in pooled:
        kind = "pca" if db["pca"] is not None and db["pca"] > db["downsample"] else "downsample"
    margin = psnr_db - db["crop_mean"]
    bh, bw = base.downsample_grid
    return {"baseline_train_mean_db": db["train_mean"], "baseline_crop_mean_db": db["crop_mean"],
            "baseline_crop_mean_ssim": base.crop_mean.ssim, "baseline_downsample_db": db["downsample"],
            "baseline_downsample_grid": f"{bw}x{bh}", "baseline_pca_db": db["pca"],
            "baseline_pca_components": base.pca_components,
            "baseline_latent_db": db["latent"], "baseline_latent_kind": kind,
            "margin_crop_mean_db": margin, "margin_latent_db": psnr_db - db["latent"],
            "learned": bool(margin >= LEARNED_MARGIN_DB)}


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()})


@torch.no_grad()
def reconstruct(model: torch.nn.Module, images: torch.Tensor, device: torch.device, precision: str) -> np.ndarray:
    """Reconstructions of ``images`` ``(N, 1, H, W)`` in eval mode, clipped to [0, 1], as ``(N, H, W)`` float32."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], EVAL_BATCH):
        x = images[start:start + EVAL_BATCH].to(device=device, dtype=prec.weight_dtype(precision))
        with prec.autocast(precision, device):
            recon, _ = model(x)
        out.append(recon.float().clamp(0.0, 1.0)[:, 0].cpu().numpy())
    model.train()
    return np.concatenate(out)


def base_quality_row(case: Case, facts: DeviceFacts, run_id: str, budget: Budget, seed: int,
                     schedule: Optional[Schedule] = None) -> dict:
    row = empty_quality_row()
    row.update(run_id=run_id, case_id=quality_case_id(case), case_key=case.key,
               family=case.family, preset=case.preset, size=case.size, latent=case.latent, tokenizer=case.tokenizer,
               precision=case.precision, attention=case.attention, batch=case.batch,
               budget_steps=budget.steps, budget_seconds=budget.seconds, seed=seed,
               lr=schedule.lr if schedule else None, warmup_steps=schedule.warmup_steps if schedule else None,
               schedule=schedule.kind if schedule else None, learned=False,
               device=facts.type, device_name=facts.name, torch=torch.__version__, threads=torch.get_num_threads())
    return row


def run_quality_case(case: Case, split: Split, budget: Budget, device: torch.device, facts: DeviceFacts, run_id: str = "",
                     seed: int = 0, lr: float = DEFAULT_LR,
                     on_point: Optional[Callable[[CurvePoint], None]] = None,
                     schedule: Optional[Schedule] = None) -> QualityResult:
    """Train ``case`` on ``split`` for ``budget`` and score it; never raises for a failing case (the row says).

    ``schedule``: the learning rate over the budget (default: warm-up and cosine decay from ``lr``).
    """
    row = base_quality_row(case, facts, run_id, budget, seed, schedule)
    row["lr"] = lr if schedule is None else schedule.lr
    row.update(n_train_crops=len(split.train), n_heldout_crops=len(split.heldout))
    result = QualityResult(row, [])

    def body(run: CaseRun) -> None:
        recipe = schedule if schedule is not None else Schedule(lr)  # a bad rate is this case's error row
        _train_and_score(run.build(seed), case, split, budget, device, seed, recipe, on_point, result)

    outcome = run_case(case, device, body)
    row.update(status=outcome.status, timestamp=utc_now())
    if not outcome.ok:
        row["reason"] = outcome.reason
    return result


def _train_and_score(model: torch.nn.Module, case: Case, split: Split, budget: Budget, device: torch.device, seed: int,
                     schedule: Schedule, on_point: Optional[Callable[[CurvePoint], None]], result: QualityResult) -> None:
    """The phases of one built case, each filling its columns of ``result.row``."""
    row = result.row
    row["params"] = sum(p.numel() for p in model.parameters())
    cfg = getattr(model, "config", None)
    row["latent"] = getattr(cfg, "latent_dim", case.latent) if cfg is not None else case.latent
    row["effective_latent"] = effective_latent(model, int(row["latent"]))
    heldout = split.heldout.stack()  # (N, 1, H, W)
    curve_images = heldout[spread(len(heldout), CURVE_CROPS)]
    curve_np = curve_images[:, 0].numpy()
    row["baseline_crop_mean_curve_mse"] = float(np.mean((crop_mean_predictor(curve_np) - curve_np) ** 2))
    before = neighbour_similarity(model, split.heldout_images, split.crop_hw, device, case.precision)

    trained = train_for_budget(model, split.train, curve_images, budget, device, case.batch, case.precision, schedule.lr,
                               seed, on_point=on_point, schedule=schedule)
    result.curve = trained.curve
    row.update(lr=schedule.lr, warmup_steps=schedule.warmup_steps, schedule=schedule.kind)
    row.update(steps=trained.steps, train_s=trained.train_s, eval_s=trained.eval_s, images_per_s=trained.images_per_s,
               heldout_mse_init=trained.curve[0].heldout_mse, heldout_mse_final=trained.curve[-1].heldout_mse,
               lr_final=trained.last_lr)

    recon = reconstruct(model, heldout, device, case.precision)
    crops = batch_metrics(heldout[:, 0].numpy(), recon)
    scores = mean_metrics(crops)
    names = split.heldout.image_names
    result.image_mse = per_image_mse(np.array([m.mse for m in crops]), names)
    row.update(mse=float(np.mean(list(result.image_mse.values()))), psnr_db=pooled_db(result.image_mse),
               psnr_image_db=image_mean_db(result.image_mse), psnr_crop_db=scores.psnr_db, ssim=scores.ssim,
               n_train_images=len(split.train_images), n_heldout_images=len(split.heldout_images))
    base = split_baselines(split, int(row["effective_latent"]))  # what as many numbers as the latent carries buy
    result.baseline_image_mse = baseline_image_mse(base, names)
    row.update(baseline_columns(base, row["psnr_db"], names))
    shown = spread(len(heldout), STRIP_CROPS)
    result.originals, result.reconstructions = heldout[shown, 0].numpy(), recon[shown]
    result.baseline_strips = {"crop mean": crop_mean_predictor(result.originals),
                              f"downsample z{int(row['effective_latent'])}":
                                  downsample_predictor(result.originals, int(row["effective_latent"]))}

    after = neighbour_similarity(model, split.heldout_images, split.crop_hw, device, case.precision)
    row.update(embed_spearman_init=before.spearman, embed_spearman=after.spearman, embed_windows=after.windows,
               embed_images=len(after.per_image))

    if device.type == "cuda":
        mem = memory_pass(trained.step, device, iters=2)
        row.update(peak_mib=mem.alloc_peak_mib, peak_source="torch.cuda.max_memory_allocated")
    else:
        row.update(peak_cpu_memory(case, seed))


def _child_peak_rss(case: Case, seed: int, threads: int, steps: int) -> tuple[float, float]:
    """In this (fresh) process: RSS before the model is built and peak RSS over ``steps`` training steps (MiB)."""
    from bench.trackers.nvml import rss_mib

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    base = rss_mib() or 0.0
    model = build_for(case, torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=DEFAULT_LR)
    cpu = torch.device("cpu")
    x = torch.rand(case.batch, 1, *case.hw, dtype=prec.weight_dtype(case.precision))  # pixels in [0, 1], like the crops
    for _ in range(steps):
        train_step(model, x, optimizer, None, case.precision, cpu)
    return base, _vm_hwm_mib()


def _vm_hwm_mib() -> float:
    """This process's peak RSS (``VmHWM``, MiB). Not ``ru_maxrss``: Linux carries that over from the
    parent across fork and exec, so a child started by a big parent would report the parent's size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise OSError("no VmHWM in /proc/self/status (not Linux?)")


def _child_main() -> None:
    """Entry of the memory child: a case as JSON in argv[1]; prints ``{"base": MiB, "peak": MiB}``."""
    import json

    spec = json.loads(sys.argv[1])
    base, peak = _child_peak_rss(Case(**spec["case"]), spec["seed"], spec["threads"], spec["steps"])
    print(json.dumps({"base": base, "peak": peak}))


def peak_cpu_memory(case: Case, seed: int = 0, steps: int = 2, timeout_s: float = 600.0) -> dict:
    """Peak RSS of training ``case`` on the CPU, measured in a fresh process.

    In-process RSS cannot compare cases: memory a previous case freed stays resident and the next
    case reuses it, so the figure would depend on the order of the cases. A child process runs
    ``steps`` training steps on random images of the case's size and batch and reports its
    high-water mark (``VmHWM``), which includes Python and torch (``rss_base_mib``). Linux only;
    elsewhere the figure is left empty and the row says why.
    """
    import json
    import subprocess

    spec = {"case": case.fields(), "seed": seed, "threads": torch.get_num_threads(), "steps": steps}
    try:
        out = subprocess.run([sys.executable, "-c", "from bench.quality.run import _child_main; _child_main()", json.dumps(spec)],
                             capture_output=True, text=True, timeout=timeout_s, check=False)
        if out.returncode != 0:
            tail = " ".join((out.stderr or "").split())[-200:]
            raise RuntimeError(f"memory child exited with {out.returncode}: {tail}")
        figures = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, RuntimeError, ValueError, IndexError) as err:
        # a lost memory figure must not lose the quality row
        return {"peak_mib": None, "peak_source": f"not measured: {type(err).__name__}: {err}"[:240]}
    return {"peak_mib": figures["peak"], "rss_base_mib": figures["base"],
            "peak_source": f"peak RSS of a fresh process running {steps} training steps (includes Python and torch)"}
