"""Facts about the models a run measured, written into its folder (``model_facts.json``) so that
the report reads them instead of building models: parameter counts per configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.core.cases import Case
from bench.runs.files import atomic_write_text

MODEL_FACTS_JSON = "model_facts.json"


def parameter_count(family: str, preset: str, size: str, latent: int) -> int:
    """Parameters of a model as defined, built on the meta device (no memory allocated)."""
    from ae_models import build_model

    overrides = {"latent_dim": latent} if latent else {}
    with torch.device("meta"):
        model = build_model(family, preset, size, **overrides)
    return sum(p.numel() for p in model.parameters())


def write_model_facts(run_dir: Path, cases: list[Case]) -> Path:
    configs = sorted({(c.family, c.preset, c.size, c.latent) for c in cases if not c.skip})
    facts = {"parameters": [{"family": f, "preset": p, "size": s, "latent": z, "params": parameter_count(f, p, s, z)}
                            for f, p, s, z in configs]}
    path = Path(run_dir) / MODEL_FACTS_JSON
    atomic_write_text(path, json.dumps(facts, indent=1) + "\n")
    return path
