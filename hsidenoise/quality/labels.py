"""What a report's plots say about the data besides the numbers: the file, the method and the units.

:class:`PlotLabels` carries the file, the method and the units into every plot; :func:`value_units_of` reads the
data's units from a cube's metadata, :func:`wavelength_unit_symbol` turns an ENVI ``wavelength units`` spelling
into a symbol. No matplotlib here: these are the words, :mod:`hsidenoise.quality.plots` draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hsidenoise.cube import CubeMeta

WAVELENGTH_UNIT_SYMBOLS = {
    "nanometers": "nm", "nanometer": "nm", "nanometres": "nm", "nm": "nm",
    "micrometers": "µm", "micrometer": "µm", "micrometres": "µm", "microns": "µm", "micron": "µm", "um": "µm",
    "µm": "µm", "millimeters": "mm", "mm": "mm", "centimeters": "cm", "cm": "cm", "meters": "m", "m": "m",
    "angstroms": "Å", "wavenumber": "cm⁻¹", "ghz": "GHz", "mhz": "MHz",
}
"""ENVI ``wavelength units`` spellings -> symbols; ``Index`` and ``Unknown`` mean no unit."""


@dataclass(frozen=True)
class PlotLabels:
    """What a report's plots say about the data besides the numbers.

    Attributes:
        source: the input's file name, shown in titles.
        method: the denoising method, shown in titles and legends.
        value_units: the data's units (e.g. ``"reflectance"``), else the plots say "stored units".
        wavelength_units: e.g. ``"Nanometers"`` (ENVI spelling) or ``"nm"``; None when unknown.
        pixel_step: the plotted cubes are every k-th row and column of the file (a report preview);
            pixel axes count the file's pixels.
    """

    source: str | None = None
    method: str | None = None
    value_units: str | None = None
    wavelength_units: str | None = None
    pixel_step: int = 1

    def title(self, what: str) -> str:
        """``what`` followed by the file and the method when known."""
        parts = [part for part in (self.source, None if self.method is None else f"method {self.method}") if part]
        return f"{what}: {', '.join(parts)}" if parts else what

    @property
    def values(self) -> str:
        return self.value_units or "stored units"

    @property
    def after(self) -> str:
        return f"after ({self.method})" if self.method else "after (denoised)"

    def pixel_axis(self, name: str) -> str:
        step = "" if self.pixel_step == 1 else f"; preview of every {nth(self.pixel_step)} {name}"
        return f"{name} index (pixel{step})"


def nth(number: int) -> str:
    """2 -> "2nd", 3 -> "3rd", 11 -> "11th", 21 -> "21st"."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def wavelength_unit_symbol(units: str | None) -> str | None:
    """``"Nanometers"`` -> ``"nm"``, ``"Micrometers"`` -> ``"µm"``; an unknown spelling as it is; None for none."""
    if units is None or not str(units).strip() or str(units).strip().lower() in ("index", "unknown"):
        return None
    return WAVELENGTH_UNIT_SYMBOLS.get(str(units).strip().lower(), str(units).strip())


def value_units_of(meta: CubeMeta) -> str | None:
    """The data's units as the metadata states them, or None.

    An ENVI ``data units`` key (or ``units``, any case) as written; else a ``reflectance scale factor`` f as
    ``"reflectance × f"`` (ENVI: stored value = reflectance × f).
    """
    for key, value in (meta.extra or {}).items():
        if key.strip().lower() in ("data units", "units") and str(value).strip():
            return str(value).strip()
    if meta.scale_factor is not None and math.isfinite(meta.scale_factor) and meta.scale_factor > 0:
        return "reflectance" if meta.scale_factor == 1 else f"reflectance × {meta.scale_factor:g}"
    return None
