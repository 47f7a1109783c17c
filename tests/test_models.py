"""Specifications of the models under test (ae_models), checked on CPU in fp32.

Sizes as strings are "WxH" ("1280x152" is 1280 wide and 152 high: tensor (B, 1, 152, 1280));
Python tuples are (H, W).
"""

from __future__ import annotations

import contextlib

import matplotlib.image as mpimg
import pytest
import torch

from ae_models import (
    PRESETS, AttentionMaps, FlatTransformerAutoencoder, PatchTransformerAutoencoder, UnsupportedAttentionError,
    build_model, create_autoencoder, create_cnn_autoencoder, detect_attention_kernels, parse_size,
)

FAMILIES = ("transformer", "transformer-flat", "cnn")
SIZES = ("201x201", "1280x152", "640x152")


def batch(size: str, n: int = 2, channels: int = 1) -> torch.Tensor:
    height, width = parse_size(size)
    return torch.randn(n, channels, height, width)


def reconstruction_loss(model, x: torch.Tensor) -> torch.Tensor:
    recon, _ = model(x)
    return torch.nn.functional.mse_loss(recon, x)


def qk_rows(block) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of W_q and W_k: rows [0:dim] and [dim:2dim] of the fused qkv weight."""
    grad, dim = block.attn.qkv.weight.grad, block.attn.qkv.in_features
    return grad[:dim], grad[dim : 2 * dim]


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("family", FAMILIES)
def test_reconstruction_has_the_input_shape(family, size):
    model = build_model(family, "tiny", size, latent_dim=128)
    x = batch(size)
    with torch.no_grad():
        recon, _ = model(x)
    assert recon.shape == x.shape


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("family", FAMILIES)
def test_embedding_is_batch_by_latent(family, size):
    model = build_model(family, "tiny", size, latent_dim=128)
    with torch.no_grad():
        z = model.Embedding(batch(size))
    assert z.shape == (2, 128)


@pytest.mark.parametrize("latent", [128, 512, 8192])
@pytest.mark.parametrize("family", ["transformer", "cnn"])
def test_embedding_width_is_the_requested_latent(family, latent):
    model = build_model(family, "tiny", "201x201", latent_dim=latent)
    with torch.no_grad():
        z = model.Embedding(batch("201x201", n=3))
    assert z.shape == (3, latent)


@pytest.mark.parametrize("latent", [128, 512, 8192])
def test_flat_embedding_width_is_the_requested_latent(latent):
    # A flat model's blocks are latent wide: at 8192 that is ~1.6B parameters, so shapes are
    # checked on the meta device (no memory, no compute).
    with torch.device("meta"):
        model = build_model("transformer-flat", "tiny", "64x32", latent_dim=latent)
        z = model.Embedding(torch.empty(3, 1, 32, 64))
    assert z.shape == (3, latent)


def test_one_patch_model_serves_three_widths_without_rebuilding():
    model = create_autoencoder("1280x152", "tiny", latent_dim=128)
    shapes = {}
    with torch.no_grad():
        for width in (1280, 640, 2000):
            x = torch.randn(2, 1, 152, width)
            recon, _ = model(x)
            shapes[width] = (tuple(recon.shape), tuple(model.Embedding(x).shape))
    assert shapes == {
        1280: ((2, 1, 152, 1280), (2, 128)),
        640: ((2, 1, 152, 640), (2, 128)),
        2000: ((2, 1, 152, 2000), (2, 128)),
    }


# --------------------------------------------------------------------------------------------
# Gradients through attention: patch mode learns W_q/W_k, flat mode cannot
# --------------------------------------------------------------------------------------------


def test_patch_mode_encoder_query_and_key_weights_receive_gradient():
    model = create_autoencoder("201x201", "tiny", latent_dim=128)
    reconstruction_loss(model, batch("201x201")).backward()
    for i, block in enumerate(model.encoder.blocks):
        grad_q, grad_k = qk_rows(block)
        # Every weight gets a gradient; small at init (std-0.02 weights give near-uniform attention)
        # but far above the rounding noise that flat mode leaves (see below).
        assert torch.count_nonzero(grad_q) == grad_q.numel(), f"encoder block {i}: W_q has zero-gradient entries"
        assert torch.count_nonzero(grad_k) == grad_k.numel(), f"encoder block {i}: W_k has zero-gradient entries"
        grad_v = block.attn.qkv.weight.grad[2 * block.attn.qkv.in_features :]
        assert grad_q.abs().max() > 1e-4 * grad_v.abs().max()
        assert grad_k.abs().max() > 1e-4 * grad_v.abs().max()


@pytest.mark.parametrize("attention", ["eager", "math"])
def test_flat_mode_query_and_key_weights_receive_exactly_zero_gradient(attention):
    # The seed's design flaw: one token per image, and softmax over one key is 1 whatever
    # q.k is, so attention is the identity on V and W_q, W_k never learn.
    model = create_autoencoder("64x32", "tiny", tokenizer="flat", latent_dim=128, attention=attention)
    reconstruction_loss(model, batch("64x32")).backward()
    for block in list(model.encoder.blocks) + list(model.decoder.blocks):
        grad_q, grad_k = qk_rows(block)
        dim = block.attn.qkv.in_features
        assert torch.count_nonzero(grad_q) == 0
        assert torch.count_nonzero(grad_k) == 0
        assert torch.count_nonzero(block.attn.qkv.bias.grad[: 2 * dim]) == 0
        assert block.attn.qkv.weight.grad[2 * dim :].abs().max() > 1e-6  # W_v does learn


@pytest.mark.parametrize("attention", ["flash", "auto"])
def test_flat_mode_query_and_key_gradient_is_only_rounding_noise_with_the_flash_kernel(attention):
    # The CPU flash backward forms dS = P * (dP - rowsum(dO * O)); with P = 1 both terms are
    # dO.V summed in different orders, so it leaves rounding noise (~1e-12) instead of exact 0.
    model = create_autoencoder("64x32", "tiny", tokenizer="flat", latent_dim=128, attention=attention)
    reconstruction_loss(model, batch("64x32")).backward()
    for block in list(model.encoder.blocks) + list(model.decoder.blocks):
        grad_q, grad_k = qk_rows(block)
        grad_v = block.attn.qkv.weight.grad[2 * block.attn.qkv.in_features :]
        assert grad_q.abs().max() < 1e-6 * grad_v.abs().max()
        assert grad_k.abs().max() < 1e-6 * grad_v.abs().max()


# --------------------------------------------------------------------------------------------
# Attention implementations
# --------------------------------------------------------------------------------------------


def _run_with_attention(attention: str, x: torch.Tensor):
    torch.manual_seed(1)  # same weights for every implementation
    model = create_autoencoder("96x48", "tiny", latent_dim=128, patch_size=8, attention=attention)
    recon, _ = model(x)
    torch.nn.functional.mse_loss(recon, x).backward()
    return recon.detach(), gradients(model)


@pytest.mark.parametrize("attention", ["auto", "flash", "math"])
def test_sdpa_backends_match_eager_attention_in_fp32(attention):
    x = batch("96x48")
    ref_out, ref_grads = _run_with_attention("eager", x)
    out, grads = _run_with_attention(attention, x)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("attention", ["mem-efficient", "cudnn"])
def test_cuda_only_kernels_on_cpu_raise_unsupported_attention_error(attention):
    model = create_autoencoder("64x48", "tiny", latent_dim=128, attention=attention)
    with pytest.raises(UnsupportedAttentionError, match=rf"{attention} attention has no CPU kernel"):
        model(batch("64x48"))


def test_unsupported_attention_error_is_a_value_error():
    assert issubclass(UnsupportedAttentionError, ValueError)


GRAD_MODES = {"grad": contextlib.nullcontext, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize("attention, kernels", [("flash", ["flash"]), ("math", ["math"]), ("eager", ["eager"])])
def test_detect_attention_kernels_names_the_kernel_that_ran(attention, kernels, grad_mode):
    # inference_mode included: there SDPA reaches the recorder before it picks a kernel.
    model = create_autoencoder("64x48", "tiny", latent_dim=128, attention=attention).eval()
    with GRAD_MODES[grad_mode]():
        assert detect_attention_kernels(model, batch("64x48")) == kernels


def test_detect_attention_kernels_reports_one_cpu_kernel_for_auto():
    model = create_autoencoder("64x48", "tiny", latent_dim=128, attention="auto")
    found = detect_attention_kernels(model, batch("64x48"))
    assert len(found) == 1 and found[0] in ("flash", "math")


# --------------------------------------------------------------------------------------------
# Gradient checkpointing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["patch", "flat"])
def test_checkpointing_gives_the_same_loss_and_gradients(tokenizer):
    model = create_autoencoder("64x48", "tiny", latent_dim=128, tokenizer=tokenizer, dropout=0.0)
    x = batch("64x48")
    results = {}
    for enabled in (False, True):
        model.set_grad_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        loss = reconstruction_loss(model, x)
        loss.backward()
        results[enabled] = (loss.detach(), gradients(model))
    (loss_off, grads_off), (loss_on, grads_on) = results[False], results[True]
    torch.testing.assert_close(loss_on, loss_off, atol=1e-7, rtol=1e-6)
    assert grads_on.keys() == grads_off.keys()
    for name in grads_off:
        torch.testing.assert_close(grads_on[name], grads_off[name], atol=1e-7, rtol=1e-5)


def test_checkpointing_recomputes_every_block_in_backward():
    # Hooked on each block's first layer: non-reentrant checkpointing stops recomputing a block
    # once it has rebuilt what backward needs, so a hook on the block itself never fires again.
    model = create_autoencoder("64x48", "tiny", latent_dim=128, grad_checkpointing=True)
    blocks = list(model.encoder.blocks) + list(model.decoder.blocks)
    calls = []
    for block in blocks:
        block.norm1.register_forward_hook(lambda module, args, out: calls.append(module))
    loss = reconstruction_loss(model, batch("64x48"))
    assert len(calls) == len(blocks)
    loss.backward()
    assert len(calls) == 2 * len(blocks)  # each block ran again in backward


def test_checkpointing_off_runs_each_block_once():
    model = create_autoencoder("64x48", "tiny", latent_dim=128, grad_checkpointing=False)
    blocks = list(model.encoder.blocks) + list(model.decoder.blocks)
    calls = []
    for block in blocks:
        block.norm1.register_forward_hook(lambda module, args, out: calls.append(module))
    reconstruction_loss(model, batch("64x48")).backward()
    assert len(calls) == len(blocks)


# --------------------------------------------------------------------------------------------
# Attention maps
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maps_and_model():
    torch.manual_seed(0)
    model = create_autoencoder("201x201", "tiny", latent_dim=128, depth=2, decoder_depth=1)
    maps = model.get_attention_maps(torch.randn(2, 1, 201, 201))
    return maps, model


def test_attention_maps_have_one_entry_per_layer_and_an_average(maps_and_model):
    maps, model = maps_and_model
    depth, decoder_depth = model.config.depth, model.config.decoder_depth
    assert isinstance(maps, AttentionMaps)
    assert list(maps) == [f"layer_{i}" for i in range(depth + decoder_depth)] + ["average"]


def test_attention_maps_are_batch_by_tokens_by_tokens(maps_and_model):
    maps, _ = maps_and_model
    tokens = 13 * 13  # 201x201 padded to 208x208 at patch 16
    assert {name: tuple(m.shape) for name, m in maps.items()} == {name: (2, tokens, tokens) for name in maps}


def test_attention_map_rows_sum_to_one(maps_and_model):
    maps, _ = maps_and_model
    for name, amap in maps.items():
        torch.testing.assert_close(amap.sum(dim=-1), torch.ones(amap.shape[:-1]), atol=1e-5, rtol=0, msg=name)


def test_attention_maps_grid_size_is_the_patch_grid():
    model = create_autoencoder("1280x152", "tiny", latent_dim=128)
    maps = model.get_attention_maps(torch.randn(1, 1, 152, 1280))
    assert maps.grid_size == (10, 80)
    assert maps["average"].shape == (1, 800, 800)


def test_attention_maps_leave_the_attention_setting_unchanged():
    model = create_autoencoder("64x48", "tiny", latent_dim=128, attention="flash")
    model.get_attention_maps(batch("64x48"))
    assert model.config.attention == "flash"
    assert {block.attn.attention for block in list(model.encoder.blocks) + list(model.decoder.blocks)} == {"flash"}


@pytest.mark.parametrize("with_grid", [False, True])
def test_visualize_attention_map_writes_a_readable_png(maps_and_model, tmp_path, with_grid):
    from ae_models import visualize_attention_map

    maps, _ = maps_and_model
    path = tmp_path / "maps" / "average.png"
    visualize_attention_map(maps["average"], save_path=path, title="average",
                            grid_size=maps.grid_size if with_grid else None)
    image = mpimg.imread(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_visualize_attention_map_rejects_a_grid_that_does_not_match(maps_and_model, tmp_path):
    from ae_models import visualize_attention_map

    maps, _ = maps_and_model
    with pytest.raises(ValueError, match=r"grid_size \(12, 12\) has 144 tokens but the map has 169"):
        visualize_attention_map(maps["average"], save_path=tmp_path / "x.png", grid_size=(12, 12))


# --------------------------------------------------------------------------------------------
# get_config round-trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build, factory", [
    (lambda: create_autoencoder("640x152", "tiny", latent_dim=256, depth=3, patch_size=8), create_autoencoder),
    (lambda: create_autoencoder("64x48", "tiny", tokenizer="flat", latent_dim=128), create_autoencoder),
    (lambda: create_cnn_autoencoder("640x152", "tiny", latent_dim=256), create_cnn_autoencoder),
], ids=["patch", "flat", "cnn"])
def test_get_config_rebuilds_the_same_model(build, factory):
    model = build().eval()
    clone = factory(**model.get_config()).eval()
    assert type(clone) is type(model)
    assert clone.get_config() == model.get_config()
    assert clone.get_num_params() == model.get_num_params()
    clone.load_state_dict(model.state_dict())
    height, width = model.config.input_size
    x = torch.randn(2, 1, height, width)
    with torch.no_grad():
        assert torch.equal(clone(x)[0], model(x)[0])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_unknown_preset_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; choose one of tiny, small, medium, large, xlarge"):
        create_autoencoder("201x201", "huge")


def test_unknown_cnn_preset_is_rejected():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'"):
        create_cnn_autoencoder("201x201", "huge")


def test_unknown_family_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown model family 'rnn'; choose one of transformer, transformer-flat, cnn"):
        build_model("rnn", "tiny", "201x201")


@pytest.mark.parametrize("latent", [127, 8193])
@pytest.mark.parametrize("family", FAMILIES)
def test_latent_outside_128_to_8192_is_rejected(family, latent):
    with pytest.raises(ValueError, match=rf"latent_dim must be an integer from 128 to 8192, got {latent}"):
        build_model(family, "tiny", "201x201", latent_dim=latent)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_channel_count_is_rejected(family):
    model = build_model(family, "tiny", "64x48", latent_dim=128)
    with pytest.raises(ValueError, match=r"model takes 1 channel\(s\), got 3"):
        model(batch("64x48", channels=3))


def test_patch_larger_than_the_image_is_rejected_at_build():
    with pytest.raises(ValueError, match=r"patch_size 32 is larger than the image 201x20; use a patch size of at most 20"):
        create_autoencoder((20, 201), "tiny", patch_size=32)


def test_image_smaller_than_a_patch_is_rejected_at_forward():
    model = create_autoencoder("201x201", "tiny", latent_dim=128)
    with pytest.raises(ValueError, match=r"patch_size 16 is larger than the image 64x8"):
        model(torch.randn(1, 1, 8, 64))


def test_flat_model_rejects_an_image_of_another_size():
    model = create_autoencoder("64x48", "tiny", tokenizer="flat", latent_dim=128)
    with pytest.raises(ValueError, match=r"built for 64x48 \(tensor H=48, W=64\), got 80x48") as info:
        model(torch.randn(1, 1, 48, 80))
    assert "did you pass (W, H)" not in str(info.value)


def test_flat_model_hints_at_swapped_width_and_height():
    model = create_autoencoder("64x48", "tiny", tokenizer="flat", latent_dim=128)
    with pytest.raises(ValueError, match=r"got 48x64 .*did you pass \(W, H\)\?"):
        model(torch.randn(1, 1, 64, 48))


def test_unknown_override_is_rejected_with_the_accepted_names():
    with pytest.raises(ValueError, match=r"unknown option\(s\) embed_size; accepted: .*embed_dim.*use_flash_attention"):
        create_autoencoder("201x201", "tiny", embed_size=128)


def test_unknown_cnn_override_is_rejected():
    with pytest.raises(ValueError, match=r"unknown CNN option\(s\) depth"):
        create_cnn_autoencoder("201x201", "tiny", depth=3)


@pytest.mark.parametrize("text, message", [
    ("1280x", r"bad image size '1280x': expected 'WxH' with positive integers"),
    ("0x152", r"bad image size '0x152': width and height must be positive"),
    ("1280*152", r"bad image size '1280\*152': expected 'WxH'"),
])
def test_malformed_size_string_is_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        create_autoencoder(text, "tiny")


def test_size_string_is_width_by_height():
    assert parse_size("1280x152") == (152, 1280)
    assert create_autoencoder("1280x152", "tiny").config.input_size == (152, 1280)


# --------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------

SEED_PARAMS = {"tiny": 500e3, "small": 2e6, "medium": 8e6, "large": 32e6, "xlarge": 128e6}


@pytest.mark.parametrize("preset", list(SEED_PARAMS))
def test_preset_is_within_30_percent_of_the_seed_table(preset):
    with torch.device("meta"):  # shapes only: xlarge would otherwise allocate ~400 MB
        model = create_autoencoder("201x201", preset, latent_dim=512)
    params = model.get_num_params()
    assert abs(params / SEED_PARAMS[preset] - 1) <= 0.30, f"{preset}: {params:,} vs {SEED_PARAMS[preset]:,.0f}"


def test_presets_cover_the_seed_names():
    assert list(PRESETS) == list(SEED_PARAMS)


def test_flat_projections_at_1280x152_latent_2048_hold_over_790m_parameters():
    with torch.device("meta"):
        model = create_autoencoder("1280x152", "tiny", tokenizer="flat", latent_dim=2048)
    assert isinstance(model, FlatTransformerAutoencoder)
    projections = sum(p.numel() for layer in (model.input_proj, model.output_proj) for p in layer.parameters())
    assert projections == 2 * 152 * 1280 * 2048 + 2048 + 152 * 1280  # weights and biases
    assert projections > 790e6


# --------------------------------------------------------------------------------------------
# The seed's keyword names
# --------------------------------------------------------------------------------------------


def test_seed_use_flash_attention_false_gives_eager_attention():
    model = create_autoencoder((201, 201), "tiny", use_flash_attention=False)
    assert isinstance(model, PatchTransformerAutoencoder)
    assert model.config.attention == "eager"
    assert {block.attn.attention for block in model.encoder.blocks} == {"eager"}


def test_seed_use_flash_attention_true_gives_sdpa_auto():
    assert create_autoencoder((201, 201), "tiny", use_flash_attention=True).config.attention == "auto"


def test_seed_use_gradient_checkpointing_turns_checkpointing_on():
    model = create_autoencoder((201, 201), "tiny", use_gradient_checkpointing=True)
    assert model.config.grad_checkpointing is True
    assert model.encoder.grad_checkpointing and model.decoder.grad_checkpointing
