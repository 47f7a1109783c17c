"""Facts about the models under test, computed when a run starts and written into its folder, so
that the report reads them instead of building models (it never imports ``ae_models``).

``model_facts.json`` holds:

- ``parameters``: the parameter count of every configuration (family, preset, size ``WxH``,
  latent; latent 0 is the preset's default, and a file written from ``results.csv`` has the latent
  as built) of the run's cases and of the seed's claims
  (``bench/data/seed_claims.toml``: its parameter table and the flat layout at its wide size),
  built on the meta device (no memory, no time);
- ``flat_projections``: the flat layout's two pixel projections, ``Linear(H*W, latent)`` and back;
- ``flat_attention_probe``: a small seeded flat model's attention maps (shape, distinct values)
  and, after one backward pass, the gradient norms of W_q and W_k against W_v;
- ``attention_maps``: which untrained model ``plots/attention_maps.png`` shows (the smallest
  patch-transformer preset of the run), or why there is no figure;
- ``not_computed``: anything that failed to build, with the error.

A run written before this file existed gets one by an explicit step (the report never builds it):

    python -m bench.core.model_probe RUN_DIR    # from RUN_DIR/results.csv; rewrites the two files

The file's format and its torch-free reader are ``bench/runs/model_facts.py``; here, only the
functions that compute facts import torch and ``ae_models`` (inside them), so importing this
module stays cheap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from bench.runs.files import atomic_write_bytes, atomic_write_text
from bench.runs.model_facts import ATTENTION_MAPS_PNG, FORMAT, MODEL_FACTS_JSON, PRESET_ORDER, REGENERATE
from bench.runs.seed_claims import load_claims

if TYPE_CHECKING:
    from bench.core.cases import Case

SEED = 0  # the probe's and the figure's weights: the same every time
DPI = 100

Config = tuple[str, str, str, int]  # (family, preset, size WxH, latent; 0 = the preset's default)


# -- computing (builds models) --------------------------------------------------------------------

def parameter_count(family: str, preset: str, size: str, latent: int) -> int:
    """Parameters of a model as defined, built on the meta device (no memory allocated)."""
    import torch

    from ae_models import build_model

    overrides = {"latent_dim": int(latent)} if latent else {}
    with torch.device("meta"):
        model = build_model(family, preset, size, **overrides)
    return sum(p.numel() for p in model.parameters())


def flat_projection_count(preset: str, size: str, latent: int) -> int:
    """Parameters of the flat layout's two pixel projections, Linear(H*W, latent) and Linear(latent, H*W)."""
    import torch

    from ae_models import build_model

    with torch.device("meta"):
        model = build_model("transformer-flat", preset, size, latent_dim=int(latent))
    return sum(p.numel() for m in (model.input_proj, model.output_proj) for p in m.parameters())


def flat_attention_probe(preset: str, size: str, latent: int, seed: int = SEED) -> dict:
    """Build a small flat model (seeded), take its attention maps and one backward pass.

    With one token, softmax of the single score is 1: attention returns V whatever W_q and W_k
    are, so their gradients are exactly zero. Runs on the CPU in about a second.
    """
    import torch

    from ae_models import build_model, parse_size

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("transformer-flat", preset, size, latent_dim=int(latent), attention="eager")
        h, w = parse_size(size)
        x = torch.rand(2, 1, h, w)
        maps = model.get_attention_maps(x)
        recon, _ = model(x)
        ((recon - x) ** 2).mean().backward()
    first = maps["layer_0"]
    qk = v = 0.0
    for stack in (model.encoder, model.decoder):
        for block in stack.blocks:
            grad = block.attn.qkv.weight.grad  # rows: q (width), k (width), v (width)
            width = grad.shape[0] // 3
            qk += float(grad[: 2 * width].norm())
            v += float(grad[2 * width:].norm())
    return {"preset": preset, "size": size, "latent": int(latent), "seed": seed, "map_shape": list(first.shape),
            "map_values": sorted({round(float(t), 6) for t in first.flatten()}), "qk_grad_norm": qk, "v_grad_norm": v}


