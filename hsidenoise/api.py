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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import open_cube, read_cube, write_cube

if TYPE_CHECKING:
    from hsidenoise.quality.evaluate import NoReferenceEvaluation, ReferenceEvaluation

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
        method, model=model, device=device, config=config, spatial=spatial, adapt_seconds=adapt_seconds
    )
    data = denoise_array(cube.data, denoiser, config, nodata=cube.meta.nodata)
    meta = cube.meta if cube.meta.dtype is not None else replace(cube.meta, dtype=cube.data.dtype)
    return Cube(data, meta)


def evaluate(
    denoised: str | Path,
    *,
    ref: str | Path | None = None,
    noisy: str | Path | None = None,
    out_dir: str | Path | None = None,
    ssim: str = "wang",
    peak: float | None = None,
    method: str | None = None,
    model: str | None = None,
    spatial: str = "auto",
    crop: int = 128,
    seed: int = 0,
    var: str | None = None,
) -> ReferenceEvaluation | NoReferenceEvaluation:
    """Score a denoised cube file, as ``hsidenoise eval`` does.

    With ``ref``: MPSNR, SSIM, SAM and ERGAS against the clean reference (and of ``noisy`` too, when given)
    (:func:`hsidenoise.quality.evaluate.evaluate_with_reference`). Without it: the no-reference figures against
    the noisy input ``noisy``, with SURE when ``method`` names the method that denoised
    (:func:`hsidenoise.quality.evaluate.evaluate_without_reference`). The report files go to ``out_dir`` when
    given. ``ssim`` is for the reference mode; ``method``, ``model``, ``spatial``, ``crop`` and ``seed`` for the
    other.

    Raises:
        ConfigError: neither ``ref`` nor ``noisy``, or options of the other mode.
        CubeShapeError: cubes of different shapes.
    """
    from hsidenoise.errors import ConfigError
    from hsidenoise.quality.evaluate import evaluate_with_reference, evaluate_without_reference

    folder = None if out_dir is None else Path(out_dir)
    if ref is not None:
        if method is not None or model is not None:
            raise ConfigError("method and model are for the no-reference mode (noisy= without ref=)")
        return evaluate_with_reference(
            Path(denoised), Path(ref), noisy=None if noisy is None else Path(noisy), out_dir=folder, ssim=ssim,
            peak=peak, var=var,
        )  # fmt: skip
    if noisy is None:
        raise ConfigError("eval needs --ref REFERENCE (full-reference scores) or --noisy NOISY (no-reference figures)")
    return evaluate_without_reference(
        Path(denoised), Path(noisy), out_dir=folder, peak=peak, method=method, model=model, spatial=spatial,
        crop=crop, seed=seed, var=var,
    )  # fmt: skip
