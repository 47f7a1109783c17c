"""The pipeline frames -> Embedding -> LSTM: the models (ae_models/sequence.py), the sequence modes of a
sweep (bench/core), their plan rows, and the downstream check (bench/downstream)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ae_models import build_model
from ae_models.sequence import LSTMModel, SequencePipeline, frame_windows
from bench.core.cases import Case, expand, parse_matrix
from bench.core.measure import Settings, measure_case
from bench.runs.schema import check_row
from bench.trackers.device import device_facts

CPU = torch.device("cpu")
HW = (32, 64)  # (H, W): small frames keep every test fast
FAST = Settings(warmup=1, min_iters=3, max_iters=5, min_time_s=0.0, memory_iters=1)


def pipeline(family: str, latent: int = 128, freeze: bool = True, hidden: int = 32) -> SequencePipeline:
    ae = build_model(family, "tiny", HW, latent_dim=latent)
    return SequencePipeline(ae, LSTMModel(LSTMEmbdSize=latent, hidden_size=hidden, num_layers=2), freeze_encoder=freeze)


# -- the models ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["transformer", "cnn"])
@pytest.mark.parametrize("seq_len", [1, 32])
@pytest.mark.parametrize("latent", [128, 8192])
def test_the_pipeline_gives_one_prediction_per_frame(family, seq_len, latent):
    p = pipeline(family, latent)
    frames = torch.rand(2, seq_len, 1, *HW)
    assert tuple(p.encode(frames).shape) == (2, seq_len, latent)
    out = p(frames)
    assert tuple(out.shape) == (2, seq_len, latent)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["transformer", "cnn"])
def test_each_frame_is_embedded_as_it_would_be_on_its_own(family):
    p = pipeline(family).eval()
    frames = torch.rand(2, 3, 1, *HW)
    z = p.encode(frames)
    with torch.no_grad():
        alone = torch.stack([torch.stack([p.autoencoder.Embedding(frames[b, t][None])[0] for t in range(3)]) for b in range(2)])
    torch.testing.assert_close(z, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["transformer", "cnn"])
def test_a_frozen_encoder_gets_no_gradient_and_the_lstm_does(family):
    p = pipeline(family, freeze=True).train()
    p(torch.rand(2, 4, 1, *HW)).square().mean().backward()
    assert all(q.grad is None and not q.requires_grad for q in p.autoencoder.parameters())
    assert all(q.grad is not None for q in p.lstm.parameters())
    assert any(float(q.grad.abs().sum()) > 0 for q in p.lstm.parameters())


@pytest.mark.parametrize("family", ["transformer", "cnn"])
def test_a_finetuned_encoder_trains_with_the_lstm(family):
    p = pipeline(family, freeze=False).train()
    p(torch.rand(2, 4, 1, *HW)).square().mean().backward()
    grads = [q.grad for q in p.autoencoder.encoder.parameters()]
    assert grads and all(g is not None for g in grads)


def test_a_frozen_cnn_keeps_its_batchnorm_statistics_while_the_lstm_trains():
    p = pipeline("cnn", freeze=True).train()
    bn = next(m for m in p.autoencoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    p(torch.rand(2, 4, 1, *HW))
    assert not p.autoencoder.training and p.lstm.training
    assert torch.equal(bn.running_mean, before)
    p.set_freeze_encoder(False)
    assert p.autoencoder.training  # fine-tuned: it trains, BatchNorm included


@pytest.mark.parametrize("shape", [(2, 1, *HW), (1, *HW), (2, 3, 1, 1, *HW)])
def test_a_wrong_input_rank_is_a_value_error_naming_the_expected_shape(shape):
    with pytest.raises(ValueError, match=r"\(B, T, 1, H, W\)"):
        pipeline("cnn")(torch.rand(*shape))


def test_a_wrong_channel_count_is_a_value_error():
    with pytest.raises(ValueError, match="1 channel"):
        pipeline("transformer")(torch.rand(2, 3, 3, *HW))


def test_an_lstm_of_another_embedding_size_is_refused():
    ae = build_model("cnn", "tiny", HW, latent_dim=256)
    with pytest.raises(ValueError, match="LSTMEmbdSize=256"):
        SequencePipeline(ae, LSTMModel(LSTMEmbdSize=128))


def test_the_lstm_takes_the_seeds_spelling_batched_and_unbatched():
    lstm = LSTMModel(LSTMEmbdSize=128, hidden_size=64, num_layers=1)
    assert tuple(lstm(torch.rand(2, 5, 128)).shape) == (2, 5, 128)
    assert tuple(lstm(torch.rand(5, 128)).shape) == (5, 128)  # one sequence, as nn.LSTM takes it
    assert tuple(LSTMModel(LSTMEmbdSize=128, output_size=3)(torch.rand(2, 5, 128)).shape) == (2, 5, 3)
    with pytest.raises(ValueError, match=r"\(B, T, 128\)"):
        lstm(torch.rand(2, 5, 64))


@pytest.mark.parametrize("kwargs", [dict(LSTMEmbdSize=0), dict(LSTMEmbdSize=128, hidden_size=0),
                                    dict(LSTMEmbdSize=128, num_layers=True), dict(LSTMEmbdSize=128, dropout=1.0)])
def test_bad_lstm_settings_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        LSTMModel(**kwargs)


def test_frame_windows_are_consecutive_slices_of_the_strip():
    strip = torch.arange(2 * 3 * 20, dtype=torch.float32).reshape(1, 1, 6, 20).repeat(2, 1, 1, 1)
    windows = frame_windows(strip, width=8, step=4)
    assert tuple(windows.shape) == (2, 4, 1, 6, 8)  # starts 0, 4, 8, 12
    for t in range(4):
        assert torch.equal(windows[:, t], strip[..., 4 * t:4 * t + 8])
    assert frame_windows(strip, 8, 4, count=2).shape[1] == 2
    with pytest.raises(ValueError, match="does not fit"):
        frame_windows(strip, 21, 1)
    with pytest.raises(ValueError, match="need a strip of 26 px"):
        frame_windows(strip, 8, 6, count=4)


# -- cases -------------------------------------------------------------------------------------------

def test_a_sequence_case_names_its_frames_and_encoder_and_counts_frames():
    case = Case(family="cnn", attention="none", mode="sequence-train", seq_len=8, batch=4)
    assert case.encoder == "frozen"  # the default: the seed's pipeline feeds a trained encoder to the LSTM
    assert case.images == 32
    assert case.id == "cnn-tiny-201x201-fp32-T8-frozen-sequence-train-b4"
    assert "-T8-frozen-sequence-train-b4" in case.key


def test_other_modes_drop_seq_len_and_encoder_and_keep_their_keys():
    plain = Case(mode="train", batch=4)
    assert dataclasses.replace(plain, seq_len=8, encoder="finetune") == plain
    assert plain.key == "transformer-tiny-201x201-zdef-fp32-auto-nockpt-compile-off-train-b4"
    assert Case(mode="sequence-infer", seq_len=8, encoder="finetune").encoder == ""


@pytest.mark.parametrize("fields, match", [(dict(mode="sequence-train"), "seqlens"),
                                           (dict(mode="sequence-infer", seq_len=-1), "seq_len >= 1"),
                                           (dict(mode="sequence-train", seq_len=8, encoder="thawed"), "frozen, finetune")])
def test_bad_sequence_cases_are_value_errors(fields, match):
    with pytest.raises(ValueError, match=match):
        Case(**fields)


def test_sequence_in_a_matrix_is_both_modes_and_the_encoder_axis_applies_to_training_only():
    matrix = parse_matrix({"group": [{"modes": ["sequence", "infer"], "seqlens": [8, 32], "encoders": ["frozen", "finetune"]}]})
    cases = expand(matrix)
    assert sorted(c.id.split("tiny-201x201-fp32-auto-")[1] for c in cases) == [
        "T32-finetune-sequence-train-b8", "T32-frozen-sequence-train-b8", "T32-sequence-infer-b8",
        "T8-finetune-sequence-train-b8", "T8-frozen-sequence-train-b8", "T8-sequence-infer-b8", "infer-b8"]


# -- measuring ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def facts():
    return device_facts(CPU)


def test_a_sequence_row_has_sequences_frames_and_the_two_shares(facts):
    case = Case(family="cnn", preset="tiny", size="64x32", latent=128, attention="none", mode="sequence-train", seq_len=4,
                encoder="finetune", batch=2)
    row = measure_case(case, CPU, facts, FAST, "r").row
    check_row(row)
    assert row["status"] == "ok", row["reason"]
    assert row["seq_len"] == 4 and row["encoder"] == "finetune"
    assert row["sequences_per_s"] == pytest.approx(2 / (row["median_ms"] / 1e3))
    assert row["frames_per_s"] == row["images_per_s"] == pytest.approx(8 / (row["median_ms"] / 1e3))
    assert 0 < row["encoder_pct"] and 0 < row["lstm_pct"] and row["encoder_pct"] + row["lstm_pct"] <= 100
    assert row["params"] == sum(q.numel() for q in pipeline("cnn", hidden=256).parameters())
    assert row["predicted_tensor_mib"] > 0  # the memory model traced the pipeline's step


def test_other_rows_leave_the_sequence_columns_empty(facts):
    row = measure_case(Case(family="cnn", preset="tiny", size="64x32", attention="none", batch=2), CPU, facts, FAST).row
    assert row["status"] == "ok"
    assert all(row[c] is None for c in ("seq_len", "encoder", "sequences_per_s", "frames_per_s", "encoder_pct", "lstm_pct"))


def test_time_goes_to_the_part_whose_forward_made_it():
    from torch.profiler import ProfilerActivity, profile

    from bench.core.sequence_metrics import _forward_nodes, _part

    p = pipeline("cnn", freeze=False).train()
    frames = torch.rand(2, 3, 1, *HW)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        F.mse_loss(p(frames), torch.zeros(2, 3, 128)).backward()
    events = prof.events()
    nodes = _forward_nodes(events)
    parts = {}
    for e in events:
        parts.setdefault(e.name, set()).add(_part(e, nodes))
    assert parts["aten::conv2d"] == {"encoder"}
    assert parts["aten::lstm"] == {"lstm"}
    assert parts["aten::mse_loss"] == {"other"}
    assert parts["autograd::engine::evaluate_function: ConvolutionBackward0"] == {"encoder"}
    lstm_backward = [n for n in parts if n.startswith("autograd::engine::evaluate_function:") and "Rnn" in n]
    assert lstm_backward and all(parts[n] == {"lstm"} for n in lstm_backward)


def test_the_attention_a_fused_kernel_hides_is_added_for_every_frame(facts):
    from bench.trackers.flops import attention_flops_forward

    case = Case(family="transformer", preset="tiny", size="64x32", latent=128, attention="flash", mode="sequence-infer",
                seq_len=3, batch=2)
    row = measure_case(case, CPU, facts, FAST).row
    per_frame = attention_flops_forward(build_model("transformer", "tiny", HW), HW, 1, "embed") / 1e9
    assert row["attn_gflop_analytic"] == pytest.approx(per_frame)
    assert row["attn_gflop_counted"] == 0  # the LSTM head's bmm is not attention
    assert row["flops_source"] == ("flop_counter + analytic attention (fused kernel not counted) + analytic LSTM gates "
                                   "(fused kernel not counted)")


def test_the_lstm_gates_the_counter_cannot_see_are_counted_from_the_shapes():
    from bench.core.sequence_metrics import recurrent_flops_forward

    lstm = LSTMModel(LSTMEmbdSize=128, hidden_size=64, num_layers=2)
    # per frame: layer 1 2*4*64*(128+64), layer 2 2*4*64*(64+64)
    assert recurrent_flops_forward(lstm, 10) == 10 * (2 * 4 * 64 * 192 + 2 * 4 * 64 * 128)


def test_a_frozen_encoder_keeps_no_activations_for_backward():
    from bench.core.memory_model import CATEGORIES, fit

    def most_saved(model, batch: int) -> float:  # the largest amount of saved-for-backward bytes at any moment
        k = CATEGORIES.index("saved")
        return float((model.fixed[:, k] + model.per_image[:, k] * batch).max())

    base = Case(family="cnn", preset="tiny", size="64x32", latent=128, attention="none", mode="sequence-train", seq_len=8)
    frozen, tuned = fit(base, "cpu"), fit(dataclasses.replace(base, encoder="finetune"), "cpu")
    assert frozen.peak(8) > frozen.peak(2)
    assert most_saved(frozen, 8) < most_saved(tuned, 8) / 2


def test_a_sequence_plan_row_counts_frames():
    from bench.plan.output import _variant, add_frames
    from bench.plan.planner import config_label

    row = dict(seq_len=32, encoder="frozen", max_batch=5, recommended_batch=4, precision="fp32", attention="flash",
               checkpointing=False, latent=128)
    add_frames(row)
    assert (row["max_frames"], row["recommended_frames"]) == (160, 128)
    assert _variant(row)[-2:] == ["T32", "frozen"]
    case = Case(mode="sequence-train", seq_len=32, batch=4, attention="flash")
    assert config_label(case) == "transformer-tiny-201x201-fp32-flash-T32-frozen"


# -- the downstream check -----------------------------------------------------------------------------

def test_rows_give_every_run_of_consecutive_windows():
    from bench.downstream.downstream import Rows

    rows = Rows([torch.arange(5.0)[:, None].repeat(1, 3), torch.zeros(2, 3)], [])
    seqs, where = rows.sequences(3)
    assert tuple(seqs.shape) == (3, 3, 3) and where == [(0, 0), (0, 1), (0, 2)]
    assert seqs[1, :, 0].tolist() == [1.0, 2.0, 3.0]


def test_the_bootstrap_resamples_whole_images():
    from bench.downstream.downstream import bootstrap_interval

    values = np.array([1.0, 1.0, 1.0, -1.0])
    low, high = bootstrap_interval(values, np.array([0, 0, 0, 1]), seed=0)
    assert low == pytest.approx(-1.0) and high == pytest.approx(1.0)  # two images: either one alone, or both


def _result(diff, low, high, spread=0.0, baseline="ridge"):
    from bench.downstream.downstream import DownstreamResult

    return DownstreamResult("cnn", "tiny", 128, (152, 640), 64, 4, seeds=3, images=6, baseline=baseline, diff=diff,
                            diff_low=low, diff_high=high, seed_spread=spread)


@pytest.mark.parametrize("diff, low, high, spread, verdict", [
    (-0.2, -0.5, +0.1, 0.05, "no difference shown"),     # the interval reaches 0 (a verdict on diff_low alone says "beats")
    (+0.2, -0.1, +0.5, 0.05, "no difference shown"),     # the mirror image (a verdict on diff_high alone says "beats")
    (-0.3, -0.5, -0.1, 0.05, "LSTM beats ridge"),
    (+0.3, +0.1, +0.5, 0.05, "ridge beats the LSTM"),
    (-0.3, -0.5, -0.1, 0.40, "no difference shown"),     # clear of 0, but within the seed spread
    (+0.3, +0.1, +0.5, 0.40, "no difference shown"),
    (-0.3, math.nan, -0.1, 0.05, "not scored"),
    (-0.3, -0.5, math.nan, 0.05, "not scored"),
])
def test_the_downstream_verdict_needs_the_interval_past_zero_and_the_seed_spread(diff, low, high, spread, verdict):
    assert _result(diff, low, high, spread).verdict == verdict


def test_the_verdict_names_the_baseline_it_was_judged_against():
    assert _result(-0.3, -0.5, -0.1, baseline="repeat-last").verdict == "LSTM beats repeat-last"


def test_the_ridge_predictor_recovers_a_linear_step_exactly():
    from bench.downstream.downstream import Ridge, fit_ridge

    rng = np.random.default_rng(0)
    weight = torch.from_numpy(rng.normal(size=(4, 4)) * 0.4).float()
    z = [torch.from_numpy(rng.normal(size=4)).float()]
    for _ in range(40):
        z.append(z[-1] @ weight + 0.5)
    seqs = torch.stack(z).unfold(0, 5, 1).permute(0, 2, 1)  # (36, 5, 4)
    ridge = Ridge.fit(seqs, 1e-6)
    assert torch.allclose(ridge.predict(seqs), seqs[:, 1:], atol=1e-3)
    wide = Ridge.fit(seqs[:1].repeat(1, 1, 3), 1e-6)  # more dimensions (12) than pairs (4): the dual form
    assert torch.allclose(wide.predict(seqs[:1].repeat(1, 1, 3)), seqs[:1, 1:].repeat(1, 1, 3), atol=1e-3)
    chosen = fit_ridge(seqs, [f"img{i % 4}" for i in range(len(seqs))])
    assert chosen.penalty == min(chosen.penalty, 1e-2) and torch.allclose(chosen.predict(seqs), seqs[:, 1:], atol=0.05)


def test_the_autoencoder_trains_for_its_step_budget_and_rows_record_the_steps():
    from bench.quality.dataset import SourceImage, make_split, sample_rects, CropDataset
    from bench.downstream.downstream import train_autoencoder

    rng = np.random.default_rng(0)
    images = make_split([SourceImage(f"s{i}", rng.random((40, 60)).astype(np.float32)) for i in range(3)], (16, 32), 1, 1).images
    crops = CropDataset(images, sample_rects(images, (16, 32), 6, heldout=False, rng=rng))
    model = build_model("cnn", "tiny", (16, 32), latent_dim=128)
    steps, seconds, losses, _, _ = train_autoencoder(model, crops, crops.stack()[:2], CPU, seed=0, steps=7)
    assert steps == 7 == len(losses) and seconds > 0  # 6 crops, batch 8: seven epochs of one step each
    with pytest.raises(ValueError, match="exactly one budget"):
        train_autoencoder(model, crops, crops.stack()[:2], CPU, seed=0, steps=3, seconds=1.0)


def test_a_warning_when_compared_autoencoders_trained_different_steps():
    from bench.downstream.output import step_warning

    same, other = _result(-0.3, -0.5, -0.1), _result(-0.3, -0.5, -0.1)
    same.ae_steps = same.ae_steps_max = other.ae_steps = other.ae_steps_max = 100
    assert step_warning([same, other]) == ""
    other.ae_steps = 37
    assert "37, 100" in step_warning([same, other])


def test_training_and_heldout_rows_come_from_different_images():
    from bench.quality.dataset import SourceImage, make_split
    from bench.downstream.downstream import sample_rows

    rng = np.random.default_rng(1)
    images = make_split([SourceImage(f"s{i}", rng.random((50, 80)).astype(np.float32)) for i in range(6)], (16, 48), 1, 1).images
    _, train = sample_rows(images, 16, 3, False, rng)
    _, held = sample_rows(images, 16, 3, True, rng)
    assert train and held and not set(train) & set(held)
    assert set(held) == {im.name for im in images if im.heldout}


def test_a_small_downstream_check_trains_the_lstm_and_scores_it(tmp_path):
    from bench.quality.dataset import SourceImage, make_split
    from bench.downstream.downstream import run_downstream
    from bench.downstream.output import write_outputs

    rng = np.random.default_rng(0)
    sources = [SourceImage(f"s{i}", rng.random((60, 100)).astype(np.float32)) for i in range(6)]
    images = make_split(sources, (16, 48), 1, 1).images
    r = run_downstream("cnn", "tiny", 128, images, CPU, seeds=(0, 1), window=(16, 32), step=4, context=3, ae_steps=3,
                       lstm_steps=20, train_rows=2, heldout_rows=2)
    assert r.lstm_steps == 20 and len(r.curve) == 11 and r.curve[-1].step == 20 and r.ae_steps == r.ae_steps_max == 3
    assert r.seeds == 2 and r.images == 2 and r.baseline in ("repeat-last", "ridge")
    assert all(math.isfinite(v) for v in (r.lstm_mse, r.repeat_mse, r.ridge_mse, r.mean_mse, r.pixel_lstm_mse,
                                          r.pixel_ridge_mse, r.pixel_floor_mse, r.seed_spread))
    assert r.diff == pytest.approx(r.lstm_mse - min(r.repeat_mse, r.ridge_mse), abs=1e-6)
    md = write_outputs(tmp_path, [r], dict(command="python -m bench downstream (test)", created="2026-12-08T00:00:00+00:00",
                                           device="cpu", torch=torch.__version__, commit="x", dirty=False, seconds=1.0, data="noise",
                                           dropped="", ae_steps=3, seeds=[0, 1]))
    text = md.read_text()
    assert "| cnn | 128 | 3 |" in text and "ridge" in text and "commit x" in text and "(2026-12-08T00:00:00+00:00)" in text
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "curves.csv").exists()


@pytest.mark.parametrize("argv, option", [(["--latents", "100"], "--latents"), (["--lstm-steps", "0"], "--lstm-steps"),
                                          (["--window", "640"], "640"), (["--ae-steps", "0"], "--ae-steps"),
                                          (["--seeds", "1,1"], "--seeds")])
def test_bad_downstream_options_are_one_line_and_exit_2(argv, option, capsys):
    from bench.cli import main

    assert main(["downstream", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err
