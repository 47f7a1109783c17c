"""What to run: the ``Case``, the axes it is drawn from, named matrices, and validity rules.

A matrix is a TOML file in ``bench/matrices/`` (or any path): one or more ``[[group]]`` tables,
each an axis -> values product; the matrix is their union, in file order, without duplicates.
Expansion never drops a combination quietly: one that cannot run here becomes a case with a
``skip`` reason, which the sweep records as an ``unsupported`` row.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from ae_models.catalog import ATTENTION_IMPLS, CNN_PRESETS, FAMILIES, PRESETS, is_transformer
from ae_models.sizes import format_size, parse_size

PRECISIONS = ("fp32", "tf32", "amp-fp16", "amp-bf16", "fp16", "bf16")
MODES = ("infer", "train", "embed", "sequence-infer", "sequence-train")
# frames -> Embedding -> LSTM (ae_models/sequence.py): a batch is `batch` sequences of `seq_len` frames.
# "sequence" in a matrix or an option stands for both.
SEQUENCE_MODES = ("sequence-infer", "sequence-train")
ENCODERS = ("frozen", "finetune")  # sequence-train: the encoder takes no gradient, or trains with the LSTM
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
NO_ATTENTION = "none"  # the attention value of a family without attention (the CNN)
MAX_CASES = 10_000  # combinations one matrix may expand to: beyond, a typo (a 10^6-case product), not a sweep

if TYPE_CHECKING:
    from bench.trackers.device import DeviceFacts

MATRIX_DIR = Path(__file__).resolve().parents[1] / "matrices"


@dataclass(frozen=True)
class Case:
    """One configuration to measure. ``size`` is ``WxH``; ``latent`` 0 means the preset's default."""

    family: str = "transformer"
    preset: str = "tiny"
    size: str = "201x201"
    latent: int = 0
    tokenizer: str = "patch"
    precision: str = "fp32"
    attention: str = "auto"
    checkpointing: bool = False
    compile: str = "off"
    mode: str = "infer"
    batch: int = 8
    seq_len: int = 0      # frames per sequence, sequence modes only (0 elsewhere)
    encoder: str = ""     # frozen or finetune, sequence-train only ("" elsewhere)
    skip: Optional[str] = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if any(ch.isspace() or not ch.isprintable() for ch in self.family):  # a "\n" became a space in the CSV key and
            # stayed in samples.jsonl's: rows without samples, a resume refused, a compare that never fails them
            raise ValueError(f"bad family {self.family!r}: a family name holds no space, line break or control character")
        if self.family not in FAMILIES and ":" not in self.family:
            raise ValueError(f"unknown family {self.family!r}; choose from {', '.join(FAMILIES)} or 'package.module:factory'")
        presets = CNN_PRESETS if self.family == "cnn" else PRESETS
        if ":" not in self.family and self.preset not in presets:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(presets)}")
        parse_size(self.size)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("attention", self.attention, ATTENTION_IMPLS + (NO_ATTENTION,))
        _check_choice("compile", self.compile, COMPILE_MODES)
        _check_choice("mode", self.mode, MODES)
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"bad batch size {self.batch!r}: expected a positive integer")
        if self.latent and not 128 <= self.latent <= 8192:
            raise ValueError(f"bad latent {self.latent!r}: expected 0 (preset default) or 128..8192")
        self._check_sequence()

    def _check_sequence(self) -> None:
        """Sequence modes need ``seq_len``; other modes drop ``seq_len`` and ``encoder`` (they do not apply)."""
        if self.mode not in SEQUENCE_MODES:
            object.__setattr__(self, "seq_len", 0)
            object.__setattr__(self, "encoder", "")
            return
        if isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int) or self.seq_len < 1:
            raise ValueError(f"mode {self.mode!r} needs seq_len >= 1 frames per sequence, got {self.seq_len!r}: "
                             "add the seqlens axis, e.g. --seqlens 8,32")
        if self.mode == "sequence-infer":
            object.__setattr__(self, "encoder", "")  # nothing trains: frozen or not is the same step
        else:
            object.__setattr__(self, "encoder", self.encoder or "frozen")
            _check_choice("encoder", self.encoder, ENCODERS)

    @property
    def images(self) -> int:
        """Images one step encodes: ``batch`` (``batch * seq_len`` frames in the sequence modes)."""
        return self.batch * self.seq_len if self.mode in SEQUENCE_MODES else self.batch

    def _sequence_parts(self) -> list[str]:
        return [f"T{self.seq_len}"] + ([self.encoder] if self.encoder else []) if self.mode in SEQUENCE_MODES else []

    @property
    def hw(self) -> tuple[int, int]:
        """``(H, W)`` in tensor order."""
        return parse_size(self.size)

    @property
    def key(self) -> str:
        """Stable identity across runs; the regression check matches cases by it."""
        parts = [self.family, self.preset, self.size, f"z{self.latent}" if self.latent else "zdef",
                 self.precision, self.attention, "ckpt" if self.checkpointing else "nockpt",
                 f"compile-{self.compile}", *self._sequence_parts(), self.mode, f"b{self.batch}"]
        return "-".join(parts)

    @property
    def id(self) -> str:
        """Readable pytest id, e.g. ``transformer-small-1280x152-amp-bf16-flash-ckpt-train-b16``."""
        parts = [self.family, self.preset, self.size]
        if self.latent:
            parts.append(f"z{self.latent}")
        parts += [self.precision]
        if self.attention != NO_ATTENTION:
            parts.append(self.attention)
        if self.checkpointing:
            parts.append("ckpt")
        if self.compile != "off":
            parts.append(f"compile-{self.compile}")
        parts += [*self._sequence_parts(), self.mode, f"b{self.batch}"]
        return "-".join(parts)

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "skip"}


