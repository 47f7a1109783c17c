"""The table of known GPUs (``data/gpus.toml``), read without torch: peaks per precision, bandwidth,
memory and compute capability, each entry with its source. The report's card model reads it, so it
must import nothing heavy; ``bench.trackers.device`` re-exports it for the measuring side."""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path
from typing import Optional

GPU_TABLE = Path(__file__).resolve().parents[1] / "data" / "gpus.toml"

# precision -> the dtype whose peak bounds it
PEAK_DTYPE = {"fp32": "fp32", "tf32": "tf32", "amp-fp16": "fp16", "fp16": "fp16", "amp-bf16": "bf16", "bf16": "bf16"}


@functools.lru_cache(maxsize=None)
def gpu_table() -> tuple[dict, ...]:
    return tuple(tomllib.loads(GPU_TABLE.read_text())["gpu"])


def lookup_gpu(name: str) -> Optional[dict]:
    """The table entry whose ``match`` pattern matches the whole of ``name`` (``re.fullmatch``, spaces
    around the name ignored), else ``None``: "NVIDIA GeForce RTX 4070 Ti" is not an RTX 4070, nor
    "NVIDIA H100 PCIe" an H100 SXM. Patterns are written to exclude each other; were two to match,
    the longest wins."""
    name = " ".join(name.split())
    hits = [g for g in gpu_table() if re.fullmatch(g["match"], name)]
    return max(hits, key=lambda g: len(g["match"])) if hits else None
