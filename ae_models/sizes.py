"""Image sizes: the ``WxH`` strings users write and the ``(H, W)`` tuples tensors use.

``1280x152`` is 1280 pixels wide and 152 high; its batch tensor is ``(B, 1, 152, 1280)``.
Every Python API in this project takes ``(H, W)`` in tensor order, and every string is ``WxH``.
"""

from __future__ import annotations

import re
from typing import Union

SizeLike = Union[str, tuple, list]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """Parse a ``WxH`` string (``"1280x152"``) into ``(H, W)`` in tensor order.

    Raises:
        ValueError: naming the bad value and the accepted form.
    """
    if not isinstance(text, str):
        raise ValueError(f"image size must be a 'WxH' string such as '1280x152', got {text!r}")
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"bad image size {text!r}: expected 'WxH' with positive integers, e.g. '1280x152' or '201x201'")
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0:
        raise ValueError(f"bad image size {text!r}: width and height must be positive, e.g. '1280x152'")
    return height, width


def format_size(hw: tuple[int, int]) -> str:
    """``(H, W)`` -> ``"WxH"``."""
    height, width = hw
    return f"{width}x{height}"


def as_hw(size: SizeLike) -> tuple[int, int]:
    """Accept a ``"WxH"`` string or an ``(H, W)`` pair and return ``(H, W)``."""
    if isinstance(size, str):
        return parse_size(size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        height, width = size
        if height <= 0 or width <= 0:
            raise ValueError(f"bad input_size {tuple(size)}: height and width must be positive")
        return int(height), int(width)
    raise ValueError(f"bad input_size {size!r}: give (H, W) in tensor order, e.g. (152, 1280), or a 'WxH' string, e.g. '1280x152'")


def check_image_batch(x, channels: int) -> None:
    """Reject anything but a ``(B, channels, H, W)`` batch, naming the shape received."""
    if x.dim() != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got a tensor of shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"model takes {channels} channel(s), got {x.shape[1]} (input shape {tuple(x.shape)})")
