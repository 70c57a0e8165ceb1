"""The streaming pipeline: statistics pass, band windows, pass-through of bad data, safety, ENVI end to end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from spectral.io import envi

from hsidenoise import denoise as denoise_module
from hsidenoise.io.memory import ArrayWriter
from hsidenoise.cube import CubeMeta
from hsidenoise.denoise import denoise, denoise_array
from hsidenoise.methods import memory as memory_module
from hsidenoise.methods.memory import check_memory, estimate_memory
from hsidenoise.denoiser import Denoiser, DenoiserBase, IdentityDenoiser, TileResult
from hsidenoise.errors import ConfigError, CubeShapeError, CubeWriteError, ResourceError
from hsidenoise.statistics import CubeStatistics, compute_statistics
from hsidenoise.tiling import BandWindowPlan, TileConfig

NODATA = -9999.0


class MemoryReader:
    """A minimal CubeReader over an array that counts reads (the contract of hsidenoise.io, nothing more)."""

    def __init__(self, data: np.ndarray, nodata: float | None = None) -> None:
        self.data, self.shape, self.dtype = data, data.shape, data.dtype
        self.meta = CubeMeta(nodata=nodata, dtype=data.dtype)
        self.path = Path("memory")
        self.reads = 0

    def read(self, rows=slice(None), cols=slice(None), bands=None) -> np.ndarray:
        self.reads += 1
        block = self.data[:, rows, cols]
        return np.ascontiguousarray(block if bands is None else block[bands])

    def close(self) -> None:
        pass


WindowFunction = Callable[[np.ndarray], np.ndarray]
"""A function of band windows: (N, b, h, w) float32 in [0, 1] -> (N, b, h, w) float32 in [0, 1]."""


class BandWindowDenoiser(DenoiserBase):
    """A test adapter (the band-window planning of the paper preset's method, without a network). Adapts a function of fixed-size, normalised band windows into a :class:`Denoiser`.

    Inside each tile the valid bands are cut into windows of ``config.band_window`` bands at most
    ``config.band_stride`` bands apart (one window of all bands when there are fewer), each window is mapped to
    [0, 1] with its whole-cube range (:meth:`CubeStatistics.band_window_range`), all windows of all tiles in a
    call go through ``window_function`` at once, are mapped back, and overlapping bands are blended with
    :func:`hsidenoise.tiling.blend_weights`.

    Args:
        window_function: (N, b, h, w) float32 in [0, 1] -> same shape; b is the band window, or the number of
            valid bands when that is smaller.
        name: name shown in reports.
        config: supplies ``band_window`` and ``band_stride``; the default :class:`TileConfig` when None.
    """

    def __init__(
        self, window_function: WindowFunction, *, name: str = "band-window", config: TileConfig | None = None
    ) -> None:
        self.window_function = window_function
        self.name = name
        self.config = config if config is not None else TileConfig()
        self._plan: BandWindowPlan | None = None

    def prepare(self, stats: CubeStatistics) -> None:
        """Plan the band windows over the valid bands and fix each window's normalisation range."""
        self._plan = BandWindowPlan.plan(stats, self.config.band_window, self.config.band_stride, mirror=False)

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile (B_valid, h, w) float32 -> same shape."""
        return self.denoise_tiles([tile])[0].denoised

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """Denoise tiles of equal shape in one call of the window function (tiles of other shapes in another)."""
        plan = self._plan
        if plan is None:
            raise ConfigError(f"{self.name}: call prepare(stats) before denoising tiles")
        for tile in tiles:
            if tile.ndim != 3 or tile.shape[0] != plan.bands:
                raise CubeShapeError(
                    f"{self.name} was prepared for tiles of {plan.bands} valid bands (B_valid, h, w); "
                    f"got an array of shape {tuple(tile.shape)}"
                )
        if plan.bands == 0:
            return [TileResult(np.array(tile, dtype=np.float32)) for tile in tiles]
        results: dict[int, TileResult] = {}
        for shape in dict.fromkeys(tile.shape for tile in tiles):
            members = [index for index, tile in enumerate(tiles) if tile.shape == shape]
            denoised = self._denoise_same_shape([tiles[i] for i in members], plan)
            results.update((index, TileResult(values)) for index, values in zip(members, denoised, strict=True))
        return [results[index] for index in range(len(tiles))]

    def _denoise_same_shape(self, tiles: list[np.ndarray], plan: BandWindowPlan) -> list[np.ndarray]:
        windows = np.stack(
            [plan.normalise(tile, k) for tile in tiles for k in range(len(plan.windows))]
        ).astype(np.float32, copy=False)
        denoised_windows = np.asarray(self.window_function(windows))
        if denoised_windows.shape != windows.shape:
            raise CubeShapeError(
                f"{self.name}: the window function must return the shape it was given {windows.shape}; "
                f"got {denoised_windows.shape}"
            )
        outputs = []
        per_tile = len(plan.windows)
        for tile_index, tile in enumerate(tiles):
            blended = np.zeros(tile.shape, dtype=np.float32)
            for k in range(per_tile):
                plan.accumulate(blended, k, denoised_windows[tile_index * per_tile + k])
            outputs.append(plan.finish(blended))
        return outputs


class PixelMixer(DenoiserBase):
    """Visibly changes every value: half of it plus half the pixel's mean spectrum (a per-pixel method)."""

    name = "pixel-mixer"

    def prepare(self, stats) -> None:
        pass

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        return 0.5 * tile + 0.5 * tile.mean(axis=0, keepdims=True)


class BoxFilter(DenoiserBase):
    """A 3 x 3 spatial mean per band: a NaN handed to it would spread to the eight neighbours."""

    name = "box"

    def prepare(self, stats) -> None:
        pass

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(tile, size=(1, 3, 3), mode="nearest")


def filled_reference(cube: np.ndarray, valid_bands: list[int], nodata: float | None, transform) -> np.ndarray:
    """What the pipeline must produce, computed directly on the whole cube with numpy."""
    valid = cube[valid_bands].astype(np.float64)
    bad = ~np.isfinite(valid) | (valid == nodata if nodata is not None else False)
    band_means = np.nanmean(np.where(bad, np.nan, valid), axis=(1, 2))
    filled = np.where(bad, band_means[:, None, None], valid)
    expected = cube.astype(np.float64).copy()
    expected[valid_bands] = np.where(bad, valid, transform(filled))
    return expected


def cube_with_bad_data(rng: np.random.Generator) -> np.ndarray:
    """(7, 11, 13): band 1 dead (constant), band 3 all zero, band 5 all NaN, NaN / inf / nodata pixels."""
    cube = rng.random((7, 11, 13)).astype(np.float32)
    cube[1] = 7.0
    cube[3] = 0.0
    cube[5] = np.nan
    cube[2, 4, 6] = np.nan
    cube[6, 0, 0] = np.inf
    cube[0, 5, 5] = NODATA
    cube[:, 10, 12] = NODATA
    return cube


# ------------------------------------------------------------------------------------------- statistics


def test_statistics_match_numpy_on_every_chunking() -> None:
    rng = np.random.default_rng(0)
    cube = cube_with_bad_data(rng)
    masked = np.where(np.isfinite(cube) & (cube != NODATA), cube, np.nan).astype(np.float64)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        minimum, maximum, mean = (f(masked, axis=(1, 2)) for f in (np.nanmin, np.nanmax, np.nanmean))
    for rows_per_chunk in (1, 4, None):
        stats = compute_statistics(MemoryReader(cube, NODATA), rows_per_chunk=rows_per_chunk)
        np.testing.assert_allclose(stats.minimum, minimum, equal_nan=True)
        np.testing.assert_allclose(stats.maximum, maximum, equal_nan=True)
        np.testing.assert_allclose(stats.mean, mean, rtol=1e-12, equal_nan=True)
        assert stats.dead_bands.tolist() == [1, 3]
        assert stats.nan_bands.tolist() == [5]
        assert stats.partial_invalid.tolist() == [0, 1, 2, 3, 4, 6]  # the nodata pixel is in every band
        assert stats.valid_bands.tolist() == [0, 2, 4, 6]
        # every pixel is a sample (77 + 66 < 65536); kept are those valid in every band but the NaN one
        keep = np.isfinite(masked[[0, 1, 2, 3, 4, 6]]).all(axis=0).ravel()
        spectra = cube.reshape(7, -1).T[keep].astype(np.float64)
        spectra[:, 5] = 0.0
        assert stats.pixel_count == keep.sum() == 11 * 13 - 4
        np.testing.assert_allclose(stats.gram, spectra.T @ spectra / len(spectra), rtol=1e-6)
        np.testing.assert_array_equal(stats.valid_sample_spectra, spectra[:, [0, 2, 4, 6]].astype(np.float32))


def test_statistics_sample_is_seeded_uniform_and_made_of_real_pixels() -> None:
    cube = np.random.default_rng(1).random((4, 30, 40)).astype(np.float32)
    first = compute_statistics(MemoryReader(cube), max_sample_pixels=50, rows_per_chunk=7, seed=3)
    again = compute_statistics(MemoryReader(cube), max_sample_pixels=50, rows_per_chunk=3, seed=3)
    other = compute_statistics(MemoryReader(cube), max_sample_pixels=50, seed=4)
    pixels = cube.reshape(4, -1).T
    matches = [np.flatnonzero((pixels == spectrum).all(axis=1)) for spectrum in first.sample_spectra]
    assert first.sample_spectra.shape == (50, 4)
    assert all(len(m) == 1 for m in matches) and len({int(m[0]) for m in matches}) == 50
    np.testing.assert_array_equal(first.sample_spectra, again.sample_spectra)
    assert not np.array_equal(first.sample_spectra, other.sample_spectra)


def test_band_window_range_ignores_dead_and_nan_bands() -> None:
    cube = np.stack([np.full((3, 3), 100.0), np.linspace(1, 2, 9).reshape(3, 3), np.full((3, 3), np.nan),
                     np.linspace(-1, 0.5, 9).reshape(3, 3)])
    stats = compute_statistics(MemoryReader(cube))
    assert stats.band_window_range(slice(0, 4)) == (-1.0, 2.0)
    assert stats.band_window_range([0, 1]) == (1.0, 2.0)
    with pytest.raises(ConfigError):
        stats.band_window_range([0, 2])


# --------------------------------------------------------------------------------------------- methods


def test_identity_gives_back_the_cube_for_random_shapes_and_windows() -> None:
    rng = np.random.default_rng(2)
    for case in range(40):
        bands, height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
        tile = int(rng.integers(2, 20))
        window = int(rng.integers(1, 12))
        config = TileConfig(tile, int(rng.integers(0, tile // 2 + 1)), window, int(rng.integers(1, window + 1)))
        cube = rng.random((bands, height, width)).astype(np.float32)
        for method in (IdentityDenoiser(), BandWindowDenoiser(lambda windows: windows.copy(), config=config)):
            output = denoise_array(cube, method, config, batch_size=int(rng.integers(1, 4)))
            assert output.dtype == np.float32
            np.testing.assert_allclose(output, cube, atol=1e-6, err_msg=f"case {case}, {config}, {method.name}")


def test_band_windows_see_the_cube_mapped_to_unit_range_with_whole_cube_statistics() -> None:
    rng = np.random.default_rng(3)
    cube = (rng.random((5, 6, 7)) * np.arange(1, 6)[:, None, None] * 10).astype(np.float32)
    seen: list[np.ndarray] = []
    config = TileConfig(tile=4, overlap=1, band_window=3, band_stride=2)  # 2 x 3 tiles, windows [0, 3) and [2, 5)
    method = BandWindowDenoiser(lambda windows: seen.append(windows.copy()) or windows, config=config)
    denoise_array(cube, method, config)
    first_tile = seen[0]
    assert first_tile.shape == (2, 3, 4, 4)
    for index, bands in enumerate((slice(0, 3), slice(2, 5))):
        lo, hi = cube[bands].min(), cube[bands].max()
        np.testing.assert_allclose(first_tile[index], (cube[bands, :4, :4] - lo) / (hi - lo), atol=1e-6)
    assert min(w.min() for w in seen) >= 0 and max(w.max() for w in seen) <= 1 + 1e-6


def test_overlapping_band_windows_are_blended_by_hand() -> None:
    cube = np.stack([np.full((4, 4), v) for v in (1.0, 1.0, 2.0, 4.0, 6.0)])
    cube[:, 0, 0] = [0.0, 2.0, 3.0, 5.0, 10.0]  # window [0, 3) spans 0..3, window [2, 5) spans 2..10
    config = TileConfig(tile=8, overlap=0, band_window=3, band_stride=2)
    method = BandWindowDenoiser(lambda windows: np.full_like(windows, 0.5), config=config)
    output = denoise_array(cube, method, config)
    # each window returns its mid-range; band 2 is shared: a ramp of one band gives weights 1/2 and 1/2
    np.testing.assert_allclose(output[:, 1, 1], [1.5, 1.5, (1.5 + 6.0) / 2, 6.0, 6.0], atol=1e-6)


def test_dead_nan_and_nodata_pass_through_and_never_change_neighbours() -> None:
    rng = np.random.default_rng(4)
    cube = cube_with_bad_data(rng)
    valid_bands = [0, 2, 4, 6]
    expected = filled_reference(cube, valid_bands, NODATA, lambda x: 0.5 * x + 0.5 * x.mean(axis=0, keepdims=True))
    output = denoise_array(cube, PixelMixer(), TileConfig(tile=5, overlap=2), nodata=NODATA)
    np.testing.assert_allclose(output, expected, atol=1e-6, equal_nan=True)
    assert np.abs(output[valid_bands, 1:4, 1:4] - cube[valid_bands, 1:4, 1:4]).min() > 0  # the method did act
    np.testing.assert_array_equal(output[[1, 3, 5]], cube[[1, 3, 5]])
    assert np.isnan(output[2, 4, 6]) and output[6, 0, 0] == np.inf
    assert output[0, 5, 5] == NODATA and (output[:, 10, 12] == NODATA).all()


def test_nan_pixels_do_not_spread_to_spatial_neighbours() -> None:
    rng = np.random.default_rng(5)
    cube = cube_with_bad_data(rng)
    valid_bands = [0, 2, 4, 6]
    expected = filled_reference(
        cube, valid_bands, NODATA, lambda x: ndimage.uniform_filter(x, size=(1, 3, 3), mode="nearest")
    )
    output = denoise_array(cube, BoxFilter(), TileConfig(tile=16, overlap=0), nodata=NODATA)
    np.testing.assert_allclose(output, expected, atol=1e-6, equal_nan=True)
    assert np.isfinite(output[2, 3:6, 5:8]).sum() == 8  # all but the NaN pixel itself


def test_a_cube_with_no_valid_band_is_copied() -> None:
    cube = np.stack([np.zeros((5, 6)), np.full((5, 6), np.nan)]).astype(np.float32)
    with pytest.warns(UserWarning, match="constant .* or without a valid value .*passed through unchanged"):
        output = denoise_array(cube, PixelMixer(), TileConfig(tile=4, overlap=1))
    np.testing.assert_array_equal(output, cube)


class OutOfMemoryError(RuntimeError):
    """Named like torch's CUDA out-of-memory error."""


class SmallMemoryDenoiser(DenoiserBase):
    """Fails with an out-of-memory error when given more than `limit` tiles at once."""

    name = "small-memory"

    def __init__(self, limit: int, error: type[Exception]) -> None:
        self.limit, self.error, self.calls = limit, error, []

    def prepare(self, stats) -> None:
        pass

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        return self.denoise_tiles([tile])[0].denoised

    def denoise_tiles(self, tiles) -> list[TileResult]:
        self.calls.append(len(tiles))
        if len(tiles) > self.limit:
            raise self.error("out of memory")
        return [TileResult(tile.copy(), {"tiles_in_call": len(tiles)}) for tile in tiles]


@pytest.mark.parametrize("error", [MemoryError, OutOfMemoryError])
def test_out_of_memory_halves_the_batch_and_keeps_going(error: type[Exception]) -> None:
    cube = np.random.default_rng(6).random((3, 20, 16)).astype(np.float32)
    method = SmallMemoryDenoiser(limit=2, error=error)
    config = TileConfig(tile=4, overlap=0)  # 20 tiles: 8 = 4 calls of 2, then 6 batches of 2
    result = denoise_module._run(MemoryReader(cube), ArrayWriter(cube.shape, np.float32), method,
                                 config, nodata=None, batch_size=8, progress=None)
    assert result.batch_size == 2
    assert method.calls[:3] == [8, 4, 2] and set(method.calls[3:]) == {2}
    assert [r.info["tiles_in_call"] for r in result.tile_records] == [2] * 20
    np.testing.assert_allclose(denoise_array(cube, SmallMemoryDenoiser(2, error), config, batch_size=8), cube)
    with pytest.raises(ResourceError):
        denoise_array(cube, SmallMemoryDenoiser(0, error), config, batch_size=4)


def test_other_errors_are_not_mistaken_for_out_of_memory() -> None:
    cube = np.zeros((2, 8, 8), dtype=np.float32)
    cube[0, 0, 0] = 1
    with pytest.raises(ValueError, match="out of memory"):
        denoise_array(cube, SmallMemoryDenoiser(0, ValueError), TileConfig(tile=4, overlap=0), batch_size=2)


def test_a_method_returning_the_wrong_shape_is_reported() -> None:
    class Cropper(IdentityDenoiser):
        def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
            return tile[:, 1:]

    with pytest.raises(CubeShapeError, match="identity"):
        denoise_array(np.random.default_rng(7).random((2, 6, 6)), Cropper(), TileConfig(tile=4, overlap=1))


def test_methods_follow_the_protocol() -> None:
    assert isinstance(IdentityDenoiser(), Denoiser)
    assert isinstance(BandWindowDenoiser(lambda w: w), Denoiser)


def test_lowrank_memory_estimate_counts_the_tile_work_not_the_scene() -> None:
    from hsidenoise.subspace.eigenimages import dct_group_bytes

    config = TileConfig()
    method, pipeline = (
        {side: estimate_memory((31, side, side), "float32", config, method=name) for side in (256, 4096)}
        for name in ("lowrank", None)
    )
    work = {side: method[side] - pipeline[side] for side in method}
    assert work[256] == work[4096]  # the same sample and the same tiles
    assert work[256] >= memory_module.SUBSPACE_DCT_COPIES * dct_group_bytes(256, 256, 31)
    small_tiles = estimate_memory((31, 256, 256), "float32", TileConfig(tile=64, overlap=8), method="lowrank")
    assert small_tiles < method[256]


def test_memory_estimate_does_not_grow_with_rows_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    config = TileConfig()
    short, tall = (estimate_memory((64, 256 + k * 224, 4096), "float32", config) for k in (2, 290))
    assert short == tall  # the same overlaps (rows are 224 apart in both), so the same memory
    monkeypatch.setattr(memory_module, "available_memory", lambda: 10 * 2**20)
    with pytest.raises(ResourceError, match="MiB"):
        check_memory((64, 4096, 4096), np.float32, config)
    with pytest.raises(ConfigError):
        check_memory((4, 8, 8), np.float32, config, batch_size=0)


# ------------------------------------------------------------------------------------ ENVI end to end


def write_envi(path: Path, cube: np.ndarray, *, interleave: str = "bsq", nodata: float | None = None) -> Path:
    """Write (B, H, W) with spectral (independent of hsidenoise.io); returns the header path."""
    metadata = {} if nodata is None else {"data ignore value": nodata}
    envi.save_image(str(path), np.transpose(cube, (1, 2, 0)), dtype=cube.dtype, interleave=interleave,
                    ext=".img", metadata=metadata)
    return path


def read_envi(path: Path) -> np.ndarray:
    """(B, H, W) in the file's dtype, read with spectral."""
    return np.array(envi.open(str(path)).open_memmap(interleave="bsq"))


def test_identity_through_envi_files_gives_back_the_input(tmp_path: Path) -> None:
    cube = cube_with_bad_data(np.random.default_rng(8))
    source = write_envi(tmp_path / "in.hdr", cube, interleave="bil", nodata=NODATA)
    progress: list[tuple[int, int]] = []
    config = TileConfig(tile=6, overlap=2)
    result = denoise(source, tmp_path / "out.hdr", IdentityDenoiser(), config, progress=lambda *p: progress.append(p))
    output = read_envi(tmp_path / "out.hdr")
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, cube, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(output[[1, 3, 5]], cube[[1, 3, 5]])
    assert result.untouched_bands == [1, 3, 5] and result.dead_bands == [1, 3] and result.nan_bands == [5]
    assert len(result.tiles) == len(result.tile_records) == 3 * 3
    assert progress[-1] == (9, 9) and len(progress) == 9
    assert set(result.timings) >= {"statistics", "prepare", "read", "method", "write", "total"}


def test_integer_input_written_as_same_dtype_is_unchanged(tmp_path: Path) -> None:
    cube = np.random.default_rng(9).integers(-300, 3000, size=(5, 9, 10)).astype(np.int16)
    cube[2] = 0
    cube[:, 4, 4] = -9999
    source = write_envi(tmp_path / "in.hdr", cube, nodata=-9999)
    denoise(source, tmp_path / "out.img", IdentityDenoiser(), TileConfig(tile=4, overlap=2), dtype="same")
    output = read_envi(tmp_path / "out.hdr")
    assert output.dtype == np.int16
    np.testing.assert_array_equal(output, cube)


def test_streaming_writes_the_same_cube_as_an_in_memory_run(tmp_path: Path) -> None:
    cube = np.random.default_rng(10).random((37, 19, 23)).astype(np.float32)
    config = TileConfig(tile=8, overlap=3, band_window=31, band_stride=16)
    def window_function(windows: np.ndarray) -> np.ndarray:  # works on each window alone
        return np.sqrt(windows) * ndimage.uniform_filter(windows, (1, 3, 3, 3))

    method = BandWindowDenoiser(window_function, config=config)
    source = write_envi(tmp_path / "in.hdr", cube, interleave="bip")
    denoise(source, tmp_path / "out.hdr", method, config, batch_size=3)
    np.testing.assert_allclose(read_envi(tmp_path / "out.hdr"), denoise_array(cube, method, config), atol=1e-6)


class FailingDenoiser(IdentityDenoiser):
    """Fails on its third tile."""

    name = "failing"

    def __init__(self) -> None:
        self.tiles = 0

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        self.tiles += 1
        if self.tiles == 3:
            raise RuntimeError("the method broke")
        return tile


def test_a_failing_method_leaves_no_output(tmp_path: Path) -> None:
    source = write_envi(tmp_path / "in.hdr", np.random.default_rng(11).random((3, 12, 12)).astype(np.float32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(RuntimeError, match="the method broke"):
        denoise(source, out_dir / "out.hdr", FailingDenoiser(), TileConfig(tile=4, overlap=1))
    assert list(out_dir.iterdir()) == []


def test_output_that_is_the_input_is_refused(tmp_path: Path) -> None:
    cube = np.random.default_rng(12).random((3, 5, 6)).astype(np.float32)
    source = write_envi(tmp_path / "in.hdr", cube)
    (tmp_path / "link.hdr").symlink_to(source)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    for output in (source, tmp_path / "in.img", tmp_path / "link.hdr"):
        with pytest.raises(CubeWriteError, match="input"):
            denoise(source, output, IdentityDenoiser(), overwrite=True)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()} == before
    denoise(source, tmp_path / "out.hdr", IdentityDenoiser())
    with pytest.raises(CubeWriteError, match="exists"):
        denoise(source, tmp_path / "out.hdr", IdentityDenoiser())
    denoise(source, tmp_path / "out.hdr", IdentityDenoiser(), overwrite=True)


def test_too_little_memory_is_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_envi(tmp_path / "in.hdr", np.ones((3, 5, 6), dtype=np.float32))
    monkeypatch.setattr(memory_module, "available_memory", lambda: 2**20)
    with pytest.raises(ResourceError, match="MiB of memory"):
        denoise(source, tmp_path / "out.hdr", IdentityDenoiser())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.hdr", "in.img"]


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("relative", "variable", "dead", "nan"),
    [  # the bad bands as ../shared/data/MANIFEST.md lists them (0-based)
        ("aviris_santa_barbara_lacumbre_224/a_hsi_img_for_VI_demo.mat", "hsi_img",
         [0, 1, *range(96, 116), *range(153, 171), 221, 222, 223], []),
        ("aviris_salton_sea_224/salton_sea_roi.mat", "I", [], [*range(107, 113), *range(153, 167)]),
    ],
)
def test_real_dead_and_nan_bands_are_found_and_left_untouched(
    tmp_path: Path, shared_data: Path, relative: str, variable: str, dead: list[int], nan: list[int]
) -> None:
    from hsidenoise.io import open_cube

    path = shared_data / relative
    with open_cube(path, var=variable) as reader:
        cube = reader.read()
        result = denoise(reader, tmp_path / "out.hdr", PixelMixer(), TileConfig(tile=32, overlap=8), dtype="same")
    assert result.dead_bands == dead and result.nan_bands == nan
    output = read_envi(tmp_path / "out.hdr")
    assert output.dtype == cube.dtype
    np.testing.assert_array_equal(output[dead + nan], cube[dead + nan])
    others = result.statistics.valid_bands
    assert np.abs(output[others].astype(float) - cube[others]).mean() > 0  # the method changed the rest


def test_denoiser_base_gives_every_optional_hook_a_default() -> None:
    """A method that implements only denoise_tile runs through the pipeline; the hooks have their defaults."""

    class Halver(DenoiserBase):
        name = "halver"

        def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
            return tile * 0.5

    method = Halver()
    assert isinstance(method, Denoiser)
    assert not method.wants_samples and method.adapt_progress is None and method.info() == {}
    cube = np.random.default_rng(3).random((3, 10, 9)).astype(np.float32)
    np.testing.assert_allclose(denoise_array(cube, method, TileConfig(tile=4, overlap=1)), cube * 0.5, rtol=1e-6)
    [result] = method.denoise_tiles([cube])
    np.testing.assert_array_equal(result.denoised, cube * 0.5)
    assert result.info == {}
    with pytest.raises(ConfigError, match="does not adapt"):
        method.adapt_to([cube])
    with pytest.raises(NotImplementedError, match="denoise_tile"):
        DenoiserBase().denoise_tile(cube)
