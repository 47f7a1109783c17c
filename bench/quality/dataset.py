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
    A crop of ``(H, W)`` (tensor order; ``1280x152`` is ``(152, 1280)``) must fit inside an image.
    An image too small for that is *upscaled*, bilinearly, by the smallest factor that makes it fit
    (``required_scale``); larger images are used as they are, never downscaled. Upscaling by f
    smooths the image (no detail finer than f pixels), which makes it easier to reconstruct, so at
    most ``MAX_UPSCALE`` (2x) is allowed: an image that would need more is dropped for that size,
    with the reason. The factor of every image is kept (:attr:`PreparedImage.scale`) and reported.

Split (held out by image)
    Whole images are held out: no source image gives both training and held-out crops. Images are
    first deduplicated by their pixels (``skimage.data.cat`` and ``chelsea`` are one array), then
    ordered by the SHA-256 of their pixels and every ``round(1 / holdout_fraction)``-th is held out
    (a choice that depends on the pixels only, not on names, seeds or the crop size's dropped
    images). Training crops are drawn at random inside training images (seeded); held-out crops
    are spread evenly over each held-out image. Statistics use the held-out *image* as their unit
    (:mod:`bench.quality.evidence`): crops of one image overlap and are not independent.
"""

from __future__ import annotations

import hashlib
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

HOLDOUT_FRACTION = 1 / 3  # a third of the distinct images (every third by pixel hash) is held out
MAX_UPSCALE = 2.0         # beyond this an upscaled image is mostly interpolation, hence too easy


@dataclass
class SourceImage:
    """One source image: ``pixels`` (H, W) float32 in [0, 1], and where it came from."""

    name: str
    pixels: np.ndarray

    @property
    def digest(self) -> str:
        """SHA-256 of the pixels (shape included): equal arrays, equal digests, whatever the names."""
        return content_digest(self.pixels)


def content_digest(pixels: np.ndarray) -> str:
    arr = np.ascontiguousarray(pixels, dtype=np.float32)
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()


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
    """A source image resized for one crop size: ``pixels`` ``(H, W)`` float32 in [0, 1], ``scale``
    the resize factor (1.0 = original pixels), ``heldout`` whether the whole image is held out,
    ``digest`` the source's pixel hash (:func:`content_digest`)."""

    name: str
    pixels: np.ndarray
    scale: float
    heldout: bool
    digest: str


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


def distinct_images(sources: Sequence[SourceImage]) -> tuple[list[SourceImage], dict[str, str]]:
    """``sources`` without repeated arrays (compared by :func:`content_digest`, not by name): the first
    of each kept, in order; ``{name: "the same pixels as <first>"}`` for the others."""
    kept, seen, dropped = [], {}, {}
    for source in sources:
        digest = source.digest
        if digest in seen:
            dropped[source.name] = f"the same pixels as {seen[digest]}"
            continue
        seen[digest] = source.name
        kept.append(source)
    return kept, dropped


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

def required_scale(image_hw: tuple[int, int], crop_hw: tuple[int, int]) -> float:
    """The smallest factor (>= 1) by which an image of ``image_hw`` must grow so a ``crop_hw`` crop fits.
    Both pairs are ``(H, W)``."""
    (h_img, w_img), (h, w) = image_hw, crop_hw
    return max(1.0, h / h_img, w / w_img)


def prepare_image(source: SourceImage, crop_hw: tuple[int, int], heldout: bool) -> PreparedImage:
    """Resize ``source`` (if it must grow) so crops of ``crop_hw`` ``(H, W)`` fit."""
    from skimage.transform import resize

    scale = required_scale(source.pixels.shape, crop_hw)
    pixels = source.pixels
    if scale > 1.0:
        new_hw = tuple(max(c, math.ceil(s * scale)) for s, c in zip(pixels.shape, crop_hw))
        pixels = resize(pixels, new_hw, order=1, mode="reflect", anti_aliasing=False, preserve_range=True).astype(np.float32)
        pixels = np.clip(pixels, 0.0, 1.0)
    return PreparedImage(source.name, np.ascontiguousarray(pixels), scale, heldout, source.digest)


def heldout_digests(sources: Sequence[SourceImage], holdout_fraction: float = HOLDOUT_FRACTION) -> set[str]:
    """The pixel hashes of the images held out: ordered by hash, every ``round(1 / fraction)``-th one
    (the last of each run), so the choice depends on the pixels alone and never on names or seeds."""
    every = max(2, round(1 / holdout_fraction))
    digests = sorted({s.digest for s in sources})
    return {d for i, d in enumerate(digests) if i % every == every - 1}


