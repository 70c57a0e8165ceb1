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
PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs: 1 writes the report's plots about 0.8 s faster (Santa Barbara, CPU) than the default 6
for files about 7 % larger (measured with bench-free timing of ``run --report``, CHANGELOG)."""


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
    options = {"format": "png", "dpi": PNG_DPI, "pil_kwargs": {"compress_level": PNG_COMPRESS_LEVEL}}
    return _write_atomically(Path(path), lambda stream: figure.savefig(stream, **options))


def _new_figure(width: float, height: float) -> Figure:
    """A Figure bound to an Agg canvas (no pyplot state, no display needed).

    No layout engine: the plots place their axes with :func:`_margins`, fixed in inches. matplotlib's
    constrained layout measured every tick label of every axes twice per figure and cost about a third of the
    report's plotting time (Santa Barbara: 1.2 s of CPU of about 4 s)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _margins(
    width: float,
    height: float,
    *,
    left: float = 0.85,
    right: float = 0.2,
    top: float = 0.6,
    bottom: float = 0.55,
    hspace: float = 0.2,
    wspace: float = 0.2,
) -> dict[str, float]:
    """``gridspec_kw`` for ``subplots`` of a ``width`` x ``height`` inch (sub)figure: margins in inches (room for the
    axis labels and titles), ``hspace`` / ``wspace`` as matplotlib's fractions of the mean axes height / width."""
    return {
        "left": left / width,
        "right": 1.0 - right / width,
        "top": 1.0 - top / height,
        "bottom": bottom / height,
        "hspace": hspace,
        "wspace": wspace,
    }


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
