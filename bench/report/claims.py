"""The seed document's claims, checked: each claim next to our figure and a verdict.

The claims live in ``data/seed_claims.toml`` (quoted, with their section of the seed), and so do
the verdict rules' tolerances. Verdicts:

- ``holds``: the figure is within the tolerance of the claim (rules in the TOML, quoted in the report);
- ``does not hold``: it is not;
- ``not measurable on this device``: the claim is about a GPU's absolute memory and the run is on a CPU
  (memory *ratios* are judged on a CPU too, from live tensors, which are the same on any device);
- ``too noisy to judge``: a speed claim with fewer than 3 pairs whose timing is not ``noisy``;
- ``not measured in this run``: the run has no case that tests it (the basis says what to run);
- ``not measurable by this suite``: reconstruction quality (judged by ``python -m bench quality`` instead), attention time alone;
- ``baseline``: the CNN row, 1.0x by definition.

Parameter counts and the flat layout's attention probe are computed from the model definitions
when the run starts (``bench/core/model_probe.py`` writes them into ``model_facts.json``), so they
are checked whatever the run measured; the report says they are computed. This module only reads
them: a fact the file lacks (an old run, a pytest-benchmark JSON) is a row saying so, never a model
built here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd

from bench.runs.model_facts import ModelFacts
from bench.report.tables import CNN_MATCH, MIN_CLEAN_PAIRS, PEAK_LABELS, ok_rows, with_peak
from bench.units import GIB, MIB

HOLDS, FAILS = "holds", "does not hold"
TOO_NOISY = "too noisy to judge"
# the speed run times untrained models; the quality scenario trains them and judges this claim
QUALITY_ELSEWHERE = ("needs trained models, which a speed run does not have: `python -m bench quality` trains both families "
                     "for the same budget and judges this claim in its quality.md")
NOT_ON_DEVICE, NOT_IN_RUN, NOT_BY_SUITE = "not measurable on this device", "not measured in this run", "not measurable by this suite"
BASELINE = "baseline"  # the CNN row of the seed's table: 1.0x by definition, nothing to test
VERDICTS = (HOLDS, FAILS, TOO_NOISY, NOT_ON_DEVICE, NOT_IN_RUN, NOT_BY_SUITE, BASELINE)
JUDGED = (HOLDS, FAILS, TOO_NOISY)  # the verdicts the report's markdown shows; every claim is in claims.csv

MIB_PER_GIB = GIB // MIB
# Training keeps, per parameter, the fp32 weight, its gradient and AdamW's two moments (AMP keeps
# fp32 master weights too): 4 tensors x 4 bytes, before a single activation is stored.
TRAIN_BYTES_PER_PARAM = 4 * 4


@dataclass
class Rules:
    params_rel_tol: float
    ratio_abs_tol: float
    ratio_rel_tol: float
    memory_rel_tol: float
    memory_needs: str

    def text(self) -> list[str]:
        """The rules in words, for the report (figures from the claims file)."""
        return [
            f"a parameter count holds when it is within ±{self.params_rel_tol:.0%} of the claimed figure;",
            f"a ratio holds when it is within ±{self.ratio_abs_tol:g} (absolute) or ±{self.ratio_rel_tol:.0%} (of the claim) "
            f"of the claimed ratio or range, whichever is wider; the measured ratio is the median over the matched pairs;",
            f"a memory range holds when the measured peak lies in it, widened by {self.memory_rel_tol:.0%} on both sides "
            f"(the seed's GB read as GiB); absolute memory and batch-size claims need a {self.memory_needs} run, as they are "
            f"about a GPU's memory (its CUDA context and allocator cache on top of the tensors);",
            "a memory ratio (to the CNN, to fp32, to no checkpointing) is judged on a GPU from its peak memory, and on a CPU "
            "from the peak of live tensors, which a step keeps alive on any device (up to kernel workspaces);",
            f"a speed ratio is the median over the pairs where neither side's timing is noisy; with fewer than "
            f"{MIN_CLEAN_PAIRS} such pairs the verdict is \"{TOO_NOISY}\".",
        ]


def rules_of(claims: dict) -> Rules:
    return Rules(**{k: claims["rules"][k] for k in Rules.__dataclass_fields__})


# -- verdict rules -------------------------------------------------------------------------

def params_verdict(measured: float, claimed: float, rules: Rules) -> str:
    return HOLDS if abs(measured / claimed - 1) <= rules.params_rel_tol + 1e-12 else FAILS  # 1e-12: 650K/500K - 1 is 0.30000000000000004


def ratio_verdict(measured: float, low: float, high: float, rules: Rules) -> str:
    """Within the wider of the absolute and relative tolerance of the range ``[low, high]``."""
    if math.isnan(measured):
        return NOT_IN_RUN
    nearest = low if measured < low else high if measured > high else measured
    distance = abs(measured - nearest)
    return HOLDS if distance <= max(rules.ratio_abs_tol, rules.ratio_rel_tol * nearest) + 1e-12 else FAILS


def memory_kind(device: str, rules: Rules, pairs: pd.DataFrame) -> Optional[str]:
    """What the memory ratios of ``pairs`` compare, in words, or None when they cannot test a claim about
    memory: on a GPU its peak memory; elsewhere only the peak of live tensors (never the process's RSS)."""
    if device == rules.memory_needs:
        return "peak memory"
    sources = set(pairs["peak_from"].dropna()) - {""} if "peak_from" in pairs else set()
    return PEAK_LABELS["tensor_peak_mib"] if sources == {"tensor_peak_mib"} else None


def clean_values(pairs: pd.DataFrame, column: str) -> tuple[pd.Series, int]:
    """``column`` over the pairs where neither side is noisy, and how many noisy pairs were left out."""
    clean = pairs[pairs["clean"].map(lambda v: v is not False)] if "clean" in pairs else pairs
    return clean[column].dropna(), len(pairs) - len(clean)


def too_noisy_text(values: pd.Series, left_out: int) -> str:
    return (f"{len(values)} clean pair(s), {left_out} left out as noisy: fewer than {MIN_CLEAN_PAIRS}, "
            "so no ratio is given")


def memory_verdict(measured_mib: float, low_gib: float, high_gib: float, rules: Rules) -> str:
    low = low_gib * MIB_PER_GIB * (1 - rules.memory_rel_tol)
    high = high_gib * MIB_PER_GIB * (1 + rules.memory_rel_tol)
    return HOLDS if low <= measured_mib <= high else FAILS


# -- the checks --------------------------------------------------------------------------------

def _row(section: str, claim: str, seed_says: str, measured: str, verdict: str, basis: str,
         value: Optional[float] = None, low: Optional[float] = None, high: Optional[float] = None) -> dict:
    return {"section": section, "claim": claim, "seed_says": seed_says, "measured": measured, "verdict": verdict,
            "basis": basis, "measured_value": value, "claimed_low": low, "claimed_high": high}


def fmt_count(n: float) -> str:
    """A parameter count as the seed writes them: 596K, 7.10M, 902M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.0f}"


def budget_text(mib: float) -> str:
    """``8 GiB (8,192 MiB)`` for whole GiB, else ``6,000 MiB``."""
    gib = mib / MIB_PER_GIB
    return f"{gib:g} GiB ({mib:,.0f} MiB)" if gib == int(gib) else f"{mib:,.0f} MiB"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}×"


def _params_check(section: str, family: str, preset: str, size: str, latent: int, claim: dict, rules: Rules,
                  ok: pd.DataFrame, facts: ModelFacts) -> dict:
    """One preset's parameter count: from the model facts, else from the run's rows, else missing."""
    name = f"{preset}: parameters ({family})"
    n = facts.params(family, preset, size, latent)
    in_run = ok[(ok["family"] == family) & (ok["preset"] == preset) & (ok["size"] == size) & (ok["latent"] == latent)
                & ok["params"].notna()]
    row_count = None if in_run.empty else float(in_run["params"].iloc[0])
    if n is not None:
        basis = f"computed from the model definition ({family}, {size}, latent {latent}; meta device), not measured"
        if row_count is not None:
            basis += f"; the run's rows agree: {fmt_count(row_count)} parameters"
    elif row_count is not None:
        n, basis = row_count, f"from the run's rows (the model as built for its cases): {facts.lacks('count of it')}"
    else:
        return _row(section, name, claim["parameters"], "—", NOT_IN_RUN,
                    facts.missing(f"parameter count of {family}-{preset} at {size}, latent {latent}"))
    return _row(section, name, claim["parameters"], f"{fmt_count(n)} parameters", params_verdict(n, claim["value"], rules),
                basis, n, claim["value"], claim["value"])


def check_parameter_counts(claims: dict, rows: pd.DataFrame, device: str, budget_mib: float,
                           facts: ModelFacts) -> list[dict]:
    """The seed's Parameter Counts table: parameters (computed), memory and recommended batch (GPU runs)."""
    spec, rules = claims["parameter_counts"], rules_of(claims)
    section, size, latent = spec["section"], spec["size"], int(spec["latent"])
    out = []
    ok = with_peak(ok_rows(rows))
    for claim in spec["row"]:
        preset = claim["preset"]
        for family in spec["families"]:
            out.append(_params_check(section, family, preset, size, latent, claim, rules, ok, facts))
        # Memory and batch: the user's transformer in training at the seed's size (any latent,
        # precision or attention; the most frugal of them is what decides whether a batch fits).
        train = ok[(ok["family"] == "transformer") & (ok["preset"] == preset) & (ok["size"] == size) & (ok["mode"] == "train")]
        low_b, high_b = claim["batch"]
        gib_low, gib_high = claim["gib"]
        if device != rules.memory_needs:
            why = (f"the claim is about a GPU's memory at that batch (its CUDA context and allocator cache on top of the "
                   f"live tensors); this run is on {device}")
            out.append(_row(section, f"{preset}: memory at the recommended batch", claim["memory"], "—", NOT_ON_DEVICE, why))
            out.append(_row(section, f"{preset}: recommended batch fits", claim["recommended_batch"], "—", NOT_ON_DEVICE, why))
            continue
        in_range = train[(train["batch"] >= low_b) & (train["batch"] <= high_b) & train["peak_mib"].notna()]
        if in_range.empty:
            out.append(_row(section, f"{preset}: memory at the recommended batch", claim["memory"], "—", NOT_IN_RUN,
                            f"no ok train case of transformer-{preset} at {size} with batch {low_b}..{high_b} images"))
        else:
            best = in_range.sort_values("peak_mib").iloc[0]
            out.append(_row(section, f"{preset}: memory at the recommended batch", claim["memory"],
                            f"{best['peak_mib']:,.0f} MiB ({best['case_id']})",
                            memory_verdict(best["peak_mib"], gib_low, gib_high, rules),
                            f"measured: the smallest peak ({best['peak_from']}) of the train cases with batch {low_b}..{high_b}",
                            best["peak_mib"], gib_low * MIB_PER_GIB, gib_high * MIB_PER_GIB))
        out.append(_batch_check(section, preset, size, claim, train, rows, budget_mib))
    return out


def _batch_check(section: str, preset: str, size: str, claim: dict, train: pd.DataFrame, rows: pd.DataFrame,
                 budget_mib: float) -> dict:
    """The recommended batches fit the budget: every measured batch up to the range's top fits,
    and one at or above its bottom was measured (an OOM at or below the top fails it)."""
    low_b, high_b = claim["batch"]
    name = f"{preset}: recommended batch fits {budget_text(budget_mib)}"
    oom = rows[(rows["status"] == "oom") & (rows["family"] == "transformer") & (rows["preset"] == preset)
               & (rows["size"] == size) & (rows["mode"] == "train") & (rows["batch"] <= high_b)]
    too_big = train[(train["batch"] <= high_b) & (train["peak_mib"] > budget_mib)]
    fitting = train[train["peak_mib"] <= budget_mib]
    largest = int(fitting["batch"].max()) if not fitting.empty else None
    measured = f"largest fitting train batch: {largest} images" if largest is not None else "no train batch fits"
    if not oom.empty or not too_big.empty:
        worst = int(min(list(oom["batch"]) + list(too_big["batch"])))
        return _row(section, name, claim["recommended_batch"], measured + f"; batch {worst} images does not fit", FAILS,
                    "measured: train cases (any precision and attention)", largest, low_b, high_b)
    if largest is not None and largest >= low_b:
        return _row(section, name, claim["recommended_batch"], measured, HOLDS,
                    "measured: train cases (any precision and attention)", largest, low_b, high_b)
    return _row(section, name, claim["recommended_batch"], measured, NOT_IN_RUN,
                f"no train case of transformer-{preset} at {size} with batch >= {low_b} images", largest, low_b, high_b)


def check_speed_comparison(claims: dict, pairs: pd.DataFrame, device: str) -> list[dict]:
    """The seed's Speed Comparison (Relative to CNN) table, against our matched pairs."""
    spec, rules = claims["speed_comparison"], rules_of(claims)
    section, out = spec["section"], []
    match_text = ", ".join(CNN_MATCH)
    device_note = "" if device == "cuda" else f" (measured on {device}; the seed's figures are for: {claims['target']})"
    for claim in spec["row"]:
        config = claim["configuration"]
        if claim.get("baseline"):
            out.append(_row(section, f"{config}: speed, memory", f"{claim['speed']}, {claim['memory']}", "1.00× by definition",
                            BASELINE, "the baseline every ratio is taken against", 1.0, 1.0, 1.0))
            out.append(_row(section, f"{config}: quality", claim["quality"], "—", NOT_BY_SUITE,
                            QUALITY_ELSEWHERE))
            continue
        for family in spec["families"]:
            chosen = pairs[(pairs["family"] == family) & pairs["attention"].isin(claim["attention"])]
            if claim["presets"]:
                chosen = chosen[chosen["preset"].isin(claim["presets"])]
            which = f"{family} {'/'.join(claim['presets']) or 'any preset'}, attention {'/'.join(claim['attention'])}"
            gpu_only = (f"the claim is about memory; on {device} only the peak of live tensors can test it, and these "
                        "cases have none (a run made before it existed: the process RSS includes the interpreter and earlier cases)")
            if chosen.empty:
                why = f"no {which} case with a CNN case matching on {match_text}"
                out.append(_row(section, f"{config}: speed vs CNN ({family})", claim["speed"], "—", NOT_IN_RUN, why))
                out.append(_row(section, f"{config}: memory vs CNN ({family})", claim["memory"], "—", NOT_IN_RUN, why))
                continue
            speed, left_out = clean_values(chosen, "speed_ratio")
            basis = (f"measured: median of {len(speed)} {which} case(s) over the CNN case matching on {match_text}"
                     f"{f', {left_out} noisy pair(s) left out' if left_out else ''}{device_note}")
            if len(speed) < MIN_CLEAN_PAIRS:
                out.append(_row(section, f"{config}: speed vs CNN ({family})", claim["speed"], too_noisy_text(speed, left_out),
                                TOO_NOISY, basis))
            else:
                out.append(_row(section, f"{config}: speed vs CNN ({family})", claim["speed"],
                                f"{fmt_ratio(speed.median())} (range {fmt_ratio(speed.min())}–{fmt_ratio(speed.max())})",
                                ratio_verdict(speed.median(), claim["speed_ratio"], claim["speed_ratio"], rules), basis,
                                speed.median(), claim["speed_ratio"], claim["speed_ratio"]))
            memory = chosen["memory_ratio"].dropna()
            kind = memory_kind(device, rules, chosen)
            memory_basis = (f"measured: median {kind} ratio of {len(memory)} {which} case(s) over the CNN case matching on "
                            f"{match_text}{device_note}")
            if kind is None:
                out.append(_row(section, f"{config}: memory vs CNN ({family})", claim["memory"], "—", NOT_ON_DEVICE, gpu_only))
            elif memory.empty:
                out.append(_row(section, f"{config}: memory vs CNN ({family})", claim["memory"], "—", NOT_IN_RUN,
                                "the matched cases recorded no peak memory"))
            else:
                out.append(_row(section, f"{config}: memory vs CNN ({family})", claim["memory"],
                                f"{fmt_ratio(memory.median())} (range {fmt_ratio(memory.min())}–{fmt_ratio(memory.max())}; {kind})",
                                ratio_verdict(memory.median(), claim["memory_ratio"], claim["memory_ratio"], rules),
                                memory_basis, memory.median(), claim["memory_ratio"], claim["memory_ratio"]))
        out.append(_row(section, f"{config}: quality", claim["quality"], "—", NOT_BY_SUITE,
                        QUALITY_ELSEWHERE))
    return out


def check_flat_layout(claims: dict, budget_mib: float, facts: ModelFacts) -> list[dict]:
    """The seed's own layout at its wide size: parameters, training memory, and what its attention does."""
    spec, rules = claims["flat_layout"], rules_of(claims)
    section, preset, size, latent = spec["section"], spec["preset"], spec["size"], int(spec["latent"])
    total = facts.params(spec["family"], preset, size, latent)
    projections = facts.flat_projections(preset, size, latent)
    where = f"{spec['family']} {preset} at {size}, latent {latent}"
    params_name, memory_name = f"parameters of the seed's layout ({where})", f"training memory of the seed's layout ({where})"
    memory_says = f"{spec['memory']} (for: {claims['target']})"
    if total is None:
        why = facts.missing(f"parameter count of {where}")
        out = [_row(section, params_name, f"{spec['parameters']} (its largest preset)", "—", NOT_IN_RUN, why),
               _row(section, memory_name, memory_says, "—", NOT_IN_RUN, why)]
    else:
        held = (f", of which the two pixel projections hold {fmt_count(projections)} ({projections / total:.0%})"
                if projections is not None else f" (the pixel projections' share unknown: {facts.lacks('projection count')})")
        out = [_row(section, params_name, f"{spec['parameters']} (its largest preset)", f"{fmt_count(total)} parameters{held}",
                    params_verdict(total, spec["value"], rules),
                    "computed from the model definition (meta device), not measured", total, spec["value"], spec["value"])]
        state_mib = total * TRAIN_BYTES_PER_PARAM / MIB
        gib_low, gib_high = spec["gib"]
        out.append(_row(section, memory_name, memory_says,
                        f"at least {state_mib:,.0f} MiB for weights, gradients and AdamW state "
                        f"({TRAIN_BYTES_PER_PARAM} bytes per parameter), before activations; budget {budget_mib:,.0f} MiB",
                        HOLDS if state_mib <= gib_high * MIB_PER_GIB * (1 + rules.memory_rel_tol) else FAILS,
                        "computed from the parameter count: a lower bound, on any device", state_mib,
                        gib_low * MIB_PER_GIB, gib_high * MIB_PER_GIB))
    probe_where = f"{spec['family']} {spec['probe_preset']} at {spec['probe_size']}, latent {spec['probe_latent']}"
    probe = facts.flat_probe(spec["probe_preset"], spec["probe_size"], int(spec["probe_latent"]))
    if probe is None:
        out.append(_row(section, "attention of the seed's layout", spec["attention_claim"], "—", NOT_IN_RUN,
                        facts.missing(f"attention probe of {probe_where}")))
        return out
    tokens = probe["map_shape"][-1]
    out.append(_row(section, "attention of the seed's layout", spec["attention_claim"],
                    f"every map is {tokens}×{tokens} with weight(s) {', '.join(f'{v:g}' for v in probe['map_values'])}; "
                    f"gradient norm of W_q and W_k: {probe['qk_grad_norm']:g} (W_v: {probe['v_grad_norm']:.3g})",
                    FAILS if tokens == 1 else HOLDS,
                    f"computed on a seeded {probe_where} (one forward with maps, one backward): "
                    f"with one token, attention returns V", probe["qk_grad_norm"]))
    return out


def check_optimisations(claims: dict, pairs_by_axis: dict[str, pd.DataFrame], device: str) -> list[dict]:
    """AMP, checkpointing and flash attention, as ratios of the switched case to the same case without it."""
    spec, rules = claims["optimisations"], rules_of(claims)
    section, out = spec["section"], []
    for claim in spec["row"]:
        pairs = pairs_by_axis.get(claim["axis"], pd.DataFrame())
        if not pairs.empty:
            pairs = pairs[pairs[claim["axis"]].isin(claim["candidates"])]
        low, high = claim["ratio"]
        name = f"{claim['feature']}: {claim['metric'].replace('-', ' ')}"
        baseline = f"{claim['axis']} {claim['baseline']}"
        if claim["metric"] == "attention-only":
            measured = "—"
            whole, left_out = clean_values(pairs, "speed_ratio") if not pairs.empty else (pd.Series(dtype=float), 0)
            if len(whole) >= MIN_CLEAN_PAIRS:
                measured = (f"whole step: {fmt_ratio(whole.median())} images/s of {claim['baseline']} (median of {len(whole)} "
                            f"clean pair(s){f', {left_out} noisy left out' if left_out else ''})")
            elif not pairs.empty:
                measured = f"whole step: {too_noisy_text(whole, left_out)}"
            out.append(_row(section, name, claim["quote"], measured, NOT_BY_SUITE,
                            "the suite times whole steps, not the attention alone; the whole-step ratio is shown for reference"))
            continue
        kind = memory_kind(device, rules, pairs) if claim["metric"] == "memory" else None
        if claim["metric"] == "memory" and kind is None and not pairs.empty:
            out.append(_row(section, name, claim["quote"], "—", NOT_ON_DEVICE,
                            f"the claim is about memory; on {device} only the peak of live tensors can test it, and these "
                            "cases have none (a run made before it existed)"))
            continue
        column = "speed_ratio" if claim["metric"] == "speed" else "memory_ratio"
        if pairs.empty:
            values, left_out = pd.Series(dtype=float), 0
        elif claim["metric"] == "speed":
            values, left_out = clean_values(pairs, column)
        else:  # memory comes from a pass of its own: the timing's noise does not touch it
            values, left_out = pairs[column].dropna(), 0
        if pairs.empty or (values.empty and not left_out):
            out.append(_row(section, name, claim["quote"], "—", NOT_IN_RUN,
                            f"no case measured both with {claim['axis']} in {claim['candidates']} and with {baseline}, "
                            f"all else equal" + (" (train mode)" if claim["axis"] == "checkpointing" else "")))
            continue
        note = "" if device == "cuda" else f" (measured on {device}; the seed's figures are for: {claims['target']})"
        basis = (f"measured: median over {len(values)} pair(s) equal in every other axis"
                 f"{f', {left_out} noisy pair(s) left out' if left_out else ''}; the claim read as "
                 f"{fmt_ratio(low)}–{fmt_ratio(high)}{note}")
        if claim["metric"] == "speed" and len(values) < MIN_CLEAN_PAIRS:
            out.append(_row(section, name, claim["quote"], too_noisy_text(values, left_out), TOO_NOISY, basis))
            continue
        unit = "images/s" if claim["metric"] == "speed" else f"peak MiB ({kind})"
        out.append(_row(section, name, claim["quote"],
                        f"{fmt_ratio(values.median())} the {unit} of {baseline} (range {fmt_ratio(values.min())}–{fmt_ratio(values.max())})",
                        ratio_verdict(values.median(), low, high, rules), basis, values.median(), low, high))
    return out


def check_all(claims: dict, rows: pd.DataFrame, device: str, budget_mib: float, cnn_pairs: pd.DataFrame,
              pairs_by_axis: dict[str, pd.DataFrame], facts: ModelFacts) -> dict[str, list[dict]]:
    """Every claim's row, per table of the claims file. ``facts`` is the run's model facts (empty when it has none)."""
    return {
        "parameter_counts": check_parameter_counts(claims, rows, device, budget_mib, facts),
        "speed_comparison": check_speed_comparison(claims, cnn_pairs, device),
        "flat_layout": check_flat_layout(claims, budget_mib, facts),
        "optimisations": check_optimisations(claims, pairs_by_axis, device),
    }


def claim_source(claims: dict) -> dict[str, Any]:
    return {"source": claims["source"], "document": claims.get("document", "")}
