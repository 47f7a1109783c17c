"""Property-based tests: no input makes a parser fail with anything but its documented ValueError."""

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from ae_models import parse_size
from bench.core.cases import AXES, parse_axis_values, parse_matrix

TEXT = st.text(alphabet=string.printable + "×é\u00a0", max_size=30)
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)


@SETTINGS
@given(TEXT)
def test_parse_size_accepts_only_w_x_h_and_otherwise_raises_value_error(text):
    try:
        height, width = parse_size(text)
    except ValueError as err:
        assert repr(text) in str(err) or "positive" in str(err)
    else:
        assert height > 0 and width > 0
        assert parse_size(f"{width}x{height}") == (height, width)


@SETTINGS
@given(st.integers(min_value=1, max_value=100000), st.integers(min_value=1, max_value=100000))
def test_parse_size_round_trips_width_by_height(width, height):
    assert parse_size(f"{width}x{height}") == (height, width)


@SETTINGS
@given(st.sampled_from(sorted(AXES)), TEXT)
def test_axis_option_parser_raises_only_value_error(axis, text):
    try:
        values = parse_axis_values(axis, text)
    except ValueError:
        return
    assert values and isinstance(values, list)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["group", "timing", "description", "other"]), JSONISH, max_size=3))
def test_matrix_parser_raises_only_value_error_on_any_toml_shaped_data(data):
    try:
        matrix = parse_matrix(data)
    except ValueError:
        return
    assert matrix.groups


@SETTINGS
@given(st.lists(st.dictionaries(st.sampled_from(sorted(AXES)), st.lists(JSONISH, min_size=1, max_size=3), max_size=3),
                min_size=1, max_size=2))
def test_matrix_expansion_raises_only_value_error_on_bad_axis_values(groups):
    from bench.core.cases import expand

    try:
        cases = expand(parse_matrix({"group": groups}))
    except ValueError:
        return
    assert all(case.key for case in cases)
