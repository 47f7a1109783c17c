"""One way to build any model under test: ``build_model(family, preset, input_size, **overrides)``.

Families: ``transformer`` (patch tokens), ``transformer-flat`` (the seed's V2.0 layout), ``cnn``,
or ``package.module:factory`` for a user's own model, called as
``factory(input_size=(H, W), preset=preset, **overrides)`` and expected to return an
``nn.Module`` whose ``forward(x)`` returns ``(reconstruction, anything)`` and which has
``Embedding(x)``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch.nn as nn

from .catalog import FAMILIES
from .cnn import create_cnn_autoencoder
from .sizes import SizeLike
from .transformer import create_autoencoder



def _transformer_flat(input_size: SizeLike, preset: str, **overrides: Any) -> nn.Module:
    return create_autoencoder(input_size, preset, tokenizer="flat", **overrides)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "transformer": create_autoencoder,
    "transformer-flat": _transformer_flat,
    "cnn": create_cnn_autoencoder,
}



def resolve_factory(family: str) -> Callable[..., nn.Module]:
    """The factory for a family name or a ``package.module:factory`` import path."""
    if family in _FACTORIES:
        return _FACTORIES[family]
    if ":" in family:
        module_name, _, attr = family.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"cannot import {module_name!r} for family {family!r}: {err}") from err
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ValueError(f"{family!r}: module {module_name!r} has no callable {attr!r}")
        return factory
    raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)} or give 'package.module:factory'")


def build_model(family: str, preset: str = "medium", input_size: SizeLike = (201, 201), **overrides: Any) -> nn.Module:
    """Build a model of ``family`` for ``input_size`` (``(H, W)`` or ``"WxH"``)."""
    return resolve_factory(family)(input_size=input_size, preset=preset, **overrides)
