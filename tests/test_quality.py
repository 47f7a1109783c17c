"""The quality scenario: real-image data and its split, the metrics, budgeted training, the report."""

import argparse
import hashlib
import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from skimage import io
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bench.core.cases import Case
from bench.quality.dataset import (
    MAX_UPSCALE, SKIMAGE_PHOTOS, PreparedImage, Rect, SourceImage, load_folder, load_skimage_photos, load_sources, make_split, required_scale,
    to_unit_gray,
)
from bench.trackers.device import device_facts
from bench.quality.embeddings import neighbour_similarity, spearman
from bench.quality.metrics import reconstruction_metrics
from bench.quality.command import add_quality_args, run_quality_command
from bench.quality.run import quality_cases, run_quality_case
from bench.quality.pareto import pareto_mask
from bench.core.steps import build_for
from bench.quality.defaults import DEFAULT_LR
from bench.quality.training import Budget, Schedule, heldout_mse, train_for_budget

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def photos():
    images, failed = load_skimage_photos(("camera", "coins", "moon", "astronaut", "text"))
    assert not failed, failed
    return images


def smooth_image(h, w, seed):
    """A smooth random grey image in [0, 1] (sums of a few sinusoids), ``(h, w)``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    image = sum(np.sin(2 * np.pi * (rng.uniform(0.5, 3) * x + rng.uniform(0.5, 3) * y) + rng.uniform(0, 6)) for _ in range(3))
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


@pytest.fixture
def image_folder(tmp_path):
    """Three PNGs: 8-bit grey, 8-bit RGB, 16-bit grey."""
    folder = tmp_path / "images"
    folder.mkdir()
    io.imsave(folder / "a_grey.png", (smooth_image(120, 160, 1) * 255).astype(np.uint8), check_contrast=False)
    io.imsave(folder / "b_rgb.png", (np.stack([smooth_image(100, 140, s) for s in (2, 3, 4)], -1) * 255).astype(np.uint8),
              check_contrast=False)
    io.imsave(folder / "c_grey16.png", (smooth_image(128, 128, 5) * 65535).astype(np.uint16), check_contrast=False)
    (folder / "notes.txt").write_text("not an image")
    return folder


# -- data ---------------------------------------------------------------------------------------

def test_bundled_photographs_load_offline():
    images, failed = load_skimage_photos()
    assert {im.name for im in images} == set(SKIMAGE_PHOTOS), failed
    for im in images:
        assert im.pixels.ndim == 2 and im.pixels.dtype == np.float32
        assert 0.0 <= im.pixels.min() and im.pixels.max() <= 1.0


@pytest.fixture(scope="module")
def all_sources():
    images, _, _ = load_sources()
    return images


def _crop_image_digests(dataset) -> set:
    """The content hash of the source image every crop of ``dataset`` was cut from, hashed here from its pixels."""
    return {hashlib.sha256(dataset.images[r.image].pixels.tobytes()).hexdigest() for r in dataset.rects}


@pytest.mark.parametrize("crop_hw", [(201, 201), (152, 1280), (152, 896)])
def test_no_source_image_gives_crops_to_both_splits(all_sources, crop_hw):
    split = make_split(all_sources, crop_hw, train_per_image=8, heldout_per_image=4, seed=3)
    train, heldout = _crop_image_digests(split.train), _crop_image_digests(split.heldout)
    assert train and heldout and not train & heldout
    assert {im.name for im in split.train_images}.isdisjoint(im.name for im in split.heldout_images)


def test_a_repeated_array_is_one_image_whatever_its_names():
    base = [SourceImage(f"img{i}", smooth_image(210, 220, i)) for i in range(6)]
    twins = base + [SourceImage(f"copy-of-{s.name}", s.pixels.copy()) for s in base]  # every array twice, other names
    split = make_split(twins, (201, 201), train_per_image=2, heldout_per_image=1)
    assert len(split.images) == 6 and set(split.dropped) == {f"copy-of-img{i}" for i in range(6)}
    assert not _crop_image_digests(split.train) & _crop_image_digests(split.heldout)


def test_cat_and_chelsea_are_one_array(all_sources):
    names = {s.name for s in all_sources}
    assert ("cat" in names) != ("chelsea" in names)
    digests = [s.digest for s in all_sources]
    assert len(digests) == len(set(digests))


def test_about_a_third_of_the_images_is_held_out_and_the_choice_ignores_names_and_order():
    sources = [SourceImage(f"img{i}", smooth_image(210, 220, i)) for i in range(9)]
    held = {im.digest for im in make_split(sources, (201, 201), 1, 1).heldout_images}
    renamed = [SourceImage(f"z{i}", s.pixels) for i, s in enumerate(reversed(sources))]
    assert len(held) == 3 and held == {im.digest for im in make_split(renamed, (201, 201), 1, 1).heldout_images}


def test_images_are_upscaled_by_at_most_two():
    needs_two = SourceImage("needs-2x", smooth_image(100, 200, 1))      # 201x201 crops: exactly 2.01x -> dropped
    fits = SourceImage("fits", smooth_image(101, 101, 2))               # 201/101 = 1.99x -> kept, upscaled
    others = [SourceImage(f"big{i}", smooth_image(240, 240, 10 + i)) for i in range(5)]
    split = make_split([needs_two, fits] + others, (201, 201), 1, 1)
    assert "needs-2x" in split.dropped and "2.01x" in split.dropped["needs-2x"]
    kept = {im.name: im for im in split.images}
    assert kept["fits"].scale == pytest.approx(201 / 101) and kept["fits"].pixels.shape[0] >= 201
    assert max(im.scale for im in split.images) <= MAX_UPSCALE == 2.0


def test_heldout_crops_are_spread_over_each_heldout_image():
    sources = [SourceImage(f"img{i}", smooth_image(300, 500, i)) for i in range(3)]
    split = make_split(sources, (100, 100), train_per_image=2, heldout_per_image=4)
    rects = split.heldout.rects
    assert len(rects) == 4 and len({(r.top, r.left) for r in rects}) == 4
    assert {r.top for r in rects} == {0, 200} and {r.left for r in rects} == {0, 400}  # corner to corner


def test_rect_overlap_is_shared_pixels():
    a = Rect(0, 10, 10, 5, 5)
    assert a.overlaps(Rect(0, 14, 14, 5, 5))       # one shared pixel
    assert not a.overlaps(Rect(0, 15, 10, 5, 5))   # touching edges share no pixel
    assert not a.overlaps(Rect(1, 10, 10, 5, 5))   # another image


def test_split_is_the_same_for_the_same_seed(photos):
    one, two = make_split(photos, (152, 256), seed=7), make_split(photos, (152, 256), seed=7)
    assert one.train.rects == two.train.rects and one.heldout.rects == two.heldout.rects
    assert make_split(photos, (152, 256), seed=8).train.rects != one.train.rects


def test_an_image_needing_too_much_upscaling_is_refused():
    tiny = SourceImage("tiny", smooth_image(40, 60, 0))
    assert required_scale((40, 60), (152, 1280)) > MAX_UPSCALE
    with pytest.raises(ValueError, match="large enough for 1280x152 crops"):
        make_split([tiny, SourceImage("tiny2", smooth_image(40, 60, 1))], (152, 1280))


def test_folder_loader_reads_grey_rgb_and_16_bit_pngs(image_folder):
    images = load_folder(image_folder)
    assert [im.name for im in images] == ["a_grey.png", "b_rgb.png", "c_grey16.png"]  # notes.txt ignored
    assert [im.pixels.shape for im in images] == [(120, 160), (100, 140), (128, 128)]
    for im in images:
        assert im.pixels.dtype == np.float32 and im.pixels.min() >= 0 and im.pixels.max() <= 1
    assert images[2].pixels.max() > 0.99  # 16-bit scaled by its dtype's range (65535), not clipped at 255
    split = make_split(images, (64, 64), train_per_image=4, heldout_per_image=1)
    assert split.train.stack().shape == (4 * len(split.train_images), 1, 64, 64)
    assert len(split.train_images) + len(split.heldout_images) == 3 and len(split.heldout_images) == 1


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_folder(tmp_path / "nowhere")


def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"has no images: expected files ending in \.png"):
        load_folder(tmp_path)


def test_unreadable_image_is_a_clear_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_folder(tmp_path)


def test_colour_and_alpha_become_one_channel():
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: composited on white
    assert np.allclose(to_unit_gray(rgba), 1.0)
    with pytest.raises(ValueError, match="expected a 2-D grey or an RGB/RGBA image"):
        to_unit_gray(np.zeros((2, 3, 4, 5)))


# -- metrics ------------------------------------------------------------------------------------

def test_identical_images_score_perfectly(photos):
    image = photos[0].pixels[:100, :120]
    m = reconstruction_metrics(image, image.copy())
    assert m.mse == 0.0 and m.psnr_db == math.inf and m.ssim == pytest.approx(1.0)


def test_psnr_of_a_known_noise_level():
    original = np.full((64, 64), 0.5)
    noise = np.where(np.indices((64, 64)).sum(0) % 2 == 0, 0.1, -0.1)  # MSE exactly 0.01
    m = reconstruction_metrics(original, original + noise)
    assert m.mse == pytest.approx(0.01)
    assert m.psnr_db == pytest.approx(10 * math.log10(1.0 / 0.01)) == pytest.approx(20.0)
    assert m.psnr_db == pytest.approx(peak_signal_noise_ratio(original, original + noise, data_range=1.0))
    assert m.ssim == pytest.approx(structural_similarity(original, original + noise, data_range=1.0))


def test_psnr_scales_with_the_data_range():
    original = np.zeros((16, 16))
    m = reconstruction_metrics(original, original + 2.0, data_range=255.0)
    assert m.psnr_db == pytest.approx(10 * math.log10(255.0**2 / 4.0))


# -- embeddings ---------------------------------------------------------------------------------

def test_spearman_matches_ranks_with_ties():
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    x, y = [1, 2, 2, 3, 5, 8], [2, 1, 4, 4, 9, 7]
    scipy_stats = pytest.importorskip("scipy.stats")
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)


class _AngleEmbedding(torch.nn.Module):
    """Embedding = (cos t, sin t) with t proportional to the window's mean: on a left-to-right ramp
    the angle between two windows' latents grows in proportion to their distance."""

    def Embedding(self, x):  # noqa: N802
        angle = x.double().mean(dim=(1, 2, 3)) * (math.pi / 2)
        return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def test_a_position_faithful_embedding_scores_minus_one():
    ramp = np.tile(np.linspace(0, 1, 400, dtype=np.float32), (200, 1))
    held_out = PreparedImage("ramp", ramp, 1.0, True, "ramp")  # a whole held-out image
    check = neighbour_similarity(_AngleEmbedding(), [held_out], (32, 32), CPU)
    assert check.spearman < -0.99  # -1 but for rounding among pairs at equal distances
    assert check.windows == 12


