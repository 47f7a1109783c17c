"""One benchmark per case of the selected matrix (see ``bench/conftest.py`` for the options)."""

import pytest


def test_speed(benchmark, ae_case, ae_session):
    benchmark.group = f"{ae_case.family}-{ae_case.size}-{ae_case.mode}"
    measurement = ae_session.measure(ae_case, benchmark)
    row = measurement.row
    benchmark.extra_info.update({k: v for k, v in row.items() if v not in (None, "")})
    if measurement.samples_s is not None:
        benchmark.extra_info["samples_ms"] = [round(s * 1e3, 6) for s in measurement.samples_s]
    if row["status"] in ("unsupported", "oom"):
        pytest.skip(f"{row['status']}: {row['reason']}")
    if row["status"] != "ok":
        pytest.fail(f"{row['status']}: {row['reason']}", pytrace=False)
