"""``model_facts.json``: what a run knows about its models without measuring them, and its reader.

``bench/core/model_probe.py`` computes the facts when a run starts (parameter counts, the flat
layout's attention probe, the attention-map figure ``plots/attention_maps.png``) and writes them;
the report reads them here, torch-free, and never builds a model. Tables of the file (lists of
entries keyed by family, preset, size ``WxH`` and latent; latent 0 is the preset's default):
``parameters``, ``flat_projections``, ``flat_attention_probe``; and ``attention_maps`` (which model
the figure shows, or why there is none) and ``not_computed`` (what failed to build, with the error).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

MODEL_FACTS_JSON = "model_facts.json"
ATTENTION_MAPS_PNG = "plots/attention_maps.png"
FORMAT = 1
REGENERATE = "python -m bench.core.model_probe"  # the command that writes the file for a run already on disk
PRESET_ORDER = ("tiny", "small", "medium", "large", "xlarge")  # smallest first


@dataclass
class ModelFacts:
    """A run's ``model_facts.json``; ``data`` empty when the run has none (every lookup is then None)."""

    data: dict = field(default_factory=dict)
    path: Optional[Path] = None  # the file read; None when the run has none
    hint: str = f"write it with `{REGENERATE} RUN_DIR`"  # how to get the facts, for a report's "missing" line

    def _find(self, table: str, **key: Any) -> Optional[dict]:
        for entry in self.data.get(table) or []:
            if all(entry.get(k) == v for k, v in key.items()):
                return entry
        return None

    def params(self, family: str, preset: str, size: str, latent: int) -> Optional[int]:
        entry = self._find("parameters", family=family, preset=preset, size=size, latent=int(latent))
        return None if entry is None else int(entry["params"])

    def flat_projections(self, preset: str, size: str, latent: int) -> Optional[int]:
        entry = self._find("flat_projections", preset=preset, size=size, latent=int(latent))
        return None if entry is None else int(entry["params"])

    def flat_probe(self, preset: str, size: str, latent: int) -> Optional[dict]:
        return self._find("flat_attention_probe", preset=preset, size=size, latent=int(latent))

    @property
    def attention_maps(self) -> Optional[dict]:
        return self.data.get("attention_maps")

    def lacks(self, what: str) -> str:
        """Why ``what`` is not among the facts: no file, or a file without it."""
        return f"{MODEL_FACTS_JSON} has no {what}" if self.path else f"the run has no {MODEL_FACTS_JSON}"

    def missing(self, what: str) -> str:
        """A report's line for a fact it cannot show: what is missing, and how to compute it."""
        return f"{what} not computed: {self.lacks(what)}; {self.hint}"


def read_model_facts(folder: Path) -> Optional[ModelFacts]:
    """``folder/model_facts.json``, or None when absent. Raises ValueError (one line) when corrupt."""
    path = Path(folder) / MODEL_FACTS_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupt): {err}; rewrite it with "
                         f"`{REGENERATE} {path.parent}`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a model facts file of format {FORMAT}; rewrite it with `{REGENERATE} {path.parent}`")
    return ModelFacts(data, path, f"write it with `{REGENERATE} {path.parent}`")
