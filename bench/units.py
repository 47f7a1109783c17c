"""Memory sizes as people write them: ``8GiB``, ``8192MiB``, ``8GB``, ``8 GiB``, ``1.5GiB``.

Binary units are powers of 2^10: ``KiB`` = 2^10, ``MiB`` = 2^20, ``GiB`` = 2^30, ``TiB`` = 2^40 bytes.
Decimal units are powers of 10^3: ``KB`` = 10^3, ``MB`` = 10^6, ``GB`` = 10^9, ``TB`` = 10^12 bytes.
``B`` is a byte. Units are read case-insensitively (``8gib`` is ``8GiB``; ``b`` is never a bit), a
space between number and unit is allowed, and ``0`` needs no unit. So ``8GiB`` is 8589934592 bytes
and ``8GB`` is 8000000000 bytes (7.45 GiB): a card sold as "8 GB" has 8 GiB, so write ``8GiB``.

Anything else (a negative size, an unknown unit, a bare number other than 0, an empty string)
raises ``ValueError`` naming the value and the accepted forms.
"""

from __future__ import annotations

import math
import re

MIB = 2**20
GIB = 2**30

UNITS = {
    "b": 1,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}
ACCEPTED = ("a number and a unit: B; KiB, MiB, GiB, TiB (powers of 1024); KB, MB, GB, TB (powers of 1000), "
            "e.g. 8GiB, 8192MiB, 8GB, '8 GiB', 1.5GiB; or 0")

_SIZE_RE = re.compile(r"^\s*(?P<number>[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)\s*(?P<unit>[A-Za-z]*)\s*$")


MAX_BYTES = 2**50  # 1 PiB: a size beyond this is a typo (1e300TiB), not a card


def parse_bytes(text: object, option: str = "") -> int:
    """``"8GiB"`` -> 8589934592. Fractions of a byte are dropped (``1.5KiB`` -> 1536).

    ``option`` (``"--budget"``) starts the error message, so a user reads which value was refused.
    """
    where = f"{option}: " if option else ""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{where}bad memory size {text!r}: expected {ACCEPTED}")
    raw = str(text)
    match = _SIZE_RE.match(raw)
    if not match:
        raise ValueError(f"{where}bad memory size {raw!r}: expected {ACCEPTED}")
    number = float(match.group("number"))
    unit = match.group("unit").lower()
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{where}bad memory size {raw!r}: a size cannot be negative; expected {ACCEPTED}")
    if not unit:
        if number == 0:
            return 0
        raise ValueError(f"{where}bad memory size {raw!r}: the unit is missing (GiB or GB?); expected {ACCEPTED}")
    if unit not in UNITS:
        raise ValueError(f"{where}bad memory size {raw!r}: unknown unit {match.group('unit')!r}; expected {ACCEPTED}")
    size = number * UNITS[unit]
    if size > MAX_BYTES:
        raise ValueError(f"{where}bad memory size {raw!r}: larger than any machine ({format_bytes(MAX_BYTES)}); expected {ACCEPTED}")
    return int(size)


def format_bytes(n: float) -> str:
    """Human form in binary units: ``8.00 GiB``, ``512 MiB``."""
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    if n >= MIB:
        return f"{n / MIB:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


def mib(n: float) -> float:
    return n / MIB
