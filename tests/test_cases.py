"""Cases and matrices: expansion, validity rules, ids and keys, bad input."""

import dataclasses

import pytest

from bench.core.cases import Case, expand, load_matrix, parse_axis_values, parse_matrix, why_skip
from bench.trackers.device import DeviceFacts

CPU = DeviceFacts(type="cpu", name="test cpu")


def test_quick_matrix_expands_to_both_families_three_sizes_and_every_axis():
    cases = expand(load_matrix("quick"), device=CPU)
    compiled = [c for c in cases if c.compile != "off"]
    # torch.compile on one small transformer case (the main job stays under 5 minutes)
    assert [c.id for c in compiled] == ["transformer-tiny-201x201-fp32-flash-compile-default-infer-b4"]
    cases = [c for c in cases if c.compile == "off"]
    transformer = [c for c in cases if c.family == "transformer"]
    cnn = [c for c in cases if c.family == "cnn"]
    # at batch 4: infer 2 sizes x 2 precisions x 3 kernels + 1280x152 x 2 x 2 (no math); train the same x 2
    # checkpointing; then the batch sweep (201x201, fp32, flash, infer and train, batch 1, 2, 8)
    assert len([c for c in transformer if c.batch == 4]) == 12 + 4 + 24 + 8
    assert sorted((c.mode, c.batch) for c in transformer if c.batch != 4) == [
        ("infer", 1), ("infer", 2), ("infer", 8), ("train", 1), ("train", 2), ("train", 8)]
    assert not any(c.checkpointing for c in transformer if c.mode == "infer")  # a backward pass only
    assert not any(c.attention == "math" for c in transformer if c.size == "1280x152")
    # the CNN has no attention and no block checkpointing: those axes collapse, 3 sizes x 2 x 2, plus its sweep
    assert len(cnn) == 12 + 6
    assert {c.attention for c in cnn} == {"none"} and not any(c.checkpointing for c in cnn)
    assert {c.size for c in cases} == {"201x201", "1280x152", "640x152"}
    assert not any(c.skip for c in cases)


def test_groups_are_a_union_without_duplicates():
    matrix = parse_matrix({"group": [{"presets": ["tiny"], "batch": [2]}, {"presets": ["tiny", "small"], "batch": [2]}]})
    assert [c.preset for c in expand(matrix)] == ["tiny", "small"]


def test_overrides_replace_an_axis_in_every_group():
    cases = expand(load_matrix("quick"), {"sizes": ["2000x152"], "modes": ["train"]}, CPU)
    assert {c.size for c in cases} == {"2000x152"} and {c.mode for c in cases} == {"train"}


def test_fp16_and_tf32_on_cpu_are_kept_as_skipped_cases_with_a_reason():
    matrix = parse_matrix({"group": [{"precisions": ["fp32", "amp-fp16", "fp16", "tf32"]}]})
    cases = {c.precision: c for c in expand(matrix, device=CPU)}
    assert cases["fp32"].skip is None
    assert "fp16 on CPU" in cases["amp-fp16"].skip and "fp16 on CPU" in cases["fp16"].skip
    assert "tf32" in cases["tf32"].skip


def test_mem_efficient_and_cudnn_have_no_cpu_kernel():
    for kernel in ("mem-efficient", "cudnn"):
        assert "no CPU kernel" in why_skip(Case(attention=kernel), CPU)
    assert why_skip(Case(attention="flash"), CPU) is None


def test_case_id_is_readable_and_key_is_complete():
    case = Case(family="transformer", preset="small", size="1280x152", precision="amp-bf16", attention="flash",
                checkpointing=True, mode="train", batch=16)
    assert case.id == "transformer-small-1280x152-amp-bf16-flash-ckpt-train-b16"
    assert case.key == "transformer-small-1280x152-zdef-amp-bf16-flash-ckpt-compile-off-train-b16"
    assert Case(family="cnn", attention="none").id == "cnn-tiny-201x201-fp32-infer-b8"


def test_skip_reason_does_not_change_identity():
    case = Case()
    assert dataclasses.replace(case, skip="why").key == case.key


def test_sizes_are_normalised_and_read_as_width_by_height():
    cases = expand(parse_matrix({"group": [{"sizes": ["1280X152"]}]}))
    assert cases[0].size == "1280x152" and cases[0].hw == (152, 1280)


@pytest.mark.parametrize("fields, message", [
    ({"family": "rnn"}, "unknown family 'rnn'"),
    ({"preset": "huge"}, "unknown preset 'huge'"),
    ({"size": "1280x"}, "bad image size '1280x'"),
    ({"size": "0x152"}, "positive"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"attention": "sparse"}, "unknown attention 'sparse'"),
    ({"mode": "serve"}, "unknown mode 'serve'"),
    ({"batch": 0}, "bad batch size 0"),
    ({"latent": 64}, "bad latent 64"),
])
def test_bad_case_fields_raise_value_error_naming_the_value(fields, message):
    with pytest.raises(ValueError, match=message):
        Case(**fields)


def test_unknown_matrix_names_the_choices():
    with pytest.raises(ValueError, match="unknown matrix 'nope'; choose from auto, .*quick.*smoke"):
        load_matrix("nope")


def test_auto_matrix_is_quick_on_cpu_and_default_on_gpu():
    assert load_matrix("auto", "cpu").name == "quick"
    assert load_matrix("auto", "cuda").name == "default"


@pytest.mark.parametrize("data, message", [
    ({}, "one or more \\[\\[group\\]\\]"),
    ({"group": [{"colours": ["red"]}]}, "unknown axis colours"),
    ({"group": [{"presets": "tiny"}]}, "needs a non-empty list"),
    ({"group": [{"presets": []}]}, "needs a non-empty list"),
])
def test_malformed_matrix_files_raise(data, message):
    with pytest.raises(ValueError, match=message):
        parse_matrix(data)


def test_matrix_file_that_is_not_toml_is_reported(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[[group]\npresets = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_matrix(str(path))


@pytest.mark.parametrize("axis, text, expected", [
    ("batch", "8, 16", [8, 16]),
    ("checkpointing", "on,off", [True, False]),
    ("sizes", "1280x152,201x201", ["1280x152", "201x201"]),
    ("presets", "tiny", ["tiny"]),
])
def test_axis_option_values_are_parsed(axis, text, expected):
    assert parse_axis_values(axis, text) == expected


@pytest.mark.parametrize("axis, text, message", [
    ("batch", "eight", "bad batch value 'eight'"),
    ("checkpointing", "maybe", "bad checkpointing value"),
    ("sizes", "1280x", "bad image size"),
    ("batch", " , ", "empty value"),
])
def test_bad_axis_option_values_raise(axis, text, message):
    with pytest.raises(ValueError, match=message):
        parse_axis_values(axis, text)
