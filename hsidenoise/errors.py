"""One root exception for everything hsidenoise raises on bad input or a failed run.

Each subclass also inherits the matching builtin, so callers may catch either
(``except hsidenoise.errors.CubeReadError`` or ``except OSError``). The CLI catches
:class:`HsiDenoiseError`, prints its message as one line and exits 1 (bad data, failed run), or 2 for a
:class:`ConfigError` (an option value that cannot work: bad usage).
"""

from __future__ import annotations


class HsiDenoiseError(Exception):
    """Root of every error hsidenoise raises deliberately. Messages say what was expected and what to do."""


class UnsupportedFormatError(HsiDenoiseError, ValueError):
    """A path whose suffix maps to no reader/writer, or a ``--format`` that does not exist."""


class HeaderError(HsiDenoiseError, ValueError):
    """An ENVI header (or other metadata block) that is missing a key or holds a bad value."""


class CubeReadError(HsiDenoiseError, OSError):
    """A cube file that is missing, unreadable, truncated or does not hold what was asked for."""


class CubeWriteError(HsiDenoiseError, OSError):
    """An output that cannot be written (exists, is an input, no space, no permission)."""


class CubeShapeError(HsiDenoiseError, ValueError):
    """An array that is not a 3-D cube, or whose shape does not match another one."""


class NothingToDenoise(CubeShapeError):
    """A valid cube a method can do nothing with (one band, no noise found, no pixel valid in every band).

    :func:`hsidenoise.denoise.denoise` writes such a cube unchanged and reports the message as a warning."""


class VariableError(HsiDenoiseError, KeyError):
    """A MAT/HDF5 file with no, or more than one, candidate 3-D variable; the message lists them."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class CheckpointError(HsiDenoiseError, ValueError):
    """Weights or a checkpoint that are missing, corrupt, or do not match the model config."""


class ResourceError(HsiDenoiseError, MemoryError):
    """Not enough memory or disk for the requested job; the message says how much is needed."""


class ConfigError(HsiDenoiseError, ValueError):
    """An option value that cannot work (tile smaller than overlap, unknown preset, ...)."""
