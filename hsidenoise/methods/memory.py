"""What a run needs in memory: the pipeline's peak and, for the subspace methods, their working set.

:func:`estimate_memory` is what ``info`` reports and what :func:`hsidenoise.denoise.denoise` checks
(:func:`check_memory`) against :func:`available_memory` before it writes a byte. It sits with the methods because
the method decides the working set on top of the pipeline's (the low-rank front end's fit and its DCT groups).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsidenoise.errors import ConfigError, ResourceError
from hsidenoise.statistics import CHUNK_BYTES, PAIR_SAMPLE
from hsidenoise.tiling import TileConfig, plan_spatial_axis

SAMPLE_PIXELS = 65536
"""Pixel spectra sampled by the statistics pass (for the Gram matrix and the low-rank front end); the tool
(:func:`hsidenoise.denoise.denoise`) samples this many."""


def check_batch_size(batch_size: int) -> None:
    """Raise ConfigError unless ``batch_size`` is a whole number >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1; got {batch_size!r}")


def estimate_memory(
    shape: tuple[int, int, int],
    dtype: np.dtype | str,
    config: TileConfig,
    *,
    batch_size: int = 1,
    sample_pixels: int = SAMPLE_PIXELS,
    method: str | None = None,
) -> int:
    """Bytes the pipeline itself holds at its peak, plus the subspace method's working memory when `method` is set.

    The pipeline: the pixel sample of the statistics, plus the larger of one statistics strip and (tiles in
    flight + stitching buffers for one row of overlaps + one block being written). It does not grow with the
    number of rows. With ``method="lowrank"`` or ``"decsc"`` (the subspace front end both run), the
    method's working memory is added: the larger of the statistics sample as float64 spectra (the fit's working
    copy) and the spatial noise estimate's copies of the neighbour pairs (:data:`NEIGHBOUR_FIT_COPIES`), and
    `SUBSPACE_DCT_COPIES` block-coefficient tensors of the DCT eigen-image denoiser on one tile
    (:func:`hsidenoise.subspace.eigenimages.dct_group_bytes`, for min(B, max_rank) eigen-images: the rank is
    only known after the fit, so its bound is taken); a DECSC network's own memory is not. The interpreter and its
    imports are not counted (see :data:`hsidenoise.quality.describe.RUN_PROCESS_FLOOR_BYTES`).

    Args:
        shape: (B, H, W) of the cube. dtype: its data type. config: the tiling. batch_size: tiles per call.
        sample_pixels: pixel spectra kept by the statistics pass.
        method: a ``--method`` name, or None for the pipeline alone.
    """
    bands, height, width = shape
    itemsize = np.dtype(dtype).itemsize
    tile_height, tile_width = min(config.tile, height), min(config.tile, width)
    tile_values = bands * tile_height * tile_width
    pairs = min(PAIR_SAMPLE, height * max(width - 2, 0))
    sample = (min(sample_pixels, height * width) + 2 * pairs) * bands * 4  # the pixel sample and the neighbour pairs
    strip = max(CHUNK_BYTES // itemsize, bands * width) * (itemsize + 8 + 1)  # as read, as float, valid mask
    in_flight = tile_values * itemsize + batch_size * tile_values * 2 * 4  # one raw tile; inputs and outputs
    row_overlap, col_overlap = (
        max((before.stop - after.start for before, after in zip(plan, plan[1:])), default=0)
        for plan in (plan_spatial_axis(height, config), plan_spatial_axis(width, config))
    )
    stitching = bands * (row_overlap * width + col_overlap * tile_height) * 4 * 2 + tile_values * 4
    block = tile_values * (itemsize + 2 * 8)  # restored input, output block, its cast in the writer
    pipeline = sample + max(strip, in_flight + stitching + block)
    if method not in ("lowrank", "decsc"):
        return pipeline
    from hsidenoise.subspace.config import LowRankConfig
    from hsidenoise.subspace.eigenimages import dct_group_bytes

    rank_bound = min(bands, LowRankConfig().max_rank)
    fit = max(min(sample_pixels, height * width), NEIGHBOUR_FIT_COPIES * pairs) * bands * 8
    return pipeline + fit + SUBSPACE_DCT_COPIES * dct_group_bytes(tile_height, tile_width, rank_bound)


NEIGHBOUR_FIT_COPIES = 9
"""float64 (pairs x B) arrays alive at once in the spatial noise estimate
(:func:`hsidenoise.subspace.neighbour_noise.spatial_noise`): both halves as given and cleaned, the joined and
centred (pairs x 2B) matrices and the residuals."""

SUBSPACE_DCT_COPIES = 4
"""Block-coefficient tensors of one DCT image group (:func:`hsidenoise.subspace.eigenimages.dct_group_bytes`)
counted for the subspace method's per-tile peak: about three are alive at once, plus what the allocator keeps.
Calibrated with ``bench/memory.py --estimate`` (``run --method lowrank``, one thread; the synthetic scenes and
the real cubes of bench/README.md): the whole-process estimate is within about 25 % of the measured peak."""


def available_memory() -> int | None:
    """Bytes of memory this process can still get (MemAvailable, capped by a cgroup limit), None if unknown."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return available
    if limit.isdigit() and available is not None:
        available = min(available, int(limit) - current)
    return available


def check_memory(
    shape: tuple[int, int, int], dtype: np.dtype | str, config: TileConfig, *, batch_size: int = 1
) -> None:
    """Raise ResourceError when :func:`estimate_memory` exceeds the memory available now."""
    check_batch_size(batch_size)
    needed = estimate_memory(shape, dtype, config, batch_size=batch_size)
    available = available_memory()
    if available is not None and needed > available:
        raise ResourceError(
            f"denoising a {shape[0]} x {shape[1]} x {shape[2]} cube needs about {needed / 2**20:.0f} MiB of memory "
            f"but {available / 2**20:.0f} MiB are available; lower --tile or --batch-size, or free memory"
        )
