"""``--shard K/N``: a deterministic split of a matrix's cases, balanced by their expected cost.

The split depends only on the set of case keys (and the cost each key implies), never on the
device, the order of expansion or the machine: N jobs that expand the same matrix with the same
options each take one part, the parts are disjoint and together they are the matrix. A case that
a device cannot run (``skip``) costs the same as any other here, because another shard's device
may run it, and the split must be the same everywhere.

The cost is a cheap estimate, not a measurement: a fixed part per case (build, warm-up, the
minimum timed seconds, the memory pass) plus the work of one step, pixels x batch x width²
(the preset's embedding width, or the CNN's channels) x the mode (train ~3x infer). Cases are
assigned greedily, the most expensive first (ties by key), each to the least-loaded shard
(ties to the lowest index): longest-processing-time-first list scheduling, which keeps every
shard within one case's cost of the mean.
"""

from __future__ import annotations

import heapq
import re
from typing import Sequence

from ae_models.catalog import CNN_PRESETS, PRESETS, is_transformer
from ae_models.sizes import parse_size

from bench.core.cases import Case

MAX_SHARDS = 4096
SHARD_HELP = ("run only part K of N of the selected cases (1 <= K <= N): a deterministic split by case key, balanced by "
              "expected cost, so N jobs or GPUs each take one part; merge their runs with `python -m bench merge`")

_MODE_FACTOR = {"infer": 1.0, "train": 3.0, "embed": 0.5}
_PLUGIN_WIDTH = 256  # a package.module:factory family: its size is unknown here
_REFERENCE = 201 * 201 * 8 * 128 ** 2  # a tiny transformer at 201x201, batch 8, infer: one unit of work
_FIXED = 1.0  # the part of a case that does not grow with its size (build, warm-up, min-time, memory pass)
_COMPILE = 8.0  # torch.compile's first step, in the same units


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


def case_cost(case: Case) -> float:
    """The expected cost of ``case`` in units of a tiny 201x201 batch-8 inference: deterministic, device-free."""
    h, w = parse_size(case.size)
    if ":" in case.family:
        width = _PLUGIN_WIDTH
    elif is_transformer(case.family):
        width = int(PRESETS[case.preset]["embed_dim"])
    else:
        width = 20 * int(CNN_PRESETS[case.preset]["base_channels"])  # convolutions at full resolution: tiny ~ a width of 160
    mode = _MODE_FACTOR.get(case.mode, 1.0) * (1.3 if case.checkpointing and case.mode == "train" else 1.0)
    work = h * w * case.batch * width ** 2 * mode / _REFERENCE
    return _FIXED + work + (_COMPILE if case.compile != "off" else 0.0)


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