def synthetic_image(h: int, w: int):
    """A deterministic synthetic image ``(1, 1, H, W)`` in [0, 1]: a bright blob, a ring and
    vertical stripes, so that neighbouring patches differ."""
    import torch

    ys = torch.linspace(0, 1, h)[:, None].expand(h, w)
    xs = torch.linspace(0, 1, w)[None, :].expand(h, w)
    aspect = w / h
    blob = torch.exp(-(((xs - 0.3) * aspect) ** 2 + (ys - 0.4) ** 2) / 0.02)
    radius = torch.sqrt(((xs - 0.7) * aspect) ** 2 + (ys - 0.6) ** 2)
    ring = torch.exp(-((radius - 0.25) ** 2) / 0.002)
    stripes = 0.25 * (1 + torch.sin(xs * w / 8))
    img = blob + ring + stripes
    return (img / img.max())[None, None]


def query_patch(h: int, w: int, grid: tuple[int, int]) -> int:
    """The token under the test image's blob (see :func:`synthetic_image`), row-major in ``grid``."""
    gh, gw = grid
    return min(int(0.4 * gh), gh - 1) * gw + min(int(0.3 * gw), gw - 1)


def attention_maps_figure(family: str, preset: str, size: str, latent: int, seed: int = SEED) -> tuple[Optional[bytes], int]:
    """For one untrained model (weights from ``seed``), what the patch under the test image's blob
    attends to, per layer and averaged, drawn over the token grid: (PNG bytes or None for a
    single-token model, the latent the model was built with)."""
    import io

    import torch

    from ae_models import build_model, parse_size

    h, w = parse_size(size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        overrides = {"latent_dim": int(latent)} if latent else {}
        model = build_model(family, preset, size, **overrides).eval()
        image = synthetic_image(h, w)
        maps = model.get_attention_maps(image)
    latent = int(model.get_config().get("latent_dim", latent))
    grid = maps.grid_size
    if grid[0] * grid[1] < 2:
        return None, latent
    query = query_patch(h, w, grid)
    names = [k for k in maps if k.startswith("layer_")] + ["average"]
    weights = {name: maps[name][0, query].reshape(grid).numpy() for name in names}
    qy, qx = divmod(query, grid[1])
    fig = draw_attention_maps(image[0, 0].numpy(), weights, (qy, qx, grid),
                              f"Attention of an untrained {family}-{preset} (latent {latent:g}, weights from seed {seed}) "
                              f"on a synthetic image: the mechanism, not learned features (computed on the CPU)", size)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue(), latent


MIN_SPAN = 2.0  # the colour scale spans at least 1/2..2x uniform: a map within a few % of uniform reads as flat


def attention_scale(weights: dict) -> float:
    """The shared colour scale's reach ``k``: every map is drawn as weight / uniform (1 / tokens) on a log
    scale from 1/k to k, the same for every panel, with ``k`` the largest ratio any map reaches (either
    way) and at least :data:`MIN_SPAN`, so near-uniform attention looks near-uniform."""
    import numpy as np

    reach = MIN_SPAN
    for values in weights.values():
        ratio = np.asarray(values, dtype=float) * values.size
        ratio = ratio[ratio > 0]
        if ratio.size:
            reach = max(reach, float(ratio.max()), float(1 / ratio.min()))
    return reach


def draw_attention_maps(image, weights: dict, query: tuple[int, int, tuple[int, int]], title: str, size: str):
    """The figure: the test image with the query patch boxed, then one panel per map (``weights``: name ->
    the query's weights over the token grid) on one shared diverging colour scale relative to uniform
    (:func:`attention_scale`), with one colour bar for all of them, beside the panels (constrained layout:
    nothing overlaps)."""
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter

    h, w = image.shape
    qy, qx, grid = query
    wide = w / h > 2
    panels = len(weights) + 1
    fig = Figure(figsize=(12, 1.5 * panels + 1.2) if wide else (2.9 * panels + 1.2, 3.6), layout="constrained")
    axes = list(fig.subplots(panels, 1) if wide else fig.subplots(1, panels))
    axes[0].imshow(image, cmap="gray", extent=(0, w, h, 0))
    ph, pw = h / grid[0], w / grid[1]
    axes[0].add_patch(Rectangle((qx * pw, qy * ph), pw, ph, fill=False, edgecolor="red", linewidth=1.5))
    axes[0].set_title(f"test image {size} (query patch boxed)", fontsize=8)
    reach = attention_scale(weights)
    norm = LogNorm(vmin=1 / reach, vmax=reach)
    image_drawn = None
    for ax, (name, values) in zip(axes[1:], weights.items()):
        ratio = np.asarray(values, dtype=float) * values.size
        image_drawn = ax.imshow(np.clip(ratio, 1 / reach, reach), cmap="RdBu_r", norm=norm, extent=(0, w, h, 0))
        ax.set_title(f"{name}: {ratio.min():.3g}-{ratio.max():.3g}× uniform", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image_drawn, ax=axes[1:], orientation="vertical" if not wide else "horizontal",
                       fraction=0.05 if not wide else 0.04, shrink=0.9)
    ticks = [t for t in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8) if 1 / reach <= t <= reach]
    bar.set_ticks(ticks)
    bar.ax.minorticks_off()
    bar.formatter = FuncFormatter(lambda v, _: f"{v:g}×")
    bar.set_label("weight ÷ uniform (1 / tokens); one scale for every map", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def is_plugin(family: str) -> bool:
    """A ``package.module:factory`` family: code of the user's, not of ae_models."""
    return ":" in family


def attention_model(configs: Iterable[Config]) -> Optional[Config]:
    """The smallest patch-transformer preset of ``configs``, at the first size and latent it has."""
    patch = [c for c in configs if c[0] == "transformer"]
    if not patch:
        return None
    return min(patch, key=lambda c: PRESET_ORDER.index(c[1]) if c[1] in PRESET_ORDER else len(PRESET_ORDER))


def claim_configs(claims: dict) -> tuple[list[Config], list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """What the seed's claims need: (parameter counts, flat projections, flat probes)."""
    counts = claims["parameter_counts"]
    params = [(family, row["preset"], counts["size"], int(counts["latent"])) for row in counts["row"]
              for family in counts["families"]]
    flat = claims["flat_layout"]
    params.append((flat["family"], flat["preset"], flat["size"], int(flat["latent"])))
    projections = [(flat["preset"], flat["size"], int(flat["latent"]))]
    probes = [(flat["probe_preset"], flat["probe_size"], int(flat["probe_latent"]))]
    return params, projections, probes


def compute_model_facts(configs: list[Config], figure_from: list[Config]) -> tuple[dict, Optional[bytes]]:
    """The facts of ``configs`` and the seed's claims, and the attention figure of the smallest
    patch transformer of ``figure_from``. A configuration that fails to build is listed in
    ``not_computed``, never raised: facts must not stop a run."""
    import torch

    facts: dict[str, Any] = {"format": FORMAT, "about": "computed from the model definitions, not measured (see "
                             "bench/core/model_probe.py)", "torch": torch.__version__, "parameters": [],
                             "flat_projections": [], "flat_attention_probe": [], "attention_maps": None, "not_computed": []}

    from bench.core.runner import no_process_exit

    def attempt(what: str, compute):
        try:
            with no_process_exit():  # a factory's os._exit raises here, as in a case: the run lives on
                return compute()
        except (Exception, SystemExit) as err:  # noqa: BLE001 - a model that cannot be built is a fact too, not a crash
            facts["not_computed"].append({"what": what, "error": f"{type(err).__name__}: {err}"})
            return None

    needed = attempt("the seed's claims", lambda: claim_configs(load_claims(need=("parameter_counts", "flat_layout"))))
    claim_params, projections, probes = needed or ([], [], [])
    for family, preset, size, latent in dict.fromkeys(list(configs) + claim_params):
        if is_plugin(family):  # user code: built only in a case, under the case timeout (it may hang or exit)
            facts["not_computed"].append({"what": f"parameters of {family}-{preset} at {size}, latent {latent}",
                                          "error": "a plug-in model is built only where its case runs, never in the "
                                                   "run's own process (its factory could hang or end the process)"})
            continue
        n = attempt(f"parameters of {family}-{preset} at {size}, latent {latent}",
                    lambda: parameter_count(family, preset, size, latent))
        if n is not None:
            facts["parameters"].append({"family": family, "preset": preset, "size": size, "latent": latent, "params": n})
    for preset, size, latent in projections:
        n = attempt(f"flat projections of {preset} at {size}, latent {latent}",
                    lambda: flat_projection_count(preset, size, latent))
        if n is not None:
            facts["flat_projections"].append({"preset": preset, "size": size, "latent": latent, "params": n})
    for preset, size, latent in probes:
        probe = attempt(f"flat attention probe of {preset} at {size}, latent {latent}",
                        lambda: flat_attention_probe(preset, size, latent))
        if probe is not None:
            facts["flat_attention_probe"].append(probe)
    png, chosen = None, attention_model(figure_from)
    if chosen is not None:
        family, preset, size, latent = chosen
        drawn = attempt(f"attention maps of {family}-{preset} at {size}", lambda: attention_maps_figure(*chosen))
        if drawn is not None:
            png, built_latent = drawn
            facts["attention_maps"] = {"family": family, "preset": preset, "size": size, "latent": built_latent,
                                       "seed": SEED, "path": ATTENTION_MAPS_PNG if png is not None else None,
                                       "why_not": "" if png is not None else "the model has a single token: its maps are 1×1"}
    return facts, png


def save_model_facts(run_dir: Path, configs: list[Config], figure_from: list[Config]) -> Path:
    """Compute and write ``model_facts.json`` (and ``plots/attention_maps.png``) into ``run_dir``."""
    facts, png = compute_model_facts(configs, figure_from)
    run_dir = Path(run_dir)
    if png is not None:
        atomic_write_bytes(run_dir / ATTENTION_MAPS_PNG, png)
    path = run_dir / MODEL_FACTS_JSON
    atomic_write_text(path, json.dumps(facts, indent=1) + "\n")
    return path


def write_model_facts(run_dir: Path, cases: list["Case"]) -> Path:
    """At a run's start: the facts of the cases it will measure (skipped cases left out)."""
    configs = [(c.family, c.preset, c.size, int(c.latent or 0)) for c in cases if not c.skip]
    return save_model_facts(run_dir, list(dict.fromkeys(configs)), configs)


def write_model_facts_of_run(run_dir: Path) -> Path:
    """For a run already on disk: the configurations of its ``results.csv`` rows; the figure from
    its ok rows, as the report used to choose it."""
    from bench.runs.reader import load_run

    rows = load_run(Path(run_dir)).rows
    known = rows[rows["family"].ne("") & rows["preset"].ne("") & rows["size"].ne("")]

    def configs(frame) -> list[Config]:
        latents = frame["latent"].fillna(0).astype(int)
        return list(dict.fromkeys(zip(frame["family"], frame["preset"], frame["size"], latents)))

    return save_model_facts(run_dir, configs(known), configs(known[known["status"] == "ok"]))


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print(f"usage: {REGENERATE} RUN_DIR  (writes RUN_DIR/{MODEL_FACTS_JSON} and {ATTENTION_MAPS_PNG} "
              f"from RUN_DIR/results.csv)", file=sys.stderr)
        return 2
    try:
        path = write_model_facts_of_run(Path(argv[0]))
    except ValueError as err:
        print(f"ae-bench: {err}", file=sys.stderr)
        return 2
    print(f"model facts: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
