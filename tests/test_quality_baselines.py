"""The trivial predictors of the quality report, on cases whose answer is known, and the verdicts they gate."""

import math

import numpy as np
import pandas as pd
import pytest

from bench.quality.baselines import (
    LEARNED_MARGIN_DB, PCA, BaselineCache, baseline_scores, crop_mean_predictor, downsample_predictor, grid_for_numbers,
)
from bench.quality.report import NOT_LEARNED, VERDICT_COLUMNS, seed_quality_verdicts, verdicts_table
from bench.quality.run import baseline_columns


def test_the_crop_mean_predictor_is_exact_on_a_constant_image():
    images = np.stack([np.full((20, 30), 0.3), np.full((20, 30), 0.8)]).astype(np.float32)
    scores = baseline_scores(images, latent=4, train_mean=0.5, pca=None)
    assert scores.crop_mean.mse == 0.0 and scores.crop_mean.psnr_db == math.inf
    # the one-number-for-the-data-set predictor is not: both crops are 0.2 or 0.3 from 0.5
    assert scores.train_mean.mse == pytest.approx((0.2**2 + 0.3**2) / 2)
    assert scores.downsample.mse < 1e-12  # a constant image survives any downsampling (up to float32 rounding)


def test_the_crop_mean_predictor_predicts_each_crops_own_mean():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (3, 8, 9)).astype(np.float32)
    predicted = crop_mean_predictor(images)
    for image, guess in zip(images, predicted):
        assert np.allclose(guess, image.mean())


def test_downsampling_to_as_many_numbers_as_pixels_is_exact():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (2, 6, 10)).astype(np.float32)
    assert np.allclose(downsample_predictor(images, 60), images, atol=1e-6)
    assert not np.allclose(downsample_predictor(images, 15), images, atol=0.05)


@pytest.mark.parametrize("hw, numbers, grid", [
    ((201, 201), 128, (11, 11)), ((152, 1280), 128, (4, 32)), ((152, 1280), 8192, (32, 256)), ((4, 4), 100, (4, 4)),
])
def test_the_downsample_grid_keeps_the_aspect_within_the_count(hw, numbers, grid):
    assert grid_for_numbers(hw, numbers) == grid
    assert grid[0] * grid[1] <= numbers


def test_a_bad_grid_request_is_a_one_line_error():
    with pytest.raises(ValueError, match="bad grid request: 0 numbers"):
        grid_for_numbers((10, 10), 0)


def test_pca_reconstructs_images_from_its_own_subspace_exactly():
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(3, 12 * 12))
    train = (0.5 + 0.05 * rng.normal(size=(40, 3)) @ basis).reshape(40, 12, 12).astype(np.float32)
    heldout = (0.5 + 0.05 * rng.normal(size=(5, 3)) @ basis).reshape(5, 12, 12).astype(np.float32)
    assert np.abs(heldout - 0.5).max() < 0.5  # inside [0, 1]: the clip changes nothing
    pca = PCA.fit(train, 3)
    assert pca.components.shape == (3, 144)
    assert np.allclose(pca.components @ pca.components.T, np.eye(3), atol=1e-4)
    assert np.abs(pca.reconstruct(heldout) - heldout).max() < 1e-4
    assert np.abs(PCA.fit(train, 1).reconstruct(heldout) - heldout).max() > 1e-3  # one component is not enough


def test_pca_components_are_capped_by_the_images_fitted_on():
    rng = np.random.default_rng(3)
    assert PCA.fit(rng.uniform(0, 1, (5, 4, 4)).astype(np.float32), 128).components.shape[0] == 4


def test_the_cache_computes_the_training_mean_over_every_training_crop():
    rng = np.random.default_rng(4)
    train = [rng.uniform(0, 1, (1, 8, 8)).astype(np.float32) for _ in range(7)]
    heldout = np.full((2, 8, 8), 0.25, np.float32)
    scores = BaselineCache(pca_max_crops=4).get(train, heldout, 16)
    mean = float(np.mean(train))
    assert scores.train_mean.mse == pytest.approx((mean - 0.25) ** 2, rel=1e-5)
    assert scores.pca_components == 3  # fitted on 4 of the 7 crops


def test_a_model_within_one_db_of_the_crop_mean_did_not_learn():
    scores = baseline_scores(np.random.default_rng(5).uniform(0, 1, (2, 16, 16)).astype(np.float32), 16, 0.5, None)
    crop_mean = scores.crop_mean.psnr_db
    assert not baseline_columns(scores, crop_mean + LEARNED_MARGIN_DB - 0.01)["learned"]
    columns = baseline_columns(scores, crop_mean + LEARNED_MARGIN_DB)
    assert columns["learned"] and columns["margin_crop_mean_db"] == pytest.approx(LEARNED_MARGIN_DB)
    assert columns["margin_latent_db"] == pytest.approx(crop_mean + LEARNED_MARGIN_DB - scores.latent_best.psnr_db)


def _row(family, psnr, learned, preset="tiny"):
    return {"family": family, "preset": preset, "size": "201x201", "latent": 128, "precision": "fp32", "batch": 8,
            "psnr_db": psnr, "ssim": 0.5, "status": "ok", "case_id": f"{family}-{preset}", "baseline_crop_mean_db": 19.8,
            "learned": learned}


@pytest.mark.parametrize("transformer_learned, cnn_learned", [(False, True), (True, False), (False, False)])
def test_a_pair_with_a_model_that_did_not_learn_is_not_judged(transformer_learned, cnn_learned):
    rows = pd.DataFrame([_row("cnn", 22.0 if cnn_learned else 20.0, cnn_learned),
                         _row("transformer", 22.1 if transformer_learned else 20.1, transformer_learned)])
    line = seed_quality_verdicts(rows).query("configuration == 'Transformer (tiny)'").iloc[0]
    assert line["verdict"] == "not judged" and line["reason"].startswith(NOT_LEARNED)


def test_without_per_image_figures_no_pair_is_judged():
    rows = pd.DataFrame([_row("cnn", 22.0, True), _row("transformer", 23.0, True)])  # one seed, no quality_images.csv
    table = verdicts_table(seed_quality_verdicts(rows))
    assert list(table.columns) == VERDICT_COLUMNS and VERDICT_COLUMNS[:4] == ["claim", "size", "verdict", "reason"]
    line = table[table["claim"].str.startswith("Transformer (tiny)")].iloc[0]
    assert line["verdict"] == "not judged" and "per-image" in line["reason"]
    assert set(table["verdict"]) == {"not judged"}
