"""The Python API for notebooks and scripts: read a cube, denoise it in memory, write it.

    from hsidenoise.api import read_cube, denoise, write_cube

    cube = read_cube("examples/santa_barbara.hdr")        # Cube: data (B, H, W) + metadata
    clean = denoise(cube)                                  # the same pipeline as `hsidenoise run`
    write_cube("out/clean.hdr", clean, dtype="same")      # any format, by suffix
    scores = evaluate("out/clean.hdr", ref="truth.hdr")    # what `hsidenoise eval` prints

`denoise` runs the method of ``hsidenoise run --method …`` on a cube held in memory (tiles, blending, dead and
NaN bands passed through, exactly as on files). For scenes larger than memory use
:func:`hsidenoise.denoise.denoise`, which streams file to file, or the ``run`` command.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import open_cube, read_cube, write_cube
from hsidenoise.quality.evaluate import evaluate

__all__ = ["Cube", "CubeMeta", "denoise", "evaluate", "open_cube", "read_cube", "write_cube"]


def denoise(
    cube: Cube | np.ndarray,
    *,
    method: str = "lowrank",
    model: str | None = None,
    device: str = "auto",
    spatial: str = "auto",
    tile: int = 256,
    overlap: int = 32,
    adapt_seconds: float = 0.0,
    band_blend: bool = True,
) -> Cube:
    """Denoise a cube held in memory.

    Args:
        cube: a :class:`Cube` (its ``meta.nodata`` marks missing pixels) or a (B, H, W) array.
        method: ``"lowrank"`` (default, no weights), ``"decsc"`` (shipped subspace weights) or ``"identity"``.
        model: DECSC only: a weights file or preset name (see ``hsidenoise models``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        spatial: lowrank only: the eigen-image denoiser (``"auto"``, ``"dct"``, ``"bm3d"``, ``"none"``).
        tile, overlap: spatial tiling in pixels, as ``--tile`` / ``--overlap``.
        adapt_seconds: DECSC subspace weights only: seconds of self-supervised adaptation (``--adapt``).
        band_blend: DECSC with DCT-CSC weights: the per-band SURE blend of the model's change (``--no-band-blend``:
            off).

    Returns:
        A new :class:`Cube`: data (B, H, W) float32 (float64 for float64 or 32/64-bit integer input), the
        input's metadata (so ``write_cube(..., dtype="same")`` writes the input's data type).

    Raises:
        HsiDenoiseError: a bad method, model or tiling, or an array that is not 3-D.
    """
    from hsidenoise.denoise import denoise_array
    from hsidenoise.methods import build_method
    from hsidenoise.tiling import TileConfig

    if not isinstance(cube, Cube):
        array = np.asarray(cube)
        cube = Cube(array, CubeMeta(dtype=array.dtype))
    config = TileConfig(tile=tile, overlap=overlap)
    denoiser = build_method(
        method, model=model, device=device, config=config, spatial=spatial, adapt_seconds=adapt_seconds,
        band_blend=band_blend,
    )
    data = denoise_array(cube.data, denoiser, config, nodata=cube.meta.nodata)
    meta = cube.meta if cube.meta.dtype is not None else replace(cube.meta, dtype=cube.data.dtype)
    return Cube(data, meta)