def expand_modes(modes: Iterable[str]) -> list[str]:
    """``sequence`` stands for both sequence modes."""
    return [m for v in modes for m in (SEQUENCE_MODES if v == "sequence" else (v,))]


def _check_choice(axis: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {axis} {value!r}; choose from {', '.join(map(str, allowed))}")


# axis name in matrix files / options -> Case field
AXES = {
    "families": "family", "presets": "preset", "sizes": "size", "latents": "latent", "tokenizers": "tokenizer",
    "precisions": "precision", "attention": "attention", "checkpointing": "checkpointing", "compile": "compile",
    "modes": "mode", "batch": "batch", "seqlens": "seq_len", "encoders": "encoder",
}


_AXIS_TYPES = {"latent": int, "batch": int, "checkpointing": bool, "seq_len": int}  # the rest are strings


@dataclass
class Matrix:
    name: str
    description: str
    groups: list[dict[str, list]]
    timing: dict[str, Any]
    path: Optional[Path] = None


def available_matrices() -> list[str]:
    return sorted(p.stem for p in MATRIX_DIR.glob("*.toml"))


def load_matrix(name_or_path: str, device_type: str = "cpu") -> Matrix:
    """Load a named matrix (``smoke``, ``quick``, ``default``, ``auto``, ...) or a TOML path.

    ``auto`` is ``default`` on a GPU and ``quick`` on a CPU.
    """
    if name_or_path == "auto":
        name_or_path = "default" if device_type == "cuda" else "quick"
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        path = MATRIX_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ValueError(f"unknown matrix {name_or_path!r}; choose from auto, {', '.join(available_matrices())} or give a .toml path")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"matrix file {path} is not valid TOML: {err}") from err
    return parse_matrix(data, name=path.stem, path=path)


def parse_matrix(data: dict, name: str = "custom", path: Optional[Path] = None) -> Matrix:
    """Validate a matrix's parsed TOML: every axis known, every value a list."""
    if not isinstance(data, dict):
        raise ValueError(f"matrix {name}: expected a TOML table")
    groups = data.get("group")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise ValueError(f"matrix {name}: expected one or more [[group]] tables of axis = [values]; axes: {', '.join(AXES)}")
    clean_groups = []
    for i, group in enumerate(groups):
        unknown = sorted(set(group) - set(AXES))
        if unknown:
            raise ValueError(f"matrix {name}, group {i + 1}: unknown axis {', '.join(unknown)}; axes: {', '.join(AXES)}")
        clean = {}
        for axis, values in group.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"matrix {name}, group {i + 1}: axis {axis!r} needs a non-empty list, got {values!r}")
            kind = _AXIS_TYPES.get(AXES[axis], str)
            bad = [v for v in values if not isinstance(v, kind) or (kind is int and isinstance(v, bool))]
            if bad:
                raise ValueError(f"matrix {name}, group {i + 1}: axis {axis!r} takes {kind.__name__} values, got {bad[0]!r}")
            clean[axis] = values
        clean_groups.append(clean)
    timing = data.get("timing", {})
    if not isinstance(timing, dict):
        raise ValueError(f"matrix {name}: [timing] must be a table")
    description = data.get("description", "")
    return Matrix(name=name, description=str(description), groups=clean_groups, timing=dict(timing), path=path)


