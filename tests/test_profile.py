"""Profiling and roofline: a tiny real case profiled on CPU through the command line, and the
roofline placement of steps whose intensity is known analytically."""

from __future__ import annotations

import gzip
import json
import math

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ae_models import create_autoencoder
from bench.cli import main
from bench.profile.attribution import CATEGORIES, labelled, module_category
from bench.profile.report import compare_categories, load_profiles
from bench.profile.roofline import OVERHEAD_FRACTION, classify, count_step_bytes, place

KERNELS = ("flash", "eager")


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """``python -m bench profile`` over a tiny training case (12 tokens), flash and eager attention."""
    out = tmp_path_factory.mktemp("profiles")
    code = main(["profile", "--matrix", "quick", "--families", "transformer", "--presets", "tiny", "--sizes", "64x48",
                 "--precisions", "fp32", "--attention", ",".join(KERNELS), "--checkpointing", "off", "--compile", "off", "--modes", "train",
                 "--batch", "2", "--steps", "2", "--device", "cpu", "--out", str(out)])
    assert code == 0
    return out, {s["attention"]: s for s in load_profiles(out)}


def _ms(summary: dict, category: str) -> float:
    return next(row["ms_per_step"] for row in summary["categories"] if row["category"] == category)


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_time_is_attributed_to_the_kernel_that_ran(profiled, kernel):
    _, summaries = profiled
    summary = summaries[kernel]
    assert summary["status"] == "ok"
    assert summary["attention_kernel"] == kernel
    assert _ms(summary, "attention") > 0
    detail = next(row["detail"] for row in summary["categories"] if row["category"] == "attention")
    assert detail.endswith(f"kernel: {kernel}")


@pytest.mark.parametrize("kernel", KERNELS)
def test_training_step_has_optimizer_and_matmul_time(profiled, kernel):
    summary = profiled[1][kernel]
    for category in ("optimizer", "qkv/proj", "mlp", "norm", "embed/conv"):
        assert _ms(summary, category) > 0, category


@pytest.mark.parametrize("kernel", KERNELS)
def test_categories_add_up_to_the_measured_wall_time(profiled, kernel):
    summary = profiled[1][kernel]
    total = sum(row["ms_per_step"] for row in summary["categories"])
    assert total == pytest.approx(summary["attributed_ms"])
    assert summary["coverage"] == pytest.approx(total / summary["profiled_wall_ms"])
    # on a CPU the categories add up to the profiled step itself (Python between ops is `host overhead`): checked
    # against the trace's own `ae.step` scopes, not the wall clock around them, which a busy machine stretches
    out, _ = profiled
    trace = json.loads(gzip.decompress((out / summary["case_id"] / "trace.json.gz").read_bytes()))
    steps = [e["dur"] / 1e3 for e in trace["traceEvents"] if e.get("name") == "ae.step" and e.get("ph") == "X"]
    assert steps and total == pytest.approx(sum(steps) / len(steps), rel=0.02), (total, steps)
    assert [row["category"] for row in summary["categories"]] == [c for c in CATEGORIES if c != "idle"]  # CPU: no idle row


def test_each_case_folder_has_tables_trace_and_memory(profiled):
    out, summaries = profiled
    folder = out / summaries["flash"]["case_id"]
    trace = json.loads(gzip.decompress((folder / "trace.json.gz").read_bytes()))
    assert trace["traceEvents"] and any(e.get("name") == "ae.step" for e in trace["traceEvents"])
    ops = pd.read_csv(folder / "top_ops.csv")
    # which matmul ranks highest depends on timing; one of the linear layers' matmuls always makes the list
    matmuls = ops["op"].isin(["aten::addmm", "aten::mm"])
    assert matmuls.any()
    assert ops.loc[matmuls, "input_shapes"].str.contains(r"\[24, \d+\]").any()  # 2 images x 12 tokens
    assert pd.read_csv(folder / "categories.csv")["ms_per_step"].sum() > 0
    memory = pd.read_csv(folder / "memory_breakdown.csv").set_index("part")["mib"]
    assert memory["gradients"] == pytest.approx(memory["parameters"])
    assert memory["optimizer state"] == pytest.approx(2 * memory["parameters"], rel=0.01)  # AdamW: exp_avg, exp_avg_sq
    assert not pd.read_csv(folder / "memory_ops.csv").empty  # profile_memory's per-op view
    for name in ("categories.md", "top_ops.md", "memory.md"):
        assert (folder / name).stat().st_size > 0


