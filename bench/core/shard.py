"""``--shard K/N``: a deterministic split of a matrix's cases, balanced by their expected cost.

The split depends only on the set of case keys (and the cost each key implies), never on the
device, the order of expansion or the machine: N jobs that expand the same matrix with the same
options each take one part, the parts are disjoint and together they are the matrix. A case that
a device cannot run (``skip``) costs the same as any other here, because another shard's device
may run it, and the split must be the same everywhere.

The cost is a cheap estimate, not a measurement (``bench/core/cost.py``: a fixed part per case plus
the work of one step, pixels x batch x width² x the mode). Cases are
assigned greedily, the most expensive first (ties by key), each to the least-loaded shard
(ties to the lowest index): longest-processing-time-first list scheduling, which keeps every
shard within one case's cost of the mean.
"""

from __future__ import annotations

import heapq
import re
from typing import Sequence

from bench.core.cases import Case
from bench.core.cost import case_cost  # the one cost estimate: the split here, the ETA of a run's progress line

MAX_SHARDS = 4096
SHARD_HELP = ("run only part K of N of the selected cases (1 <= K <= N): a deterministic split by case key, balanced by "
              "expected cost, so N jobs or GPUs each take one part; merge their runs with `python -m bench merge`")

def parse_shard(text: str, option: str = "--shard") -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; ValueError in one line naming the option otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"{option}: bad shard {text!r}: expected K/N, part K of N (1 <= K <= N), e.g. 2/4")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= n <= MAX_SHARDS:
        raise ValueError(f"{option}: bad shard {text!r}: N must be 1..{MAX_SHARDS}")
    if not 1 <= k <= n:
        raise ValueError(f"{option}: bad shard {text!r}: K must be 1..{n} (parts are numbered from 1), e.g. 1/{n}")
    return k, n


def assign(cases: Sequence[Case], n: int) -> list[list[Case]]:
    """The N parts of ``cases``, each in the cases' own order. Raises ValueError on duplicate keys."""
    keys = [c.key for c in cases]
    if len(set(keys)) != len(keys):
        raise ValueError("the selection holds a case twice: a split by case key needs unique keys")
    heap = [(0.0, i) for i in range(n)]  # (load, part): the least loaded first, the lowest index on a tie
    part_of: dict[str, int] = {}
    for cost, key in sorted(((case_cost(c), c.key) for c in cases), key=lambda item: (-item[0], item[1])):
        load, least = heapq.heappop(heap)
        part_of[key] = least
        heapq.heappush(heap, (load + cost, least))
    parts: list[list[Case]] = [[] for _ in range(n)]
    for case in cases:
        parts[part_of[case.key]].append(case)
    return parts


def take_shard(cases: Sequence[Case], text: str, option: str = "--shard") -> list[Case]:
    """Part K of N (``text`` is ``K/N``) of ``cases``; ValueError when that part is empty."""
    k, n = parse_shard(text, option)
    part = assign(cases, n)[k - 1]
    if not part:
        raise ValueError(f"{option} {k}/{n}: this part is empty: the selection has only {len(cases)} case(s), fewer "
                         f"than {n} shards; use at most {len(cases)} shards")
    return part


def shard_loads(cases: Sequence[Case], n: int) -> list[tuple[int, float]]:
    """Per part: how many cases and their summed expected cost (for ``--list`` and the tests)."""
    return [(len(part), sum(case_cost(c) for c in part)) for part in assign(cases, n)]


def shard_of_command(command: object) -> str:
    """``"2/4"`` from a run's recorded command line (``--shard 2/4``, ``--ae-shard=2/4``); "" when unsharded."""
    match = re.search(r"--(?:ae-)?shard[= ]'?(\d+/\d+)", str(command or ""))
    return match.group(1) if match else ""
