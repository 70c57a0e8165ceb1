"""What ``hsidenoise info`` tells about a cube, as one JSON-able dictionary.

One streaming pass (:func:`hsidenoise.statistics.compute_statistics`) gives the band ranges, the dead, NaN and
nodata bands and a pixel sample; the per-band noise sigma is the robust HySime-style regression estimate of
:func:`hsidenoise.lowrank.estimate_band_noise` on that sample (each band regressed on all the others), which
is not fooled by texture the way a spatial estimate is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def describe_cube(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    var: str | None = None,
    axes: str | None = None,
    noise: bool = True,
) -> dict[str, Any]:
    """Shape, type, layout, wavelengths, problem bands, per-band noise and memory needs of a cube file.

    Args:
        path: any cube :func:`hsidenoise.io.open_cube` reads.
        fmt, var, axes: as for :func:`hsidenoise.io.open_cube`.
        noise: also estimate the per-band noise sigma (needs at least a few hundred valid pixels).

    Returns:
        A JSON-able dictionary (numbers, lists, strings, None).
    """
    from hsidenoise.denoise import estimate_memory
    from hsidenoise.io import format_for, open_cube
    from hsidenoise.statistics import compute_statistics
    from hsidenoise.tiling import TileConfig

    path = Path(path)
    with open_cube(path, fmt=fmt, var=var, axes=axes) as reader:
        bands, rows, cols = reader.shape
        meta = reader.meta
        stats = compute_statistics(reader, nodata=meta.nodata)
        dtype = np.dtype(reader.dtype)
    facts: dict[str, Any] = {
        "path": str(path),
        "format": format_for(path, fmt).name,
        "shape": {"bands": bands, "rows": rows, "cols": cols},
        "dtype": dtype.name,
        "interleave": meta.interleave,
        "size_bytes": int(bands * rows * cols * dtype.itemsize),
        "wavelength_range": _wavelength_range(meta.wavelengths),
        "wavelength_units": meta.wavelength_units,
        "nodata": meta.nodata,
        "scale_factor": meta.scale_factor,
        "dead_bands": stats.dead_bands.tolist(),
        "nan_or_nodata_bands": stats.nan_bands.tolist(),
        "partially_invalid_bands": stats.partial_invalid.tolist(),
        "bad_band_list_zeros": (
            np.flatnonzero(np.asarray(meta.bbl) == 0).tolist() if getattr(meta, "bbl", None) is not None else []
        ),
        "band_min": _finite_list(stats.minimum),
        "band_max": _finite_list(stats.maximum),
        "memory_needed_bytes": {
            "run_pipeline": int(estimate_memory(reader.shape, dtype, TileConfig())),
            "whole_cube_float32": int(bands * rows * cols * 4),
        },
    }
    if noise:
        facts["noise_sigma"] = _band_noise(stats)
    return facts


def _band_noise(stats: Any) -> dict[str, Any]:
    from hsidenoise.errors import HsiDenoiseError
    from hsidenoise.lowrank import estimate_band_noise

    valid = stats.valid_bands
    sigma = np.full(stats.shape[0], np.nan)
    note = "robust regression of each band on the others (HySime), data units"
    if valid.size >= 3 and stats.pixel_count >= 4 * valid.size:
        try:
            sigma[valid] = estimate_band_noise(stats.sample_spectra[:, valid].astype(np.float64))
        except HsiDenoiseError as error:
            note = f"not estimated: {error}"
    else:
        note = "not estimated: needs at least 3 valid bands and 4 pixels per band"
    span = stats.maximum - stats.minimum
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(span > 0, sigma / span, np.nan)
    estimated = np.flatnonzero(np.isfinite(relative))
    noisiest = estimated[np.argsort(-relative[estimated], kind="stable")][:5]
    return {
        "method": note,
        "per_band": _finite_list(sigma),
        "relative_to_range_median": float(np.median(relative[estimated])) if estimated.size else None,
        "noisiest_bands": noisiest.tolist(),
    }


def _wavelength_range(wavelengths: Any) -> list[float] | None:
    if wavelengths is None or len(wavelengths) == 0:
        return None
    values = np.asarray(wavelengths, dtype=np.float64)
    return [float(np.nanmin(values)), float(np.nanmax(values))]


def _finite_list(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]