def test_overview_compares_kernels_and_draws_the_roofline(profiled):
    out, summaries = profiled
    text = (out / "profile.md").read_text()
    assert "Attention by kernel" in text and "with flash" in text and "with eager" in text
    assert (out / "roofline.png").read_bytes()[:4] == b"\x89PNG"
    side_by_side = compare_categories(list(summaries.values()))
    assert len(side_by_side) == 1 and side_by_side.loc[0, "size"] == "64x48"
    assert side_by_side.loc[0, "flash: attention"] == pytest.approx(summaries["flash"]["categories"][0]["share"])
    assert side_by_side.loc[0, "eager: attention"] > 0
    table = pd.read_csv(out / "summary.csv")
    assert set(table["bound"]) <= {"compute-bound", "memory-bound", "overhead-bound"}
    assert (table["intensity"] > 0).all() and (table["achieved_tflops"] > 0).all()


def test_modules_are_labelled_by_their_role():
    model = create_autoencoder((48, 64), "tiny")
    modules = dict(model.named_modules())
    parent = lambda name: modules[name.rsplit(".", 1)[0]] if "." in name else model  # noqa: E731
    role = {name: module_category(name, modules[name], parent(name)) for name in (
        "encoder.blocks.0.attn", "encoder.blocks.0.attn.qkv", "encoder.blocks.0.attn.proj", "encoder.blocks.0.mlp.fc1",
        "encoder.blocks.0.mlp.act", "encoder.blocks.0.norm1", "patch_embed", "head", "to_latent")}
    assert role == {"encoder.blocks.0.attn": "attention", "encoder.blocks.0.attn.qkv": "qkv/proj",
                    "encoder.blocks.0.attn.proj": "qkv/proj", "encoder.blocks.0.mlp.fc1": "mlp",
                    "encoder.blocks.0.mlp.act": "activation", "encoder.blocks.0.norm1": "norm", "patch_embed": "embed/conv",
                    "head": "embed/conv", "to_latent": "latent"}
    with labelled(model) as scopes:
        assert scopes > 0
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())  # hooks removed on exit


def test_square_matmul_intensity_is_n_over_6_in_fp32():
    n = 256
    a, b = torch.randn(n, n), torch.randn(n, n)
    moved = count_step_bytes(lambda: torch.mm(a, b))
    assert moved.total == 3 * n * n * 4 == moved.matmul  # read A and B, write C, 4 bytes each
    with FlopCounterMode(display=False) as counter:
        torch.mm(a, b)
    flops = counter.get_total_flops()
    assert flops == 2 * n**3
    placement = place(flops, moved.total, seconds=2 * n**3 / 0.5e12, peak_tflops=1.0, bandwidth_gbs=100.0)
    assert placement.intensity == pytest.approx(n / 6)
    assert placement.ridge == pytest.approx(10.0)
    assert placement.bound == "compute-bound"  # n/6 = 42.7 FLOP/byte, above the ridge, at half the peak
    assert placement.fraction_of_roof == pytest.approx(0.5)


def test_elementwise_add_is_memory_bound_and_views_move_nothing():
    n = 1 << 16
    x, y = torch.randn(n), torch.randn(n)
    moved = count_step_bytes(lambda: x + y)
    assert moved.total == 3 * n * 4
    assert count_step_bytes(lambda: x.view(256, 256).t()).total == 0
    intensity = n / moved.total  # one FLOP per element: 1/12 FLOP/byte
    assert classify(intensity, 0.5 * intensity * 100e9, 1e12, 100e9) == "memory-bound"


