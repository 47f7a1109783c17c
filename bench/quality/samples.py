"""matplotlib's bundled sample images (``mpl-data/sample_data``, installed with matplotlib, read offline)
as more source images for the quality and downstream runs, returned as stored (grey or colour, any dtype)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# matplotlib's sample data (mpl-data/sample_data, installed with matplotlib): a photograph, a product
# photograph, a digital elevation model and an MRI slice. Its logos, tables and tiny grids are left out.
MATPLOTLIB_SAMPLES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "jacksboro_fault_dem.npz", "s1045.ima.gz")


def _read_matplotlib_sample(name: str) -> np.ndarray:
    import gzip

    import matplotlib.cbook as cbook

    if name.endswith(".npz"):
        with np.load(cbook.get_sample_data(name, asfileobj=False)) as data:
            return np.asarray(data["elevation"], dtype=np.float32)  # metres: to_unit_gray stretches its range
    if name.endswith(".ima.gz"):  # a raw 256x256 little-endian 16-bit MRI slice (matplotlib's own example reads it so)
        with gzip.open(cbook.get_sample_data(name, asfileobj=False)) as f:
            return np.frombuffer(f.read(), np.dtype("<u2")).reshape(256, 256).astype(np.float32)
    from skimage import io

    return io.imread(cbook.get_sample_data(name, asfileobj=False))


def read_matplotlib_samples(names: Sequence[str] = MATPLOTLIB_SAMPLES) -> tuple[list[tuple[str, np.ndarray]], dict[str, str]]:
    """matplotlib's bundled sample images that load here (offline), ``(name, array as stored)`` each, and
    ``{name: why not}`` for the rest (``bench.quality.dataset.load_sources`` makes them grey in [0, 1])."""
    images, failed = [], {}
    for name in names:
        try:
            images.append((f"matplotlib:{name}", np.asarray(_read_matplotlib_sample(name))))
        except Exception as err:  # noqa: BLE001 - a missing sample file or an unreadable one, one message
            failed[f"matplotlib:{name}"] = f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
    return images, failed
