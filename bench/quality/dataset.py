"""Real images for the quality scenario: single-channel crops with a train / held-out split.

Sources
    - the photographs bundled in scikit-image's wheel (``skimage.data``), loaded offline; or
    - a folder of the user's own images (png, jpg, jpeg, tif, tiff), read with ``skimage.io``.

Pixels
    Every image becomes one channel, float32 in [0, 1]: colour through ``rgb2gray`` (alpha
    composited on white first), integers scaled by their dtype's range (``img_as_float32``),
    float images outside [0, 1] stretched by their own min and max. That [0, 1] range is also the
    normalisation the models see: no per-dataset mean/std is subtracted, so a reconstruction is
    compared with its original in the same units and ``data_range`` is 1 for PSNR and SSIM. (The
    models end in a linear layer, which learns any offset; :attr:`Split.mean` and :attr:`Split.std`
    are reported for reference.)

Sizes
    A crop of ``(H, W)`` (tensor order; ``1280x152`` is ``(152, 1280)``) must fit inside both
    bands of an image (below). An image too small for that is *upscaled*, bilinearly, by the
    smallest factor that makes it fit (``required_scale``); larger images are used as they are,
    never downscaled. Upscaling by f smooths the image (no detail finer than f pixels), which
    makes it easier to reconstruct: the factor of every image is kept (:attr:`PreparedImage.scale`)
    and reported. Images that would need more than ``max_upscale`` are dropped, with the reason.
    Upscaling was chosen over tiling because tiles put artificial seams into a crop.

Split
    Each image is cut spatially into two horizontal bands: the top ``1 - holdout_fraction`` for
    training, the bottom ``holdout_fraction`` held out, with ``gap`` rows between them that belong
    to neither. Training crops are cut only inside the training band and held-out crops only inside
    the held-out band, so no held-out crop shares a pixel (or, with the gap, a pixel's immediate
    neighbourhood) with any training crop. Crop positions are drawn with a seeded generator: the
    same images, size and seed give the same crops.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

# Photographs and micrographs that scikit-image ships inside its wheel (checked with 0.26: each loads
# without a network). Synthetic images (checkerboard, colorwheel, logo, horse, shepp_logan_phantom,
# binary_blobs) are left out: they are not what the autoencoders are for. microaneurysms (102x102)
# is left out because a 1280-wide crop would need a 12x upscale. Images that recent versions fetch
# with pooch (brain, cells3d, eagle, human_mitosis, kidney, lily, nickel_solidification,
# palisades_of_vogt, protein_transport, skin, vortex) fail offline and are not tried.
SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

HOLDOUT_FRACTION = 0.25  # bottom quarter of every image is held out
GAP_ROWS = 8             # rows between the bands that neither side uses: neighbouring pixels are correlated
MAX_UPSCALE = 4.0        # beyond this an upscaled image is mostly interpolation


@dataclass
class SourceImage:
    """One source image: ``pixels`` (H, W) float32 in [0, 1], and where it came from."""

    name: str
    pixels: np.ndarray


@dataclass(frozen=True)
class Rect:
    """A crop rectangle in the pixels of a :class:`PreparedImage`: rows ``top:top+height``, columns ``left:left+width``."""

    image: int
    top: int
    left: int
    height: int
    width: int

    def overlaps(self, other: "Rect") -> bool:
        """True when both rectangles are in the same image and share at least one pixel."""
        return (self.image == other.image
                and self.top < other.top + other.height and other.top < self.top + self.height
                and self.left < other.left + other.width and other.left < self.left + self.width)


@dataclass
class PreparedImage:
    """A source image resized for one crop size, with its two bands.

    Rows ``[0, train_rows)`` are the training band, ``[heldout_top, H)`` the held-out band;
    the rows between are the unused gap. ``scale`` is the resize factor (1.0 = original pixels).
    """

    name: str
    pixels: np.ndarray  # (H, W) float32 in [0, 1]
    scale: float
    train_rows: int
    heldout_top: int

    @property
    def heldout_band(self) -> np.ndarray:
        """The held-out band's pixels, ``(H - heldout_top, W)``."""
        return self.pixels[self.heldout_top:]


# -- loading ------------------------------------------------------------------------------------