# -- training -----------------------------------------------------------------------------------

def test_budget_takes_steps_or_seconds_not_both():
    with pytest.raises(ValueError, match="exactly one"):
        Budget(steps=3, seconds=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        Budget()
    with pytest.raises(ValueError, match="bad time budget"):
        Budget(seconds=-1)


def test_two_seconds_of_training_train_for_two_seconds_and_change_the_model(photos):
    """The mechanics of a time budget; that training learns is tests/test_quality_learning.py's (in steps, no clock)."""
    split = make_split(photos, (64, 64), train_per_image=16, heldout_per_image=2, seed=0)
    torch.manual_seed(0)
    model = build_for(Case("transformer", "tiny", "64x64", attention="flash", mode="train"), CPU)
    heldout = split.heldout.stack()
    constant = Schedule(1e-3, warmup_steps=0, kind="constant")  # no warm-up: the first step is at the full rate
    result = train_for_budget(model, split.train, heldout, Budget(seconds=2.0), CPU, batch=8, seed=0, schedule=constant)
    assert result.steps >= 1 and result.train_s >= 2.0  # a busy machine may fit only a step or two
    assert result.curve[0].step == 0 and result.curve[-1].step == result.steps
    # one step moves the held-out loss by 12% here (0.875x; 2 steps 0.84x, then it oscillates at a constant rate)
    assert abs(result.curve[-1].heldout_mse / result.curve[0].heldout_mse - 1) > 0.01
    assert heldout_mse(model, heldout, CPU) == pytest.approx(result.curve[-1].heldout_mse)


def test_evaluation_time_is_not_training_time(photos):
    split = make_split(photos, (64, 64), train_per_image=8, heldout_per_image=2)
    model = build_for(Case("cnn", "tiny", "64x64", mode="train"), CPU)
    result = train_for_budget(model, split.train, split.heldout.stack(), Budget(steps=4, eval_every=1), CPU, batch=4)
    assert [p.step for p in result.curve] == [0, 1, 2, 3, 4]
    assert result.steps == 4 and result.images == 16 and result.eval_s > 0
    assert [p.train_s for p in result.curve] == sorted(p.train_s for p in result.curve)


# -- cases, report and command ------------------------------------------------------------------

def test_kernel_and_checkpointing_variants_are_one_quality_case():
    cases = [Case("transformer", "tiny", "201x201", attention=a, checkpointing=c, mode=m)
             for a in ("flash", "eager") for c in (False, True) for m in ("infer", "train")]
    assert len(quality_cases(cases)) == 1


def test_pareto_front_keeps_undominated_cases():
    speed = pd.Series([10.0, 20.0, 5.0, 20.0])
    psnr = pd.Series([25.0, 22.0, 24.0, 21.0])
    assert pareto_mask(speed, psnr, maximise=True).tolist() == [True, True, False, False]
    assert pareto_mask(pd.Series([100.0, 50.0, 80.0]), pd.Series([25.0, 20.0, 19.0]), maximise=False).tolist() == [True, True, False]


SMALL_MATRIX = """description = "a 64x64 quality matrix for tests"
[[group]]
families = ["transformer", "cnn"]
presets = ["tiny"]
sizes = ["64x64"]
latents = [128]
precisions = ["fp32"]
attention = ["flash"]
modes = ["train"]
batch = [8]
"""


@pytest.fixture
def small_matrix(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL_MATRIX)
    return str(path)


def test_quality_command_writes_table_plots_and_report(image_folder, tmp_path, small_matrix):
    parser = argparse.ArgumentParser()
    add_quality_args(parser)
    out = tmp_path / "run"
    args = parser.parse_args(["--matrix", small_matrix, "--families", "transformer", "--presets", "tiny", "--sizes", "64x64", "--latents", "128",
                              "--batch", "8", "--device", "cpu", "--budget-steps", "3", "--images", str(image_folder),
                              "--seeds", "0,1", "--out", str(out)])
    assert run_quality_command(args) == 0
    rows = pd.read_csv(out / "quality.csv")
    assert rows["status"].tolist() == ["ok", "ok"] and rows["steps"].tolist() == [3, 3] and rows["seed"].tolist() == [0, 1]
    per_image = pd.read_csv(out / "quality_images.csv")
    mine = per_image[per_image["predictor"] == rows["case_id"].iloc[0]]
    assert sorted(mine["seed"].unique()) == [0, 1] and mine["image"].nunique() == rows["n_heldout_images"].iloc[0] == 1
    assert per_image["predictor"].str.startswith("baseline:crop_mean:64x64:").any()
    assert rows["psnr_db"].notna().all() and rows["peak_mib"].gt(0).all()
    for name in ("quality.md", "quality_curves.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in ("quality_loss.png", "quality_pareto.png", "quality_strip_64x64.png"):  # opened, not only found
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (name, image.shape)
        assert image[..., :3].std() > 0.01, f"{name} is blank"  # something was drawn on it
    curves = pd.read_csv(out / "quality_curves.csv")
    assert sorted(curves["seed"].unique()) == [0, 1] and curves["step"].max() == 3 and curves["heldout_mse"].notna().all()
    report = (out / "quality.md").read_text()
    assert "The seed's Quality column, measured" in report and "Pareto" in report and "Did the models learn?" in report
    for column in ("psnr_db", "baseline_crop_mean_db", "baseline_latent_db", "margin_crop_mean_db", "learned"):
        assert rows[column].notna().all(), column
    assert rows["margin_crop_mean_db"].iloc[0] == pytest.approx(rows["psnr_db"].iloc[0] - rows["baseline_crop_mean_db"].iloc[0])
    verdicts = pd.read_csv(out / "quality_verdicts.csv")
    assert list(verdicts.columns[:4]) == ["claim", "size", "verdict", "reason"]
    assert set(verdicts["verdict"]) <= {"holds", "does not hold", "not shown", "not judged"}


def test_quality_command_trains_for_the_default_step_budget_when_given_none(image_folder, tmp_path, monkeypatch, small_matrix):
    from bench.quality import command

    monkeypatch.setattr(command, "DEFAULT_STEPS", 2)
    parser = argparse.ArgumentParser()
    add_quality_args(parser)
    out = tmp_path / "run"
    args = parser.parse_args(["--matrix", small_matrix, "--families", "cnn", "--presets", "tiny", "--sizes", "64x64", "--latents", "128", "--batch", "8",
                              "--device", "cpu", "--images", str(image_folder), "--out", str(out)])
    assert run_quality_command(args) == 0
    rows = pd.read_csv(out / "quality.csv")
    assert rows["steps"].tolist() == [2] * 3 and rows["budget_steps"].tolist() == [2] * 3 and rows["budget_seconds"].isna().all()
    assert rows["seed"].tolist() == [0, 1, 2]  # three seeds unless told otherwise


@pytest.mark.parametrize("option, value, message", [("--lr", "0", "bad learning rate 0.0"),
                                                    ("--warmup-steps", "-1", "bad warm-up -1")])
def test_a_bad_recipe_is_a_one_line_error(tmp_path, option, value, message):
    parser = argparse.ArgumentParser()
    add_quality_args(parser)
    args = parser.parse_args(["--presets", "tiny", "--out", str(tmp_path / "x"), option, value])
    with pytest.raises(ValueError, match=message):
        run_quality_command(args)


def test_the_schedule_warms_up_linearly_then_decays_by_cosine_to_its_floor():
    s = Schedule(1e-3, warmup_steps=10, kind="cosine", min_ratio=0.1)
    assert s.lr_at(0, 0.0) == pytest.approx(1e-4) and s.lr_at(9, 0.0) == pytest.approx(1e-3)
    assert s.lr_at(50, 0.5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert s.lr_at(99, 1.0) == pytest.approx(1e-4)
    assert s.lr_at(3, 0.0, budget_steps=10) == pytest.approx(1e-3)  # warm-up capped at a fifth of a 10-step budget
    assert Schedule(1e-3, 0, "constant").lr_at(7, 0.9) == 1e-3


def test_a_time_budget_decays_the_rate_over_its_seconds(clocked):
    result = clocked(Budget(seconds=4.0, eval_every=1))
    assert result.steps == 4
    # steps start at 0, 1, 2, 3 s of a 4 s budget: the last one at 3/4 of the cosine (50-step warm-up: 4/50 of the rate)
    assert result.last_lr == pytest.approx(DEFAULT_LR * (4 / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.75))))


def test_a_failing_case_becomes_an_error_row(photos):
    split = make_split(photos, (64, 64), train_per_image=2, heldout_per_image=1)
    case = Case("transformer", "tiny", "64x64", attention="flash", mode="train")
    bad = run_quality_case(case, split, Budget(steps=1), CPU, device_facts(CPU), lr=float("nan"))
    assert bad.row["status"] == "error" and "bad learning rate nan" in bad.row["reason"]
    assert bad.row["case_id"] == "transformer-tiny-64x64-fp32-flash-b8" and bad.row["timestamp"]


class _Clock:
    """A stand-in for ``time`` in bench.quality.training: a training step costs 1 s, an evaluation 100 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clocked(monkeypatch, photos):
    """train_for_budget with a fake clock: every step takes exactly 1 s and every evaluation 100 s."""
    from bench.quality import training

    clock = _Clock()

    def step(model, x, optimizer, scaler, precision, device):
        clock.now += 1.0
        return torch.tensor(0.5)

    def evaluate(model, images, device, precision="fp32", batch=8):
        clock.now += 100.0
        return 0.25

    monkeypatch.setattr(training, "time", clock)
    monkeypatch.setattr(training, "train_step", step)
    monkeypatch.setattr(training, "heldout_mse", evaluate)
    split = make_split(photos, (64, 64), train_per_image=4, heldout_per_image=1)
    model = build_for(Case("cnn", "tiny", "64x64", mode="train"), CPU)

    def run(budget: Budget):
        return training.train_for_budget(model, split.train, split.heldout.stack(), budget, CPU, batch=2)

    return run


def test_evaluations_are_on_the_evaluation_clock_and_never_on_the_training_clock(clocked):
    """Four 1 s steps and five 100 s evaluations: exactly 4 s of training, whatever the evaluations cost."""
    result = clocked(Budget(steps=4, eval_every=1))
    assert result.train_s == pytest.approx(4.0)
    assert result.eval_s == pytest.approx(500.0)
    assert [p.train_s for p in result.curve] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert result.images_per_s == pytest.approx(result.images / 4.0)


def test_a_time_budget_is_spent_on_training_however_long_evaluations_take(clocked):
    """3 s of training with a 100 s evaluation after every step: three steps, as with no evaluation at all."""
    result = clocked(Budget(seconds=3.0, eval_every=1))
    assert result.steps == 3 and result.train_s == pytest.approx(3.0)
    assert [p.step for p in result.curve] == [0, 1, 2, 3]


# -- selection and provenance -------------------------------------------------------------------------

def _listed(capsys, *argv):
    parser = argparse.ArgumentParser()
    add_quality_args(parser)
    assert run_quality_command(parser.parse_args(["--list", "--device", "cpu", *argv])) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith(("transformer-", "cnn-"))]


def test_sizes_and_latents_narrow_the_matrix_and_never_add_cases(capsys):
    whole = _listed(capsys)
    wide = _listed(capsys, "--sizes", "1280x152")
    assert wide == [c for c in whole if "-1280x152-" in c] and all("-z128-" in c and c.endswith("-b4") for c in wide)
    big = _listed(capsys, "--latents", "1024")
    assert big == [c for c in whole if "-z1024-" in c] and all("-201x201-" in c for c in big)


def test_a_size_the_matrix_does_not_have_is_a_one_line_error():
    parser = argparse.ArgumentParser()
    add_quality_args(parser)
    with pytest.raises(ValueError, match=r"--sizes: 640x152 is not in matrix 'quality' \(it has: 201x201, 1280x152\)"):
        run_quality_command(parser.parse_args(["--list", "--device", "cpu", "--sizes", "640x152"]))


@pytest.mark.parametrize("porcelain, dirty, text", [(" M bench/x.py\n", True, "commit abc1234 + uncommitted changes"),
                                                    ("", False, "commit abc1234")])
def test_provenance_says_when_the_code_differs_from_its_commit(monkeypatch, porcelain, dirty, text):
    import subprocess

    from bench.runs import provenance

    def fake_run(cmd, **kwargs):
        out = "abc1234\n" if "rev-parse" in cmd else porcelain
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(provenance.subprocess, "run", fake_run)
    state = provenance.source_state()
    assert state == {"commit": "abc1234", "dirty": dirty} and provenance.source_text(state) == text