def test_far_below_the_roof_is_overhead_bound():
    peak, bandwidth = 1e12, 100e9
    assert classify(50.0, 0.5 * OVERHEAD_FRACTION * peak, peak, bandwidth) == "overhead-bound"
    assert classify(50.0, 2 * OVERHEAD_FRACTION * peak, peak, bandwidth) == "compute-bound"
    with pytest.raises(ValueError):
        place(0, 1, 1, 1, 1)
    assert math.isclose(place(10, 1, 1, peak_tflops=2.0, bandwidth_gbs=200.0).ridge, 10.0)  # 2e12 FLOP/s / 2e11 bytes/s


# -- attribution against models whose split is known --------------------------------------------------

KNOWN = {  # plug-in family (tests/profile_models.py) -> the one category all of its op time belongs to
    "tests.profile_models:matmul_only": "latent",               # one Linear named to_latent: one aten::mm
    "tests.profile_models:softmax_in_attention": "attention",   # a softmax inside an Attention module
    "tests.profile_models:softmax_unlabelled": "other",         # the same softmax in no labelled module
}


@pytest.fixture(scope="module")
def known_splits(tmp_path_factory):
    """Each known model profiled through ``profile_case`` (one thread: a busy second core slows an op, it
    does not move its time to another category), infer and, for the matmul, train."""
    from bench.core.cases import Case
    from bench.profile.profiler import profile_case
    from bench.trackers.device import device_facts

    out = tmp_path_factory.mktemp("known")
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found = {}
        for family, mode, batch in [*[(f, "infer", 4) for f in KNOWN], ("tests.profile_models:matmul_only", "train", 4)]:
            case = Case(family=family, preset="tiny", size="512x512", attention="none", mode=mode, batch=batch)
            found[(family, mode)] = profile_case(case, cpu, device_facts(cpu), out, steps=3)
        return found
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("family", list(KNOWN))
def test_a_model_that_does_one_thing_has_all_its_op_time_in_that_category(known_splits, family):
    profiled = known_splits[(family, "infer")]
    assert profiled.status == "ok", profiled.summary.get("reason")
    ms = profiled.categories.set_index("category")["ms_per_step"]
    expected = KNOWN[family]
    ops = ms.drop(["host overhead", expected])
    assert (ops == 0).all(), ops[ops > 0].to_dict()  # not a microsecond of op time elsewhere
    # the rest is the scopes' own Python time (~0.2 ms a step against ~10 ms of op time when the machine
    # is quiet); a share, not a bound, so that another job preempting the Python between ops cannot fail it
    assert ms[expected] > 0.5 * ms.sum(), ms.to_dict()


def test_backward_time_goes_to_the_forward_ops_category(known_splits):
    """Train step of the one-matmul model: both matmuls (forward, and the weight gradient in backward) are
    "latent", AdamW's element-wise ops "optimizer", the loss and its gradient "other"."""
    profiled = known_splits[("tests.profile_models:matmul_only", "train")]
    assert profiled.status == "ok", profiled.summary.get("reason")
    ops = profiled.ops
    mm = ops[ops["op"] == "aten::mm"]
    assert len(mm) == 2 and set(mm["category"]) == {"latent"}, mm[["input_shapes", "category"]].to_dict("records")
    adamw = ops[ops["op"].isin(["aten::lerp_", "aten::addcdiv_", "aten::addcmul_", "aten::sqrt"])]
    assert len(adamw) >= 3 and set(adamw["category"]) == {"optimizer"}
    loss = ops[ops["op"].isin(["aten::mse_loss", "aten::mse_loss_backward"])]
    assert set(loss["op"]) == {"aten::mse_loss", "aten::mse_loss_backward"} and set(loss["category"]) == {"other"}
    ms = profiled.categories.set_index("category")["ms_per_step"]
    assert ms[["attention", "qkv/proj", "mlp", "activation", "norm", "embed/conv"]].sum() == 0
