"""The report is built by one function per section of report_template.md, named after it and in its order
(bench/report/sections.py:SECTIONS)."""

from __future__ import annotations

import re
from pathlib import Path

from bench.report.defaults import DEFAULT_TEMPLATE
from bench.report.sections import SECTIONS

TEMPLATE = Path(DEFAULT_TEMPLATE)


def headings(text: str) -> list[str]:
    """The template's ``## `` headings, as lower-case words (numbers, punctuation and Jinja dropped)."""
    out = []
    for line in text.splitlines():
        if line.startswith("## "):
            title = re.sub(r"{{.*?}}", " ", line[3:]).lower()
            out.append(" ".join(w for w in re.split(r"[^a-z]+", title) if w))
    return out


def names_the_heading(function: str, heading: str) -> bool:
    """``seed_claims_checked`` names "the seed s claims checked": its words, in order, within the heading's."""
    words = iter(heading.split())
    return all(any(w == h for h in words) for w in function.removesuffix("_section").split("_"))


def mismatches(functions: list[str], text: str) -> list[tuple[str, str]]:
    titles = headings(text)
    pairs = list(zip(functions, titles))
    bad = [(f, t) for f, t in pairs if not names_the_heading(f, t)]
    if len(functions) != len(titles):
        bad.append((f"{len(functions)} section functions", f"{len(titles)} headings"))
    return bad


def test_one_section_function_per_heading_in_the_templates_order():
    assert SECTIONS[0].__name__ == "heading"  # the lines above section 1
    assert not mismatches([f.__name__ for f in SECTIONS[1:]], TEMPLATE.read_text())


def test_a_section_out_of_order_is_caught():
    names = [f.__name__ for f in SECTIONS[1:]]
    names[1], names[2] = names[2], names[1]
    assert mismatches(names, TEMPLATE.read_text())
    assert mismatches([f.__name__ for f in SECTIONS[1:-1]], TEMPLATE.read_text())  # a heading without its function


def test_every_file_the_report_names_exists():
    """A path the report's code writes into report.md (``bench/data/seed_claims.toml``, ...) names a file that is there."""
    import ast

    repo = TEMPLATE.parents[2]
    named = {node.value for path in (repo / "bench" / "report").glob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"bench/[\w/]+\.(py|toml|md)", node.value)}
    assert named and not sorted(p for p in named if not (repo / p).is_file())


def test_the_parameter_ratio_is_given_per_input_size_never_pooled_over_sizes():
    """The CNN's parameters change with the input size and the transformer's do not change with the kernel: the
    ratio is per (model, size). Pooled over sizes (the old kernel table's column) a kernel that ran no 1280x152
    case read 1.39× where another read 0.90×."""
    import pandas as pd

    from bench.report.sections import params_by_size

    pairs = pd.DataFrame([
        {"family": "transformer", "preset": "tiny", "size": "201x201", "attention": kernel, "params_ratio": 1.87}
        for kernel in ("flash", "eager")] + [
        {"family": "transformer", "preset": "tiny", "size": "1280x152", "attention": kernel, "params_ratio": 0.90}
        for kernel in ("flash", "eager", "eager")])
    (line,) = params_by_size(pairs)
    assert line.endswith("transformer tiny: 1.87× at 201x201, 0.90× at 1280x152"), line
    assert params_by_size(pairs.iloc[0:0]) == []
