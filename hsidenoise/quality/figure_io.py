"""Figure plumbing shared by the report's plot modules: a PNG written atomically, an Agg figure without pyplot,
the band axis and band labels (split from :mod:`hsidenoise.quality.plots` so that other plot modules need not
import it). matplotlib is imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from hsidenoise.errors import CubeShapeError, CubeWriteError
from hsidenoise.quality.labels import wavelength_unit_symbol

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PNG_DPI = 110


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write through ``write`` into a temporary file next to ``path``, then rename it onto ``path``."""
    from hsidenoise.io.staging import staged

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with staged(path) as temporary, open(temporary, "wb") as stream:
            write(stream)
    except OSError as error:
        raise CubeWriteError(
            f"cannot write the report file {path}: {error.strerror or error}; check the directory, space and "
            "permissions"
        ) from error
    return path


def _save_figure(figure: Figure, path: Path) -> Path:
    return _write_atomically(Path(path), lambda stream: figure.savefig(stream, format="png", dpi=PNG_DPI))


def _new_figure(width: float, height: float) -> Figure:
    """A Figure bound to an Agg canvas (no pyplot state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _band_axis(
    band_count: int, wavelengths: np.ndarray | Sequence[float] | None, units: str | None = None
) -> tuple[np.ndarray, str]:
    """x values and label for per-band plots: wavelengths (with their units when known), else band indices."""
    if wavelengths is None:
        return np.arange(band_count), "band index (from 0)"
    values = np.asarray(wavelengths, dtype=np.float64)
    if values.shape != (band_count,):
        raise CubeShapeError(
            f"expected {band_count} wavelengths (one per band), got {values.size}; pass the cube's own wavelengths"
        )
    symbol = wavelength_unit_symbol(units)
    return values, "wavelength" if symbol is None else f"wavelength ({symbol})"


def _band_label(band: int, wavelengths: np.ndarray | Sequence[float] | None, units: str | None = None) -> str:
    """``band 103 (1.3232 µm)``: the 0-based index, and the wavelength with its unit when known."""
    if wavelengths is None:
        return f"band {band}"
    value = float(np.asarray(wavelengths, dtype=np.float64)[band])
    if not math.isfinite(value):
        return f"band {band}"
    symbol = wavelength_unit_symbol(units)
    return f"band {band} ({value:.5g}{'' if symbol is None else ' ' + symbol})"
