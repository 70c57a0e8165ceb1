"""What the user chose for a run's ``--report``: the bands of the profile plot (``--profile-bands``) and the pixels
of the spectra plot (``--spectra-pixels``); None for each means "measured" (the most striped and noisy bands;
the brightest, darkest, median and most changed pixels).

:meth:`ReportChoices.parse` reads the command-line texts (a usage error when malformed or given without
``--report``); :meth:`ReportChoices.check` refuses, from a cube's shape, bands or pixels it does not have, so a
batch stops before any work rather than after its first run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hsidenoise.errors import ConfigError

MAX_SPECTRA_PIXELS = 8
"""The most pixels ``spectra.png`` draws (one panel each)."""


@dataclass(frozen=True)
class ReportChoices:
    """The report's user choices.

    Attributes:
        profile_bands: bands of the row/column-mean profile plot, numbered from 0; None: measured.
        spectra_pixels: (row, col) pixels of ``spectra.png``, numbered from 0 in the full cube; None: the brightest,
            darkest, median and most changed pixels of the preview.
    """

    profile_bands: tuple[int, ...] | None = None
    spectra_pixels: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def parse(cls, profile_bands: str | None, spectra_pixels: str | None, *, report: Path | None) -> ReportChoices:
        """``--profile-bands 3,103,150`` and ``--spectra-pixels 10,20;300,41`` as numbers (from 0); whether each
        input has them is :meth:`check`'s.

        Raises:
            ConfigError: not whole numbers >= 0 in the expected form, more than :data:`MAX_SPECTRA_PIXELS` pixels,
                or a choice given without ``--report``.
        """
        for text, flag, what in ((profile_bands, "--profile-bands", "profile plot"),
                                 (spectra_pixels, "--spectra-pixels", "spectra plot")):  # fmt: skip
            if text is not None and report is None:
                raise ConfigError(f"{flag} chooses what the report's {what} shows; add --report DIR")
        return cls(
            profile_bands=None if profile_bands is None else _parse_bands(profile_bands),
            spectra_pixels=None if spectra_pixels is None else _parse_pixels(spectra_pixels),
        )

    def check(self, name: str, shape: Sequence[int]) -> None:
        """Refuse choices that a (bands, rows, cols) cube called ``name`` does not have.

        Raises:
            ConfigError: a band or a pixel outside the cube.
        """
        count, rows, cols = (int(n) for n in shape)
        if self.profile_bands is not None:
            outside = [band for band in self.profile_bands if not 0 <= band < count]
            if outside:
                raise ConfigError(
                    f"profile band(s) {', '.join(map(str, outside))} not in {name}, which has {count} bands "
                    f"numbered 0 to {count - 1} (as in the report); pick bands every input has"
                )
        for row, col in self.spectra_pixels or ():
            if not (row < rows and col < cols):
                raise ConfigError(
                    f"--spectra-pixels: pixel {row},{col} is not in {name}, which has {rows} rows and {cols} columns "
                    f"numbered from 0 (ROW,COL); pick pixels every input has"
                )


def _parse_bands(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise ConfigError(
            f"--profile-bands takes band numbers from 0 separated by commas, e.g. 3,103,150; got {text!r}"
        )
    return tuple(dict.fromkeys(int(part) for part in parts))


def _parse_pixels(text: str) -> tuple[tuple[int, int], ...]:
    pixels = []
    for item in text.split(";"):
        parts = [part.strip() for part in item.split(",")]
        if len(parts) != 2 or not all(part.isdigit() for part in parts):
            raise ConfigError(
                f"--spectra-pixels takes ROW,COL pairs numbered from 0, separated by ';' (quote them), e.g. "
                f"'10,20;300,41'; got {text!r}"
            )
        pixels.append((int(parts[0]), int(parts[1])))
    chosen = tuple(dict.fromkeys(pixels))
    if len(chosen) > MAX_SPECTRA_PIXELS:
        raise ConfigError(f"--spectra-pixels takes at most {MAX_SPECTRA_PIXELS} pixels, got {len(chosen)}")
    return chosen
