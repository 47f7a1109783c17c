"""Our transformer Block does the same arithmetic as nn.TransformerEncoderLayer (pre-LN, GELU).

The speed comparison of the two lives in ``bench/selfcheck/crosschecks.py`` (``pytest bench
--ae-selfcheck``); here the claim behind it: same parameters, same outputs and gradients when the
same weights are loaded into both.
"""

import pytest
import torch

from bench.selfcheck.crosschecks import BLOCK_SHAPES, BlockShape, TorchBlock, make_block

SHAPE = BlockShape("test", dim=64, heads=4, mlp_ratio=2.0, tokens=20, batch=3)


def copy_weights(ours, theirs: TorchBlock) -> None:
    """Load ``theirs``'s weights into ``ours`` (fused QKV and out-projection, the two LayerNorms, the MLP)."""
    layer = theirs.layer
    with torch.no_grad():
        ours.attn.qkv.weight.copy_(layer.self_attn.in_proj_weight)
        ours.attn.qkv.bias.copy_(layer.self_attn.in_proj_bias)
        ours.attn.proj.weight.copy_(layer.self_attn.out_proj.weight)
        ours.attn.proj.bias.copy_(layer.self_attn.out_proj.bias)
        for mine, torchs in ((ours.norm1, layer.norm1), (ours.norm2, layer.norm2)):
            mine.weight.copy_(torchs.weight)
            mine.bias.copy_(torchs.bias)
        ours.mlp.fc1.weight.copy_(layer.linear1.weight)
        ours.mlp.fc1.bias.copy_(layer.linear1.bias)
        ours.mlp.fc2.weight.copy_(layer.linear2.weight)
        ours.mlp.fc2.bias.copy_(layer.linear2.bias)


@pytest.mark.parametrize("shape", BLOCK_SHAPES, ids=[s.name for s in BLOCK_SHAPES])
def test_blocks_have_the_same_parameter_count(shape):
    counts = {impl: sum(p.numel() for p in make_block(impl, shape).parameters()) for impl in ("ours", "pytorch")}
    assert counts["ours"] == counts["pytorch"]


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_same_weights_give_the_same_output_and_input_gradient(training):
    torch.manual_seed(0)
    theirs, ours = make_block("pytorch", SHAPE), make_block("ours", SHAPE)
    copy_weights(ours, theirs)
    ours.train(training), theirs.train(training)
    x = torch.randn(SHAPE.batch, SHAPE.tokens, SHAPE.dim, requires_grad=True)
    y_ours = ours(x)[0]
    (g_ours,) = torch.autograd.grad(y_ours.square().sum(), x)
    y_theirs = theirs(x)[0]
    (g_theirs,) = torch.autograd.grad(y_theirs.square().sum(), x)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-4, rtol=1e-4)