def sample_rects(images: Sequence[PreparedImage], crop_hw: tuple[int, int], per_image: int, heldout: bool,
                 rng: np.random.Generator) -> list[Rect]:
    """Crop rectangles of ``crop_hw`` ``(H, W)`` in the images of one side (``heldout``): ``per_image``
    random ones in each training image, or ``per_image`` spread evenly over each held-out image."""
    h, w = crop_hw
    rects = []
    for index, image in enumerate(images):
        if image.heldout != heldout:
            continue
        free_h, free_w = image.pixels.shape[0] - h, image.pixels.shape[1] - w
        if heldout:  # a grid of positions from corner to corner: as little overlap as the image allows
            rows = max(1, math.ceil(math.sqrt(per_image * (free_h + 1) / max(1, free_w + 1))))
            rows = min(rows, per_image)
            cols = math.ceil(per_image / rows)
            spots = [(int(round(t)), int(round(l))) for t in np.linspace(0, free_h, rows) for l in np.linspace(0, free_w, cols)]
            rects += [Rect(index, t, l, h, w) for t, l in spots[:per_image]]
        else:
            rects += [Rect(index, int(rng.integers(0, free_h + 1)), int(rng.integers(0, free_w + 1)), h, w)
                      for _ in range(per_image)]
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

    @property
    def image_names(self) -> list[str]:
        """The source image of each crop, in order (the unit the statistics resample)."""
        return [self.images[r.image].name for r in self.rects]


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
    max_upscale: float = MAX_UPSCALE
    # the baselines of this split per latent (bench.quality.baselines.BaselineCache), made on first use
    baseline_cache: Optional[object] = field(default=None, repr=False, compare=False)

    @property
    def train_images(self) -> list[PreparedImage]:
        return [im for im in self.images if not im.heldout]

    @property
    def heldout_images(self) -> list[PreparedImage]:
        return [im for im in self.images if im.heldout]

    @property
    def mean(self) -> float:
        """Mean pixel of the training images (reported, not subtracted)."""
        return float(np.mean(np.concatenate([im.pixels.ravel() for im in self.train_images])))

    @property
    def std(self) -> float:
        return float(np.std(np.concatenate([im.pixels.ravel() for im in self.train_images])))

    def describe(self) -> str:
        h, w = self.crop_hw
        scales = ", ".join(f"{im.name} x{im.scale:.2f}" for im in self.images if im.scale > 1.0) or "none"
        return (f"{w}x{h}: training {len(self.train_images)} images, {len(self.train)} crops; held out "
                f"{len(self.heldout_images)} images ({', '.join(im.name for im in self.heldout_images)}), "
                f"{len(self.heldout)} crops (whole images held out, one in {max(2, round(1 / self.holdout_fraction))} "
                f"by pixel hash; crop seed {self.seed}); upscaled (at most {self.max_upscale:g}x): {scales}")


def make_split(sources: Sequence[SourceImage], crop_hw: tuple[int, int], train_per_image: int = 64,
               heldout_per_image: int = 4, seed: int = 0, holdout_fraction: float = HOLDOUT_FRACTION,
               max_upscale: float = MAX_UPSCALE) -> Split:
    """Deduplicate ``sources``, hold out whole images, prepare them for crops of ``crop_hw`` ``(H, W)``
    and draw the two sets of crops.

    Raises ValueError on a bad argument or when either side has no usable image.
    """
    h, w = (int(v) for v in crop_hw)
    if h < 1 or w < 1:
        raise ValueError(f"bad crop size {crop_hw!r}: expected (H, W) of positive integers")
    if not 0.0 < holdout_fraction <= 0.5:
        raise ValueError(f"holdout_fraction must be in (0, 0.5], got {holdout_fraction}")
    if train_per_image < 1 or heldout_per_image < 1:
        raise ValueError(f"need at least one training and one held-out crop per image, "
                         f"got {train_per_image} and {heldout_per_image}")
    if not sources:
        raise ValueError("no source images")
    sources, dropped = distinct_images(sources)
    held = heldout_digests(sources, holdout_fraction)  # decided before any image is dropped for size
    prepared = []
    for source in sources:
        scale = required_scale(source.pixels.shape, (h, w))
        if scale > max_upscale:
            dropped[source.name] = (f"{source.pixels.shape[1]}x{source.pixels.shape[0]} would need a {scale:.2f}x upscale "
                                    f"for {w}x{h} crops (limit {max_upscale:g}x)")
            continue
        prepared.append(prepare_image(source, (h, w), source.digest in held))
    for side, heldout in (("training", False), ("held-out", True)):
        if not any(im.heldout == heldout for im in prepared):
            raise ValueError(f"no {side} image is large enough for {w}x{h} crops within a {max_upscale:g}x upscale "
                             f"({len(prepared)} usable of {len(sources)} distinct images): give more or larger images "
                             "with --images")
    rng = np.random.default_rng(seed)
    train = sample_rects(prepared, (h, w), train_per_image, heldout=False, rng=rng)
    heldout = sample_rects(prepared, (h, w), heldout_per_image, heldout=True, rng=rng)
    return Split((h, w), prepared, CropDataset(prepared, train), CropDataset(prepared, heldout), dropped, seed,
                 holdout_fraction, max_upscale)


def load_sources(images_dir: Optional[Path | str] = None) -> tuple[list[SourceImage], dict[str, str], str]:
    """The images a quality run uses: ``images_dir``'s, or the photographs bundled with scikit-image and
    matplotlib (nothing is downloaded). Repeated arrays are left out (:func:`distinct_images`).

    Returns the distinct images, ``{name: why not used}``, and a one-line description of the source.
    """
    if images_dir is not None:
        images, repeated = distinct_images(load_folder(images_dir))
        return images, repeated, f"{len(images)} distinct images from {images_dir}"
    from bench.quality.samples import read_matplotlib_samples

    photos, failed = load_skimage_photos()
    raw, failed_mpl = read_matplotlib_samples()
    samples = []
    for name, pixels in raw:
        try:
            samples.append(SourceImage(name, to_unit_gray(pixels, name)))
        except ValueError as err:
            failed_mpl[name] = str(err)
    images, repeated = distinct_images(photos + samples)
    if len(images) < 2:
        raise ValueError("fewer than 2 of the bundled images could be loaded: "
                         + "; ".join(f"{k}: {v}" for k, v in {**failed, **failed_mpl}.items()) + "; give a folder with --images")
    import matplotlib

    return images, {**failed, **failed_mpl, **repeated}, (
        f"{len(images)} distinct images: {sum(1 for i in images if not i.name.startswith('matplotlib:'))} bundled with "
        f"scikit-image {_skimage_version()}, {sum(1 for i in images if i.name.startswith('matplotlib:'))} with matplotlib "
        f"{matplotlib.__version__}")
