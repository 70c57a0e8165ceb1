"""Streaming: ENVI blocks by positioned reads and writes, spilled stitching, convert_cube, files equal to in-memory runs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from spectral.io import envi as spy_envi

from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.denoise import denoise, denoise_array
from hsidenoise.denoiser import DenoiserBase
from hsidenoise.errors import CubeReadError, CubeWriteError
from hsidenoise.io import convert_cube, create_cube, open_cube, read_cube, write_cube
from hsidenoise.io import convert as convert_module
from hsidenoise.io import envi as envi_module
from hsidenoise.io.convert import plan_blocks
from hsidenoise.tiling import Stitcher, TileConfig, plan_tiles

INTERLEAVES = ("bsq", "bil", "bip")
NODATA = -9999.0


def write_raw_envi(directory: Path, data: np.ndarray, *, interleave: str, big_endian: bool, offset: int) -> Path:
    """Write (B, H, W) `data` by hand as ENVI with the given interleave, byte order and header offset."""
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    stored = np.ascontiguousarray(data.transpose(order)).astype(data.dtype.newbyteorder(">" if big_endian else "<"))
    (directory / "raw.img").write_bytes(b"\xab" * offset + stored.tobytes())
    codes = {np.dtype("int16"): 2, np.dtype("float32"): 4, np.dtype("float64"): 5, np.dtype("uint16"): 12}
    header = {
        "samples": data.shape[2], "lines": data.shape[1], "bands": data.shape[0], "header offset": offset,
        "data type": codes[data.dtype], "interleave": interleave, "byte order": int(big_endian),
    }
    spy_envi.write_envi_header(str(directory / "raw.hdr"), header)
    return directory / "raw.hdr"


SELECTIONS = [
    (slice(None), slice(None), None),
    (slice(2, 19), slice(3, 11), None),  # a window inside: rows with gaps between them in the file
    (slice(0, 23), slice(16, 17), [8, 0, 3, 3]),  # one column, bands out of order and repeated
    (slice(5, 6), slice(None), slice(2, 9, 3)),  # one row, strided bands
    (slice(None, None, -2), slice(1, 17, 4), np.array([True, False] * 4 + [True])),
    (slice(22, 23), slice(0, 17), [7]),
    (slice(4, 4), slice(None), None),  # empty
]


@pytest.mark.parametrize("interleave", INTERLEAVES)
@pytest.mark.parametrize("strategy", ["span", "rows", "short-spans"])
@pytest.mark.parametrize(("dtype", "big_endian"), [("float32", False), ("int16", True), ("float64", True)])
def test_envi_blocks_equal_the_full_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cube, interleave: str, strategy: str, dtype: str,
    big_endian: bool,
) -> None:
    data = tiny_cube(bands=9, rows=23, cols=17, dtype=dtype, seed=3)
    header = write_raw_envi(tmp_path, data, interleave=interleave, big_endian=big_endian, offset=11)
    if strategy == "rows":  # every row of a window read on its own
        monkeypatch.setattr(envi_module, "GAP_BYTES", 0)
    elif strategy == "short-spans":  # reads over gaps cut into spans of 3 file rows
        monkeypatch.setattr(envi_module, "SPAN_BYTES", 3 * 17 * 9 * np.dtype(dtype).itemsize)
    with open_cube(header) as reader:
        full = reader.read()
        np.testing.assert_array_equal(full, data)
        assert full.dtype.isnative and full.flags.c_contiguous and full.flags.writeable
        full[:, 1:3] = 0  # the caller's own memory: changing it changes nothing the reader hands out later
        np.testing.assert_array_equal(reader.read(), data)
        full = reader.read()
        for rows, cols, bands in SELECTIONS:
            block = reader.read(rows, cols, bands)
            expected = (full if bands is None else full[bands])[:, rows][:, :, cols]
            assert block.dtype.isnative and block.flags.c_contiguous and block.flags.writeable
            np.testing.assert_array_equal(block, expected)


def test_a_data_file_that_shrinks_after_opening_is_reported(tmp_path: Path, tiny_cube) -> None:
    header = write_raw_envi(tmp_path, tiny_cube(), interleave="bil", big_endian=False, offset=0)
    with open_cube(header) as reader:
        with open(tmp_path / "raw.img", "r+b") as data_file:
            data_file.truncate(100)
        with pytest.raises(CubeReadError, match="ended"):
            reader.read(rows=slice(3, 7))


@pytest.mark.parametrize("interleave", INTERLEAVES)
@pytest.mark.parametrize("strategy", ["span", "rows", "short-spans"])
def test_envi_blocks_written_in_any_order_give_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cube, interleave: str, strategy: str
) -> None:
    if strategy == "rows":  # every row of a window written on its own
        monkeypatch.setattr(envi_module, "GAP_BYTES", 0)
    elif strategy == "short-spans":  # writes over gaps (read, filled in, written back) cut into spans of 2 file rows
        monkeypatch.setattr(envi_module, "SPAN_BYTES", 2 * 14 * 4)  # a file row: 14 float32 samples (BSQ, BIL)
    data = tiny_cube(bands=6, rows=17, cols=14, dtype="float64", seed=4)
    meta = CubeMeta(wavelengths=np.linspace(400, 900, 6), description="blocks")
    (tmp_path / "whole").mkdir()
    (tmp_path / "blocks").mkdir()
    write_cube(tmp_path / "whole" / f"cube.{interleave}", Cube(data, meta))
    windows = [
        (slice(top, min(top + 5, 17)), slice(left, min(left + 4, 14)))
        for top, left in itertools.product(range(0, 17, 5), range(0, 14, 4))
    ]
    order = np.random.default_rng(5).permutation(len(windows))
    with create_cube(tmp_path / "blocks" / f"cube.{interleave}", data.shape, meta=meta) as writer:
        for index in order:
            rows, cols = windows[index]
            writer.write(data[:, rows, cols], rows, cols)
    for name in (f"cube.{interleave}", "cube.hdr"):
        assert (tmp_path / "blocks" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    np.testing.assert_array_equal(read_cube(tmp_path / "blocks" / f"cube.{interleave}").data, data.astype(np.float32))


# --------------------------------------------------------------------------- the pipeline


class SmoothAndMix(DenoiserBase):
    """A spatial 3 x 3 mean plus a per-pixel spectral mix: every tile edge and every overlap shows in the output."""

    name = "smooth-and-mix"

    def prepare(self, stats) -> None:
        pass

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        smooth = ndimage.uniform_filter(tile, size=(1, 3, 3), mode="nearest")
        return 0.7 * smooth + 0.3 * tile.mean(axis=0, keepdims=True)


def cube_with_bad_values(rng: np.random.Generator) -> np.ndarray:
    """(8, 29, 31) float32 with a dead band, a NaN band and scattered NaN / nodata pixels."""
    cube = rng.random((8, 29, 31)).astype(np.float32)
    cube[2] = 0.25
    cube[6] = np.nan
    cube[0, 3, 4] = np.nan
    cube[4, 20:22, 7] = NODATA
    return cube


@pytest.mark.parametrize("suffix", ["out.hdr", "out.bil", "out.tif"])
def test_streaming_run_writes_the_same_file_as_an_in_memory_run(tmp_path: Path, suffix: str) -> None:
    cube = cube_with_bad_values(np.random.default_rng(6))
    meta = CubeMeta(nodata=NODATA, wavelengths=np.linspace(450, 950, 8), wavelength_units="Nanometers")
    source = tmp_path / "in.bip"
    write_cube(source, Cube(cube, meta))
    config = TileConfig(tile=10, overlap=3)
    method = SmoothAndMix()
    (tmp_path / "streamed").mkdir()
    (tmp_path / "memory").mkdir()
    result = denoise(source, tmp_path / "streamed" / suffix, method, config)
    in_memory = denoise_array(cube, method, config, nodata=NODATA)
    with open_cube(source) as reader:
        write_cube(tmp_path / "memory" / suffix, Cube(in_memory, reader.meta))
    streamed = read_cube(tmp_path / "streamed" / suffix)
    np.testing.assert_array_equal(streamed.data, in_memory)
    assert len(result.tiles) == len(plan_tiles(29, 31, config)) == 16 and result.untouched_bands == [2, 6]
    assert not np.array_equal(in_memory[[0, 1, 3, 4, 5, 7]], cube[[0, 1, 3, 4, 5, 7]])
    if suffix != "out.tif":  # ENVI: the very same bytes, data file and header
        names = [path.name for path in (tmp_path / "memory").iterdir()]
        assert sorted(names) == sorted(path.name for path in (tmp_path / "streamed").iterdir())
        for name in names:
            assert (tmp_path / "streamed" / name).read_bytes() == (tmp_path / "memory" / name).read_bytes()
    assert not list(tmp_path.glob("streamed/.*")), "a temporary or spill file was left behind"


def stitch_all(stitcher: Stitcher, tiles, values) -> tuple[np.ndarray, int]:
    """Add every tile; the assembled output and the largest number of bytes the stitcher held in memory."""
    height, width = stitcher.shape
    output = np.full((stitcher.bands, height, width), np.nan, dtype=np.float32)
    peak = 0
    for tile in tiles:
        for block in stitcher.add(tile, values[tile].copy(), in_place=True):
            assert np.isnan(output[:, block.rows, block.cols]).all(), "a part of the cube was handed back twice"
            output[:, block.rows, block.cols] = block.data
        peak = max(peak, stitcher.buffered_bytes)
    assert stitcher.done and stitcher.buffered_bytes == 0 and stitcher.spilled_bytes == 0
    return output, peak


def test_spilling_stitcher_gives_the_same_cube_and_stays_flat_across_widths(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    config = TileConfig(tile=12, overlap=4)
    peaks: dict[tuple[int, bool], int] = {}
    for width in (37, 149):
        tiles = plan_tiles(29, width, config)
        values = {tile: rng.random((3, *tile.shape), dtype=np.float32) for tile in tiles}
        kept, peaks[width, False] = stitch_all(Stitcher(3, (29, width), tiles), tiles, values)
        spilled, peaks[width, True] = stitch_all(Stitcher(3, (29, width), tiles, spill_dir=tmp_path), tiles, values)
        np.testing.assert_array_equal(spilled, kept)
        assert not np.isnan(kept).any()
        backwards, _ = stitch_all(Stitcher(3, (29, width), tiles, spill_dir=tmp_path), tiles[::-1], values)
        np.testing.assert_allclose(backwards, kept, rtol=1e-6)
    one_tile = (3 + 1) * config.tile**2 * 4  # values and weights of one tile, float32
    assert peaks[149, False] > 2 * one_tile  # in memory: a strip of overlaps as wide as the cube
    assert max(peaks[37, True], peaks[149, True]) <= one_tile  # spilled: only what the next tile adds to
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- convert


def test_convert_round_trips_through_the_streaming_formats_and_keeps_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cube
) -> None:
    monkeypatch.setattr(convert_module, "BLOCK_BYTES", 4 * 19 * 6)  # a few rows per block: many blocks
    data = tiny_cube(bands=6, rows=23, cols=19, dtype="float32", seed=8)
    data[1, 4, 5] = NODATA
    meta = CubeMeta(
        wavelengths=np.array([450.5, 500.0, 550.25, 600.0, 650.0, 700.0]),
        wavelength_units="Nanometers",
        fwhm=np.full(6, 10.5),
        bbl=np.array([1, 1, 0, 1, 1, 1], dtype=np.uint8),
        band_names=[f"band {k}" for k in range(6)],
        nodata=NODATA,
        scale_factor=10000.0,
        description="round trip",
    )
    write_cube(tmp_path / "start.hdr", Cube(data, meta))
    progress: list[tuple[int, int]] = []
    path = convert_cube(tmp_path / "start.hdr", tmp_path / "a.tif", progress=lambda *p: progress.append(p))
    assert path == tmp_path / "a.tif"
    assert progress[-1][0] == progress[-1][1] == len(progress) > 3
    convert_cube(tmp_path / "a.tif", tmp_path / "b.h5")
    convert_cube(tmp_path / "b.h5", tmp_path / "end.bip")
    convert_cube(tmp_path / "end.bip", tmp_path / "c.mat", fmt="mat73")  # v7.3 keeps no band names (mat.py)
    matlab = read_cube(tmp_path / "c.mat")
    np.testing.assert_array_equal(matlab.data, data)
    np.testing.assert_array_equal(matlab.meta.wavelengths, meta.wavelengths)
    end = read_cube(tmp_path / "end.bip")
    np.testing.assert_array_equal(end.data, data)
    assert end.meta.interleave == "bip"
    np.testing.assert_array_equal(end.meta.wavelengths, meta.wavelengths)
    np.testing.assert_array_equal(end.meta.fwhm, meta.fwhm)
    np.testing.assert_array_equal(end.meta.bbl, meta.bbl)
    assert end.meta.band_names == meta.band_names
    assert (end.meta.nodata, end.meta.scale_factor) == (NODATA, 10000.0)
    assert (end.meta.wavelength_units, end.meta.description) == ("Nanometers", "round trip")


def test_convert_same_dtype_keeps_integers_and_refuses_unsafe_outputs(tmp_path: Path, tiny_cube) -> None:
    data = tiny_cube(bands=4, rows=9, cols=7, dtype="uint16", seed=9)
    write_cube(tmp_path / "in.hdr", Cube(data), dtype="same")
    convert_cube(tmp_path / "in.hdr", tmp_path / "same.tif", dtype="same")
    converted = read_cube(tmp_path / "same.tif")
    assert converted.data.dtype == np.uint16
    np.testing.assert_array_equal(converted.data, data)
    assert read_cube(convert_cube(tmp_path / "in.hdr", tmp_path / "float.bsq")).data.dtype == np.float32
    with pytest.raises(CubeWriteError, match="input"):
        convert_cube(tmp_path / "in.hdr", tmp_path / "in.img", overwrite=True)
    with pytest.raises(CubeWriteError, match="exists"):
        convert_cube(tmp_path / "in.hdr", tmp_path / "same.tif")
    convert_cube(tmp_path / "in.hdr", tmp_path / "same.tif", overwrite=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "float.bsq", "float.hdr", "in.hdr", "in.img", "same.tif"
    ]


@pytest.mark.parametrize("seed", range(3))
def test_block_plan_covers_the_cube_once_in_aligned_blocks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 300, size=3))
        budget = int(rng.integers(64, 2**20))
        blocks = plan_blocks(shape, 4, budget=budget, align=32)
        coverage = np.zeros(shape[1:], dtype=int)
        for rows, cols in blocks:
            coverage[rows, cols] += 1
        np.testing.assert_array_equal(coverage, 1)
        first_rows, first_cols = blocks[0]
        assert all(rows.start % first_rows.stop == 0 and cols.start % first_cols.stop == 0 for rows, cols in blocks)
    # A 64-band float32 scene 4096 wide: 256 x 256 blocks of 16 MiB, whole tiles of a tiled GeoTIFF.
    blocks = plan_blocks((64, 4096, 4096), 4)
    assert len(blocks) == 256 and {(r.stop - r.start, c.stop - c.start) for r, c in blocks} == {(256, 256)}
    assert plan_blocks((8, 700, 300), 4) == [(slice(0, 700), slice(0, 300))]  # small: one block