def parse_axis_values(axis: str, text: str) -> list:
    """Parse a comma-separated option value (``--ae-batch 8,16``) for ``axis``."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise ValueError(f"empty value for {axis}")
    field = AXES[axis]
    out: list = []
    for item in items:
        if field in ("batch", "latent", "seq_len"):
            try:
                out.append(int(item))
            except ValueError:
                raise ValueError(f"bad {axis} value {item!r}: expected integers, e.g. 8,16") from None
        elif field == "checkpointing":
            lowered = item.lower()
            if lowered not in ("on", "off", "true", "false", "1", "0"):
                raise ValueError(f"bad checkpointing value {item!r}: expected on/off")
            out.append(lowered in ("on", "true", "1"))
        elif field == "size":
            parse_size(item)
            out.append(item)
        else:
            out.append(item)
    return out


def expand(matrix: Matrix, overrides: Optional[dict[str, list]] = None, device: Optional["DeviceFacts"] = None) -> list[Case]:
    """All cases of ``matrix``; ``overrides`` (axis -> values) replace an axis in every group.

    Axes that do not apply to a family collapse (the CNN has no attention and no block
    checkpointing) instead of multiplying into meaningless rows. Then :func:`why_skip` marks what
    cannot run on ``device``.
    """
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(AXES))
    if unknown:
        raise ValueError(f"unknown axis {', '.join(unknown)}; axes: {', '.join(AXES)}")
    combinations = sum(math.prod(len(v) for v in {**g, **{k: v for k, v in overrides.items() if v}}.values())
                       for g in matrix.groups)
    if combinations > MAX_CASES:
        raise ValueError(f"matrix {matrix.name}: its groups multiply out to {combinations:,} combinations, more than "
                         f"{MAX_CASES:,}; narrow an axis (--sizes, --batch, ...) or split the matrix")
    seen: dict[str, Case] = {}
    for group in matrix.groups:
        axes = {**group, **{k: v for k, v in overrides.items() if v}}
        if "modes" in axes:
            axes["modes"] = expand_modes(axes["modes"])
        names = list(axes)
        for combo in itertools.product(*(axes[n] for n in names)):
            values = {AXES[n]: v for n, v in zip(names, combo)}
            if "size" in values:
                values["size"] = format_size(parse_size(str(values["size"])))  # normalise "1280X152"
            family = values.get("family", "transformer")
            if not is_transformer(family):
                values["attention"] = NO_ATTENTION
                values["checkpointing"] = False
                values["tokenizer"] = "patch"
            elif family == "transformer-flat":
                values["tokenizer"] = "flat"
            elif values.get("attention") == NO_ATTENTION:
                continue
            case = Case(**values)
            if case.key not in seen:
                seen[case.key] = case
    cases = list(seen.values())
    if device is not None:
        cases = [dataclasses.replace(c, skip=why_skip(c, device)) for c in cases]
    return cases


def why_skip(case: Case, device: "DeviceFacts") -> Optional[str]:
    """Why ``case`` cannot (or should not) be timed on ``device``, or ``None``. (Torch and the attention
    module are imported only for the kernels whose support depends on them: listing a CPU matrix needs neither.)"""
    cuda = device.type == "cuda"
    if not cuda and case.precision in ("amp-fp16", "fp16"):
        return "fp16 on CPU: matmuls run under 1 GFLOP/s (no fp16 GEMM kernels); time fp32 or amp-bf16 instead"
    if not cuda and case.precision == "tf32":
        return "tf32 is a CUDA tensor-core mode; on CPU it is fp32"
    if case.attention not in (NO_ATTENTION, "eager", "auto", "math"):
        dtype = _attention_dtype(case.precision)
        if not cuda and case.attention in ("mem-efficient", "cudnn"):
            from ae_models.attention import why_unsupported

            return why_unsupported(case.attention, "cpu", dtype, 64)
        if cuda:
            import torch

            from ae_models.attention import why_unsupported

            capability = tuple(int(x) for x in device.capability.split(".")) if device.capability else None
            reason = why_unsupported(case.attention, "cuda", getattr(torch, dtype), 64, capability)  # the case's GPU, not cuda:0
            if reason:
                return reason
    if case.compile != "off" and not cuda and case.compile != "default":
        return f"compile mode {case.compile!r} targets CUDA graphs / GPU autotuning; use 'default' on CPU"
    return None


def _attention_dtype(precision: str) -> str:
    return {"amp-fp16": "float16", "fp16": "float16", "amp-bf16": "bfloat16", "bf16": "bfloat16"}.get(precision, "float32")


def select(cases: list[Case], keyword: Optional[str] = None) -> list[Case]:
    return [c for c in cases if not keyword or keyword in c.id]