def to_unit_gray(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Any 2-D grey, grey+alpha, RGB or RGBA array -> ``(H, W)`` float32 in [0, 1]."""
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.util import img_as_float32

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = rgba2rgb(image)  # composited on white, as a viewer shows it
    if image.ndim == 3 and image.shape[-1] == 3:
        image = rgb2gray(image)
    elif image.ndim == 3 and image.shape[-1] == 2:
        image = image[..., 0]  # grey + alpha
    if image.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D grey or an RGB/RGBA image, got an array of shape {image.shape}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    out = img_as_float32(image)
    lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: contains NaN or infinite pixels")
    if lo < 0.0 or hi > 1.0:  # a float image in its own units: stretch it, as a viewer would
        out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    return np.ascontiguousarray(out, dtype=np.float32)


def load_skimage_photos(names: Sequence[str] = SKIMAGE_PHOTOS) -> tuple[list[SourceImage], dict[str, str]]:
    """The bundled photographs that load here, and ``{name: why not}`` for those that do not."""
    import skimage.data

    images, failed = [], {}
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            failed[name] = f"skimage.data has no {name!r} in scikit-image {_skimage_version()}"
            continue
        try:
            images.append(SourceImage(name, to_unit_gray(loader(), name)))
        except Exception as err:  # noqa: BLE001 - a fetched image fails offline with whatever pooch raises
            failed[name] = f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
    return images, failed


def load_folder(folder: Path | str) -> list[SourceImage]:
    """Every png/jpg/jpeg/tif/tiff image in ``folder`` (not recursive), sorted by file name."""
    from skimage import io

    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"image folder {folder} has no images: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    images = []
    for path in paths:
        try:
            with warnings.catch_warnings():  # imageio tries its legacy plugins (DICOM, ...) on a file it cannot read
                warnings.simplefilter("ignore", DeprecationWarning)
                pixels = io.imread(path)
        except Exception as err:  # noqa: BLE001 - the reader's many error types, one message
            raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}") from None
        images.append(SourceImage(path.name, to_unit_gray(pixels, str(path))))
    return images


def _skimage_version() -> str:
    import skimage

    return skimage.__version__


# -- the split ----------------------------------------------------------------------------------

def required_scale(image_hw: tuple[int, int], crop_hw: tuple[int, int], holdout_fraction: float = HOLDOUT_FRACTION,
                   gap: int = GAP_ROWS) -> float:
    """The smallest factor (>= 1) by which an image of ``image_hw`` must grow so a ``crop_hw`` crop
    fits in its held-out band and in its training band. Both pairs are ``(H, W)``."""
    (h_img, w_img), (h, w) = image_hw, crop_hw
    # +1 leaves room for the rounding of the band edges (floor of the held-out fraction)
    return max(1.0, w / w_img, (h + 1) / (holdout_fraction * h_img), (h + gap + 1) / ((1 - holdout_fraction) * h_img))


def prepare_image(source: SourceImage, crop_hw: tuple[int, int], holdout_fraction: float = HOLDOUT_FRACTION,
                  gap: int = GAP_ROWS) -> PreparedImage:
    """Resize ``source`` (if it must grow) and cut its bands for crops of ``crop_hw`` ``(H, W)``."""
    from skimage.transform import resize

    scale = required_scale(source.pixels.shape, crop_hw, holdout_fraction, gap)
    pixels = source.pixels
    if scale > 1.0:
        new_hw = (math.ceil(pixels.shape[0] * scale), math.ceil(pixels.shape[1] * scale))
        pixels = resize(pixels, new_hw, order=1, mode="reflect", anti_aliasing=False, preserve_range=True).astype(np.float32)
        pixels = np.clip(pixels, 0.0, 1.0)
    height = pixels.shape[0]
    heldout_top = height - math.floor(holdout_fraction * height)
    train_rows = heldout_top - gap
    h, w = crop_hw
    if height - heldout_top < h or train_rows < h or pixels.shape[1] < w:  # required_scale makes this unreachable
        raise ValueError(f"{source.name}: a {w}x{h} crop does not fit its bands after resizing to "
                         f"{pixels.shape[1]}x{pixels.shape[0]}")
    return PreparedImage(source.name, np.ascontiguousarray(pixels), scale, train_rows, heldout_top)


def sample_rects(images: Sequence[PreparedImage], crop_hw: tuple[int, int], per_image: int, heldout: bool,
                 rng: np.random.Generator) -> list[Rect]:
    """``per_image`` random crop rectangles of ``crop_hw`` ``(H, W)`` inside each image's training
    band (``heldout=False``) or held-out band (``heldout=True``)."""
    h, w = crop_hw
    rects = []
    for index, image in enumerate(images):
        lo, hi = (image.heldout_top, image.pixels.shape[0] - h) if heldout else (0, image.train_rows - h)
        for _ in range(per_image):
            top = int(rng.integers(lo, hi + 1))
            left = int(rng.integers(0, image.pixels.shape[1] - w + 1))
            rects.append(Rect(index, top, left, h, w))
    return rects


class CropDataset(Dataset):
    """Crops cut on the fly from prepared images; item ``i`` is a ``(1, H, W)`` float32 tensor in [0, 1]."""

    def __init__(self, images: Sequence[PreparedImage], rects: Sequence[Rect]) -> None:
        self.images = list(images)
        self.rects = list(rects)

    def __len__(self) -> int:
        return len(self.rects)

    def __getitem__(self, index: int) -> torch.Tensor:
        r = self.rects[index]
        crop = self.images[r.image].pixels[r.top:r.top + r.height, r.left:r.left + r.width]
        return torch.from_numpy(np.ascontiguousarray(crop))[None]  # (1, H, W)

    def stack(self, indices: Optional[Iterable[int]] = None) -> torch.Tensor:
        """Several items as one batch ``(N, 1, H, W)`` (all of them by default)."""
        indices = range(len(self)) if indices is None else indices
        return torch.stack([self[i] for i in indices])


@dataclass
class Split:
    """The data of one crop size: prepared images, training crops and held-out crops."""

    crop_hw: tuple[int, int]
    images: list[PreparedImage]
    train: CropDataset
    heldout: CropDataset
    dropped: dict[str, str] = field(default_factory=dict)  # image name -> why it is not used
    seed: int = 0
    holdout_fraction: float = HOLDOUT_FRACTION
    gap: int = GAP_ROWS
    # the baselines of this split per latent (bench.quality.baselines.BaselineCache), made on first use
    baseline_cache: Optional[object] = field(default=None, repr=False, compare=False)

    @property
    def mean(self) -> float:
        """Mean pixel of the training bands (reported, not subtracted)."""
        return float(np.mean(np.concatenate([im.pixels[:im.train_rows].ravel() for im in self.images])))

    @property
    def std(self) -> float:
        return float(np.std(np.concatenate([im.pixels[:im.train_rows].ravel() for im in self.images])))

    def describe(self) -> str:
        h, w = self.crop_hw
        scales = ", ".join(f"{im.name} x{im.scale:.2f}" for im in self.images if im.scale > 1.0) or "none"
        return (f"{w}x{h}: {len(self.images)} images, {len(self.train)} training and {len(self.heldout)} held-out crops "
                f"(bottom {self.holdout_fraction:.0%} of each image held out, {self.gap}-row gap, seed {self.seed}); "
                f"upscaled: {scales}")


def make_split(sources: Sequence[SourceImage], crop_hw: tuple[int, int], train_per_image: int = 64,
               heldout_per_image: int = 2, seed: int = 0, holdout_fraction: float = HOLDOUT_FRACTION,
               gap: int = GAP_ROWS, max_upscale: float = MAX_UPSCALE) -> Split:
    """Prepare ``sources`` for crops of ``crop_hw`` ``(H, W)`` and draw the two sets of crops.

    Raises ValueError on a bad argument or when no image can be used.
    """
    h, w = (int(v) for v in crop_hw)
    if h < 1 or w < 1:
        raise ValueError(f"bad crop size {crop_hw!r}: expected (H, W) of positive integers")
    if not 0.0 < holdout_fraction < 0.5:
        raise ValueError(f"holdout_fraction must be in (0, 0.5), got {holdout_fraction}")
    if train_per_image < 1 or heldout_per_image < 1:
        raise ValueError(f"need at least one training and one held-out crop per image, "
                         f"got {train_per_image} and {heldout_per_image}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0 rows, got {gap}")
    if not sources:
        raise ValueError("no source images")
    prepared, dropped = [], {}
    for source in sources:
        scale = required_scale(source.pixels.shape, (h, w), holdout_fraction, gap)
        if scale > max_upscale:
            dropped[source.name] = (f"{source.pixels.shape[1]}x{source.pixels.shape[0]} would need a {scale:.1f}x upscale "
                                    f"for {w}x{h} crops (limit {max_upscale:g}x)")
            continue
        prepared.append(prepare_image(source, (h, w), holdout_fraction, gap))
    if not prepared:
        raise ValueError(f"no image is large enough for {w}x{h} crops within a {max_upscale:g}x upscale: "
                         + "; ".join(f"{k}: {v}" for k, v in dropped.items()))
    rng = np.random.default_rng(seed)
    train = sample_rects(prepared, (h, w), train_per_image, heldout=False, rng=rng)
    heldout = sample_rects(prepared, (h, w), heldout_per_image, heldout=True, rng=rng)
    return Split((h, w), prepared, CropDataset(prepared, train), CropDataset(prepared, heldout), dropped, seed,
                 holdout_fraction, gap)


def load_sources(images_dir: Optional[Path | str] = None) -> tuple[list[SourceImage], dict[str, str], str]:
    """The images a quality run uses: ``images_dir``'s, or the bundled photographs.

    Returns the images, ``{name: why not loaded}``, and a one-line description of the source.
    """
    if images_dir is not None:
        images = load_folder(images_dir)
        return images, {}, f"{len(images)} images from {images_dir}"
    images, failed = load_skimage_photos()
    if not images:
        raise ValueError("none of scikit-image's bundled photographs could be loaded: "
                         + "; ".join(f"{k}: {v}" for k, v in failed.items()) + "; give a folder with --images")
    return images, failed, f"{len(images)} photographs bundled with scikit-image {_skimage_version()}"
