"""``python -m ae_models [WxH] [--latent N]``: parameter counts of every family and preset.

Models are built on the meta device, so even the flat layout at 1280x152 costs nothing to count.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .registry import FAMILIES, build_model
from .transformer import PRESETS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ae_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("size", nargs="?", default="201x201", help="input size WxH [default: 201x201]")
    parser.add_argument("--latent", type=int, default=512, help="latent dimension, 128..8192 [default: 512]")
    args = parser.parse_args(argv)
    print(f"parameters at {args.size}, latent {args.latent}")
    print(f"| preset | {' | '.join(FAMILIES)} |")
    print("|---|" + "---:|" * len(FAMILIES))
    for preset in PRESETS:
        counts = []
        for family in FAMILIES:
            try:
                with torch.device("meta"):
                    model = build_model(family, preset, args.size, latent_dim=args.latent)
                counts.append(f"{sum(p.numel() for p in model.parameters()):,}")
            except ValueError as err:
                counts.append(f"n/a ({err})")
        print(f"| {preset} | {' | '.join(counts)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
