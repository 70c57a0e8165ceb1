"""Cubes in memory: :class:`ArrayReader` and :class:`ArrayWriter`, the ``CubeReader`` / ``CubeWriter`` contract
over a (B, H, W) numpy array, so that the streaming tool (:func:`hsidenoise.denoise.denoise`) and the measuring
tools run on a cube that is not in a file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hsidenoise.cube import CubeMeta


class ArrayReader:
    """A ``CubeReader`` over an in-memory (B, H, W) array (no file: ``path`` is None); ``read`` returns views.

    What :func:`hsidenoise.denoise.denoise_array` and the ``eval`` tool read a cube in memory with. (The
    file-backed :class:`hsidenoise.io.base.ArrayCubeReader` is the readers' base over a stored array.)
    """

    def __init__(self, data: np.ndarray, meta: CubeMeta) -> None:
        self.data = data
        self.shape = tuple(int(n) for n in data.shape)
        self.dtype = data.dtype
        self.meta = meta
        self.path = None

    def read(
        self, rows: slice = slice(None), cols: slice = slice(None), bands: slice | np.ndarray | None = None
    ) -> np.ndarray:
        block = self.data[:, rows, cols]
        return block if bands is None else block[bands]

    def close(self) -> None:
        """Nothing to release."""


class ArrayWriter:
    """A ``CubeWriter`` that fills an in-memory array, for :func:`hsidenoise.denoise.denoise_array`: values cast to
    ``dtype`` with clipping counted (``clipped``, ``underflowed``), never Inf."""

    def __init__(self, shape: Sequence[int], dtype: np.dtype) -> None:
        self.data = np.empty(tuple(shape), dtype=dtype)
        self.clipped = 0
        self.underflowed = 0

    def write(self, block: np.ndarray, rows: slice, cols: slice) -> None:
        from hsidenoise.io.dtypes import cast_and_count, count_underflow

        values, clipped = cast_and_count(block, self.data.dtype)  # float64 beyond float32: clipped, never Inf
        self.clipped += clipped
        self.underflowed += count_underflow(block, values)
        self.data[:, rows, cols] = values
