"""Tiling: plans cover everything, blending weights are positive and sum to one, the Stitcher is exact and lean."""

from __future__ import annotations

import numpy as np
import pytest

from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.tiling import (
    Stitcher,
    Tile,
    TileConfig,
    blend_weights,
    plan_axis,
    plan_spatial_axis,
    plan_band_windows,
    plan_tiles,
    taper,
)


def random_configs(count: int, seed: int) -> list[tuple[int, int, TileConfig]]:
    """(height, width, config) triples, including cubes smaller than a tile and overlaps up to half a tile."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        tile = int(rng.integers(1, 24))
        overlap = int(rng.integers(0, tile // 2 + 1))
        height, width = (int(n) for n in rng.integers(1, 60, size=2))
        window = int(rng.integers(1, 12))
        cases.append((height, width, TileConfig(tile, overlap, window, int(rng.integers(1, window + 1)))))
    return cases


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile": 0},
        {"tile": 16, "overlap": 9},
        {"tile": 16, "overlap": -1},
        {"band_window": 0},
        {"band_window": 8, "band_stride": 9},
        {"band_stride": 0},
        {"tile": 16.5},
        {"overlap": True},
    ],
)
def test_tile_config_rejects_values_that_cannot_work(kwargs: dict) -> None:
    with pytest.raises(ConfigError) as caught:
        TileConfig(**kwargs)
    assert "\n" not in str(caught.value)


def test_plan_axis_matches_a_hand_made_plan() -> None:
    assert plan_axis(10, 4, 3) == [slice(0, 4), slice(3, 7), slice(6, 10)]
    assert plan_axis(7, 4, 3) == [slice(0, 4), slice(3, 7)]
    assert plan_axis(3, 4, 3) == [slice(0, 3)]
    # 11 - 4 = 7 needs three steps of at most 3: 7/3 apart, rounded down
    assert plan_axis(11, 4, 3) == [slice(0, 4), slice(2, 6), slice(4, 8), slice(7, 11)]


def test_plans_cover_every_pixel_with_equal_tiles_no_larger_than_asked() -> None:
    for height, width, config in random_configs(300, seed=1):
        tiles = plan_tiles(height, width, config)
        coverage = np.zeros((height, width), dtype=int)
        shapes = {tile.shape for tile in tiles}
        assert len(shapes) == 1
        ((tile_height, tile_width),) = shapes
        assert tile_height <= min(config.tile, height) and tile_width <= min(config.tile, width)
        for tile in tiles:
            coverage[tile.rows, tile.cols] += 1
        assert coverage.min() >= 1
        # as many tiles as full-size tiles would take, never more
        assert len(tiles) == len(plan_axis(height, config.tile, config.stride)) * len(
            plan_axis(width, config.tile, config.stride)
        )
        starts = sorted({t.row_start for t in tiles})
        assert starts[0] == 0 and max(t.row_stop for t in tiles) == height
        steps = np.diff(starts)
        assert ((steps > 0) & (steps <= tile_height - config.overlap)).all()  # every overlap at least the one asked
        assert len(steps) == 0 or steps.max() - steps.min() <= 1  # spread evenly


def test_spatial_plan_shrinks_tiles_to_the_overlap_asked() -> None:
    config = TileConfig(tile=256, overlap=32)
    plan = plan_spatial_axis(512, config)
    assert [(piece.start, piece.stop) for piece in plan] == [(0, 192), (160, 352), (320, 512)]
    assert plan_spatial_axis(200, config) == [slice(0, 200)]
    # pieces that would leave less than two overlaps keep the full side
    assert plan_spatial_axis(20, TileConfig(tile=16, overlap=8)) == plan_axis(20, 16, 8)


def test_band_windows_cover_every_band_even_with_fewer_bands_than_a_window() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        bands, window = (int(n) for n in rng.integers(1, 80, size=2))
        stride = int(rng.integers(1, window + 1))
        windows = plan_band_windows(bands, window, stride)
        covered = np.zeros(bands, dtype=int)
        for band_window in windows:
            assert band_window.stop - band_window.start == min(window, bands)
            covered[band_window] += 1
        assert covered.min() >= 1
        assert windows[-1].stop == bands
    assert plan_band_windows(5, 31, 16) == [slice(0, 5)]
    assert plan_band_windows(224, 31, 16)[-1] == slice(193, 224)


def test_taper_is_a_raised_cosine_by_hand() -> None:
    # ramp 2: sin^2(pi/8) = (1 - cos(pi/4)) / 2 and sin^2(3 pi/8) = (1 + cos(pi/4)) / 2
    low, high = (1 - np.sqrt(0.5)) / 2, (1 + np.sqrt(0.5)) / 2
    np.testing.assert_allclose(taper(6, 2, 2), [low, high, 1, 1, high, low], rtol=1e-6)
    np.testing.assert_allclose(taper(6, 0, 2), [1, 1, 1, 1, high, low], rtol=1e-6)
    np.testing.assert_allclose(taper(6, 1, 0), [0.5, 1, 1, 1, 1, 1], rtol=1e-6)
    np.testing.assert_array_equal(taper(5, 0, 0), np.ones(5))
    assert blend_weights([slice(0, 6), slice(4, 10)])[1].tolist() == pytest.approx([low, high, 1, 1, 1, 1])


def test_weights_are_positive_flat_inside_and_sum_to_one_where_two_pieces_meet() -> None:
    rng = np.random.default_rng(3)
    two_deep = 0
    for _ in range(500):
        size = int(rng.integers(1, 40))
        length, stride = int(rng.integers(1, 120)), int(rng.integers(1, size + 1))
        windows = plan_axis(length, size, stride)
        total, coverage = np.zeros(length), np.zeros(length, dtype=int)
        for window, weights in zip(windows, blend_weights(windows), strict=True):
            assert weights.shape == (window.stop - window.start,)
            assert weights.min() > 0 and weights.max() <= 1
            total[window] += weights
            coverage[window] += 1
        if coverage.max() <= 2:
            two_deep += 1
            np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert two_deep > 200
    middle = blend_weights(plan_axis(100, 40, 30))[1]  # starts 0, 30, 60: overlaps of 10
    np.testing.assert_array_equal(middle[10:30], 1.0)
    assert (middle[:10] < 1).all() and (middle[30:] < 1).all()


def stitch(cube: np.ndarray, tiles: list[Tile], tile_values) -> tuple[np.ndarray, np.ndarray, Stitcher]:
    """Add tiles in plan order; return the assembled output, how often each pixel was emitted, and the stitcher."""
    bands, height, width = cube.shape
    stitcher = Stitcher(bands, (height, width), tiles)
    output = np.full(cube.shape, np.nan, dtype=np.float64)
    emitted = np.zeros((height, width), dtype=int)
    for index, tile in enumerate(tiles):
        for block in stitcher.add(tile, tile_values(index, tile)):
            output[:, block.rows, block.cols] = block.data
            emitted[block.rows, block.cols] += 1
    return output, emitted, stitcher


def test_stitching_unchanged_tiles_gives_back_the_cube() -> None:
    rng = np.random.default_rng(4)
    for height, width, config in random_configs(200, seed=5):
        cube = rng.random((int(rng.integers(1, 5)), height, width), dtype=np.float32)
        tiles = plan_tiles(height, width, config)
        output, emitted, stitcher = stitch(cube, tiles, lambda _, t: cube[:, t.rows, t.cols])
        np.testing.assert_array_equal(emitted, 1)
        np.testing.assert_allclose(output, cube, atol=1e-6)
        assert stitcher.done and stitcher.buffered_bytes == 0


def test_stitching_blends_like_a_dense_weighted_average() -> None:
    rng = np.random.default_rng(6)
    for height, width, config in random_configs(100, seed=7):
        tiles = plan_tiles(height, width, config)
        row_plan, col_plan = (plan_spatial_axis(n, config) for n in (height, width))
        row_weights, col_weights = blend_weights(row_plan), blend_weights(col_plan)
        values = [rng.random((2, *t.shape)) for t in tiles]
        numerator = np.zeros((2, height, width))
        denominator = np.zeros((height, width))
        for tile, value in zip(tiles, values):
            weights = np.outer(row_weights[row_plan.index(tile.rows)], col_weights[col_plan.index(tile.cols)])
            numerator[:, tile.rows, tile.cols] += weights * value
            denominator[tile.rows, tile.cols] += weights
        output, _, _ = stitch(np.zeros((2, height, width)), tiles, lambda i, _: values[i])
        np.testing.assert_allclose(output, numerator / denominator, rtol=1e-6)


def test_stitcher_memory_does_not_grow_with_the_number_of_rows() -> None:
    config = TileConfig(tile=16, overlap=4)
    bands, width = 3, 100

    def peak_bytes(height: int) -> int:
        tiles = plan_tiles(height, width, config)
        stitcher = Stitcher(bands, (height, width), tiles)
        peak = 0
        for tile in tiles:
            stitcher.add(tile, np.ones((bands, *tile.shape), dtype=np.float32))
            peak = max(peak, stitcher.buffered_bytes)
        return peak

    short, tall = peak_bytes(16 + 3 * 12), peak_bytes(16 + 30 * 12)
    assert tall == short
    assert tall < bands * config.tile * width * 4  # less than one strip of full tiles


def test_stitcher_rejects_wrong_blocks_and_tiles_added_twice() -> None:
    tiles = plan_tiles(10, 10, TileConfig(tile=6, overlap=2))
    stitcher = Stitcher(2, (10, 10), tiles)
    with pytest.raises(CubeShapeError):
        stitcher.add(tiles[0], np.zeros((3, 6, 6), dtype=np.float32))
    stitcher.add(tiles[0], np.zeros((2, 6, 6), dtype=np.float32))
    with pytest.raises(ConfigError):
        stitcher.add(tiles[0], np.zeros((2, 6, 6), dtype=np.float32))
    with pytest.raises(ConfigError):
        Stitcher(2, (10, 10), tiles[:1])
