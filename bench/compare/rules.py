"""The regression check's thresholds: defaults (``bench/compare/stats.py``), a TOML config's
``[defaults]`` and ``[[group]]`` tables (per-case limits matched by fnmatch pattern on case id or
key), and the command line's values over the defaults.

    [defaults]
    time = "10%"            # a fraction (0.1) or a percentage
    memory = 0.05
    memory_floor_mib = 2
    max_spread = "10%"

    [[group]]
    match = ["transformer-xlarge-*"]
    time = "20%"            # or ignore = true
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from bench.compare import stats as st


@dataclass(frozen=True)
class Thresholds:
    """A case's limits: relative time and memory growth (fractions), the memory floor (MiB), and
    the within-run spread (IQR / median) above which a run's time cannot support a verdict."""

    time: float = st.TIME_THRESHOLD
    memory: float = st.MEMORY_THRESHOLD
    memory_floor_mib: float = st.MEMORY_FLOOR_MIB
    max_spread: float = st.MAX_SPREAD
    ignore: bool = False


_NUMERIC_KEYS = ("time", "memory", "memory_floor_mib", "max_spread")


@dataclass
class Rules:
    """Thresholds per case: the defaults, overridden by the first ``[[group]]`` whose pattern matches."""

    default: Thresholds = field(default_factory=Thresholds)
    groups: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)

    def for_case(self, case_id: str, case_key: str) -> Thresholds:
        for patterns, overrides in self.groups:
            if any(fnmatch.fnmatchcase(case_id, p) or fnmatch.fnmatchcase(case_key, p) for p in patterns):
                return replace(self.default, **overrides)
        return self.default


def load_rules(path: Optional[Path], cli: dict[str, Optional[float]]) -> Rules:
    """Thresholds from a TOML file (``[defaults]`` and ``[[group]]`` tables), then the command
    line's values over the defaults; groups still override both for their cases."""
    defaults: dict[str, Any] = {}
    groups: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"config {path} is not valid TOML: {err}") from None
        unknown = sorted(set(data) - {"defaults", "group"})
        if unknown:
            raise ValueError(f"config {path}: unknown table(s) {', '.join(unknown)}; expected [defaults] and [[group]]")
        defaults = _threshold_values(data.get("defaults", {}), f"config {path} [defaults]", allow=_NUMERIC_KEYS)
        raw_groups = data.get("group", [])
        if not isinstance(raw_groups, list):
            raise ValueError(f"config {path}: 'group' must be [[group]] tables")
        for i, group in enumerate(raw_groups, 1):
            where = f"config {path} group {i}"
            if not isinstance(group, dict) or "match" not in group:
                raise ValueError(f"{where}: needs match = \"pattern\" or a list of patterns (fnmatch on case id or key)")
            patterns = group["match"] if isinstance(group["match"], list) else [group["match"]]
            if not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise ValueError(f"{where}: match must be a non-empty string or list of strings")
            rest = {k: v for k, v in group.items() if k != "match"}
            groups.append((tuple(patterns), _threshold_values(rest, where, allow=_NUMERIC_KEYS + ("ignore",))))
    defaults.update({k: v for k, v in cli.items() if v is not None})
    return Rules(Thresholds(**defaults), groups)


def _threshold_values(table: Any, where: str, allow: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(allow))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allow)}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "ignore":
            if not isinstance(value, bool):
                raise ValueError(f"{where}: ignore must be true or false")
            out[key] = value
        else:
            out[key] = parse_fraction(value, f"{where} {key}") if key != "memory_floor_mib" else non_negative(value, where)
    return out


MAX_MEMORY_FLOOR_MIB = 1024.0 * 1024  # 1 TiB: more than any device holds; a floor above it (inf, 1e300) judges nothing


def non_negative(value: Any, where: str) -> float:
    """A memory floor in MiB: finite, >= 0 and at most 1 TiB (nan, inf or 1e300 would turn every growth into a pass)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_MEMORY_FLOOR_MIB:
        raise ValueError(f"{where}: memory_floor_mib must be a number of MiB from 0 to {MAX_MEMORY_FLOOR_MIB:g} (1 TiB), "
                         f"got {value!r}")
    return float(value)


def parse_fraction(value: Any, what: str) -> float:
    """``"10%"``, ``10%``-style strings or fractions (``0.1``) -> 0.1; rejects the rest with one line."""
    text = str(value).strip()
    try:
        out = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"bad {what} {value!r}: expected a fraction such as 0.1 or a percentage such as 10%") from None
    if isinstance(value, bool) or not 0 < out < 10 or not math.isfinite(out):
        raise ValueError(f"bad {what} {value!r}: expected a fraction above 0 (0.1) or a percentage (10%)")
    return out
