"""What ``hsidenoise info`` tells about a cube, as one JSON-able dictionary.

One streaming pass (:func:`hsidenoise.statistics.compute_statistics`) gives the band ranges, the dead, NaN and
nodata bands and a pixel sample; the per-band noise sigma is the robust HySime-style regression estimate of
:func:`hsidenoise.subspace.estimate_band_noise` on that sample (each band regressed on all the others), which
is not fooled by texture the way a spatial estimate is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

RUN_PROCESS_FLOOR_BYTES = 262 << 20
"""Resident memory of ``hsidenoise run`` before any cube: Python with numpy, scipy and torch (CPU) imported;
measured by ``bench/memory.py --estimate`` (``run --method lowrank`` on a 32² cube, Linux x86-64)."""


def describe_cube(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    var: str | None = None,
    axes: str | None = None,
    noise: bool = True,
) -> dict[str, Any]:
    """Shape, type, layout, wavelengths, georeferencing, problem bands, per-band noise and memory needs of a cube.

    ``memory_needed_bytes``: ``run_pipeline`` is what the streaming pipeline holds (the model not counted);
    ``run_peak_lowrank`` the expected peak resident memory of the whole ``run --method lowrank`` process.

    Args:
        path: any cube :func:`hsidenoise.io.open_cube` reads.
        fmt, var, axes: as for :func:`hsidenoise.io.open_cube`.
        noise: also estimate the per-band noise sigma (needs at least a few hundred valid pixels).

    Returns:
        A JSON-able dictionary (numbers, lists, strings, None).
    """
    from hsidenoise.methods.memory import estimate_memory
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
        "georeferencing": georeferencing(meta),
        "provenance": dict(meta.provenance) or None,
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
            "run_peak_lowrank": RUN_PROCESS_FLOOR_BYTES
            + int(estimate_memory(reader.shape, dtype, TileConfig(), method="lowrank")),
            "whole_cube_float32": int(bands * rows * cols * 4),
        },
    }
    if noise:
        facts["noise_sigma"] = _band_noise(stats)
    return facts


def georeferencing(meta: Any) -> dict[str, Any] | None:
    """Where the cube lies: CRS, transform, pixel size and rotation (ENVI ``map info`` convention); None if nowhere.

    Returns:
        ``{"crs", "crs_wkt", "transform", "origin", "pixel_size", "rotation_degrees", "map_info"}``: ``crs`` is
        the authority code (``"EPSG:32611"``) or the CRS's name; ``transform`` is (a, b, c, d, e, f) in
        rasterio order; ``origin`` the map coordinates of the outer corner of the upper-left pixel;
        ``pixel_size`` (x, y) along the grid; ``rotation_degrees`` counterclockwise, 0 for north-up.
    """
    import math

    if meta.transform is None and meta.crs_wkt is None:
        return None
    crs = None
    if meta.crs_wkt:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        try:
            parsed = CRS.from_wkt(meta.crs_wkt)
            authority = parsed.to_authority()
            crs = ":".join(authority) if authority else (parsed.to_dict().get("proj") and parsed.wkt.split('"')[1])
        except (CRSError, IndexError):
            crs = "unrecognised WKT"
    facts: dict[str, Any] = {
        "crs": crs,
        "crs_wkt": meta.crs_wkt,
        "transform": None,
        "origin": None,
        "pixel_size": None,
        "rotation_degrees": None,
        "map_info": list(meta.map_info) if meta.map_info else None,
    }
    if meta.transform is not None:
        a, b, c, d, e, f = (float(v) for v in meta.transform)
        facts["transform"] = [a, b, c, d, e, f]
        facts["origin"] = [c, f]
        facts["pixel_size"] = [math.hypot(a, d), math.hypot(b, e)]
        facts["rotation_degrees"] = 0.0 if b == 0 and d == 0 else math.degrees(math.atan2(d, a))
    return facts


def _band_noise(stats: Any) -> dict[str, Any]:
    from hsidenoise.errors import HsiDenoiseError
    from hsidenoise.subspace import estimate_band_noise

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
