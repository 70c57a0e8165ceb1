"""Output data types: which dtype a write uses, whether a format can store it, and the cast to it.

`resolve_dtype` turns ``"same"`` into the source's dtype; `check_dtype` refuses a dtype a format cannot store.
Values that do not fit the output dtype are clipped to its range and counted (`cast_and_count`), so a
float64 1e39 written as float32 becomes 3.4e38, never Inf; values too small for it are counted too
(`count_underflow`: float64 1e-300 written as float32 becomes 0).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from hsidenoise.cube import CubeMeta
from hsidenoise.errors import ConfigError


def resolve_dtype(dtype: str | np.dtype | type, meta: CubeMeta, fallback: np.dtype | None = None) -> np.dtype:
    """The output dtype: ``"same"`` means `meta.dtype` (else `fallback`), anything else is passed to numpy.

    Raises:
        ConfigError: ``"same"`` with no known source dtype, or a name numpy does not know.
    """
    if isinstance(dtype, str) and dtype == "same":
        source = meta.dtype if meta.dtype is not None else fallback
        if source is None:
            raise ConfigError("dtype='same' needs the source dtype (meta.dtype is not set); pass a dtype instead")
        return np.dtype(source).newbyteorder("=")
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise ConfigError(f"unknown dtype {dtype!r}; use 'float32', 'same' or a numpy dtype name") from error
    if resolved.kind not in "fiub":
        raise ConfigError(f"dtype {resolved} is not a real numeric type; use e.g. 'float32', 'uint16' or 'same'")
    return resolved.newbyteorder("=")


def check_dtype(dtype: np.dtype, supported: Iterable[np.dtype], format_name: str) -> None:
    """Raise ConfigError when `format_name` cannot store `dtype`; the message lists what it can store."""
    supported = [np.dtype(d) for d in supported]
    if np.dtype(dtype) not in supported:
        names = ", ".join(sorted(d.name for d in supported))
        raise ConfigError(f"{format_name} cannot store {np.dtype(dtype).name}; choose one of {names}")


def cast_block(block: np.ndarray, dtype: np.dtype, nodata: float | None = None) -> np.ndarray:
    """`cast_and_count` without the count."""
    return cast_and_count(block, dtype, nodata)[0]


def count_underflow(block: np.ndarray, cast: np.ndarray) -> int:
    """How many non-zero values of `block` became zero in `cast`: too small for a narrower float type (float64
    1e-300 into float32). Rounding to an integer type is not counted."""
    if block.dtype.kind != "f" or cast.dtype.kind != "f" or cast.dtype.itemsize >= block.dtype.itemsize:
        return 0
    return int(np.count_nonzero((cast == 0) & (block != 0)))


def cast_and_count(block: np.ndarray, dtype: np.dtype, nodata: float | None = None) -> tuple[np.ndarray, int]:
    """Cast data to the output dtype, clipping what does not fit; return the cast block and how many values were
    clipped.

    Floats: finite values beyond the type's largest magnitude (float64 1e39 into float32) become that largest
    value with their sign, so finite input never gives Inf; NaN and ±Inf stay as they are. Integers: rounded to
    nearest and clipped to the type's range (±Inf too); NaN becomes `nodata` when that is set, else 0. The
    values are taken to be in the output file's units already (no scale factor is applied here).
    """
    dtype = np.dtype(dtype)
    if block.dtype.kind == "b":
        return block.astype(dtype, copy=False), 0
    if dtype.kind == "f":
        limit = float(np.finfo(dtype).max)
        source_max = float(np.finfo(block.dtype).max) if block.dtype.kind == "f" else float(np.iinfo(block.dtype).max)
        if source_max <= limit:
            return block.astype(dtype, copy=False), 0
        values = block if block.dtype.kind == "f" else block.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            over = np.isfinite(values) & (np.abs(values) > limit)
        clipped = int(np.count_nonzero(over))
        if clipped:
            values = np.where(over, np.copysign(limit, values), values)
        return values.astype(dtype), clipped
    info = np.iinfo(dtype)
    if block.dtype.kind in "iu":
        source = np.iinfo(block.dtype)
        low, high = max(info.min, source.min), min(info.max, source.max)
        if (low, high) == (source.min, source.max):
            return block.astype(dtype, copy=False), 0
        clipped = int(np.count_nonzero((block < low) | (block > high)))
        return np.clip(block, low, high).astype(dtype), clipped
    # Float to integer, in float64: the bounds are the largest float64 values inside the range (2**63 - 1 is not one).
    low, high = np.float64(info.min), np.float64(info.max)
    if int(high) > info.max:
        high = np.nextafter(high, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        values = np.rint(block.astype(np.float64, copy=False))
        outside = (values < low) | (values > high)
        clipped = int(np.count_nonzero(outside))
        values = np.where(np.isnan(values), 0.0 if nodata is None else nodata, values)
        return np.clip(values, low, high).astype(dtype), clipped
