"""The component blend (step 6): the components near the Marchenko-Pastur edge weighed per band by SURE.

The eigenvector reliability is checked against a simulation of the spiked covariance model it comes from; the blend
on a cube whose one weak component (below the edge, but well determined) carries signal in two bands only: those
two bands take it and come out several times closer to the truth, no other band comes out worse.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from hsidenoise.statistics import neighbour_pairs
from hsidenoise.subspace import LowRankConfig, Subspace
from hsidenoise.subspace.component_blend import (
    RELIABILITY,
    eigenvector_reliability,
    offered_components,
    sample_ratio,
)
from hsidenoise.subspace.pipeline import denoise_with_subspace, fit_lowrank, sample_pixels_where

from test_dct_csc import smooth_images

WEAK_BANDS = (4, 5)


@pytest.mark.parametrize(("bands", "pixels", "spike"), [(60, 3000, 0.5), (100, 5000, 0.3), (30, 20000, 0.08)])
def test_eigenvector_reliability_matches_a_simulation_of_the_spiked_model(bands: int, pixels: int, spike: float) -> None:
    rng = np.random.default_rng(bands)
    direction = rng.standard_normal(bands)
    direction /= np.linalg.norm(direction)
    eigenvalues, cosines = [], []
    for _ in range(8):
        data = rng.standard_normal((pixels, bands)) + math.sqrt(spike) * rng.standard_normal((pixels, 1)) * direction
        data -= data.mean(axis=0)
        values, vectors = np.linalg.eigh(data.T @ data / pixels)
        eigenvalues.append(values[-1])
        cosines.append((vectors[:, -1] @ direction) ** 2)
    predicted = eigenvector_reliability(float(np.mean(eigenvalues)), bands / pixels)
    assert abs(predicted - np.mean(cosines)) < 0.05, (predicted, np.mean(cosines))


def test_eigenvector_reliability_at_its_limits() -> None:
    gamma = 0.01
    bulk_edge = (1 + math.sqrt(gamma)) ** 2
    assert eigenvector_reliability(bulk_edge, gamma) == 0.0 and eigenvector_reliability(0.5, gamma) == 0.0
    assert eigenvector_reliability(1.01, 0.0) == 1.0  # infinitely many pixels
    values = [eigenvector_reliability(value, gamma) for value in np.linspace(bulk_edge + 1e-3, 5.0, 50)]
    assert np.all(np.diff(values) > 0) and 0.0 < values[0] < 0.2 and values[-1] > 0.99


def _subspace(eigenvalues: list[float], rank: int, bands: int = 40, pixels: int = 4000) -> Subspace:
    vectors = np.linalg.qr(np.random.default_rng(0).standard_normal((bands, bands)))[0]
    values = np.array(eigenvalues + [1.0] * (bands - len(eigenvalues)))
    edge = LowRankConfig().edge_margin * (1 + math.sqrt(bands / pixels)) ** 2
    return Subspace(
        sigma=np.ones(bands), mean=np.zeros(bands), basis=vectors[:, :rank], eigenvalues=values, edge=edge,
        eigenvectors=vectors, population=float(pixels),
    )  # fmt: skip


def test_offered_components_are_the_last_kept_and_the_reliable_ones_below_the_edge() -> None:
    config = LowRankConfig()
    # 40 bands, 40,000 pixels: edge 1.171; below it, 1.15 is a reliable spike (cos^2 0.94), 1.10 is not (0.86)
    subspace = _subspace([900.0, 40.0, 9.0, 3.0, 1.3, 1.15, 1.10, 1.09], rank=5, pixels=40_000)
    assert sample_ratio(subspace, config) == pytest.approx(40 / 40_000)
    assert eigenvector_reliability(1.15, 0.001) >= RELIABILITY > eigenvector_reliability(1.10, 0.001)
    kept, extra = offered_components(subspace, config)
    assert kept == [3, 4]  # of the last three kept, those within NEAR_EDGE times the edge (9.0 is not); never the first
    assert extra == [5]
    assert offered_components(subspace, replace(config, max_rank=5)) == ([3, 4], [])  # never past max_rank
    assert offered_components(_subspace([900.0, 4.0, 3.0, 1.3], rank=3, pixels=40_000), config)[0] == [1, 2]
    # at 100 pixels per band no component below the edge is reliable: the edge is the stricter test there
    assert offered_components(_subspace([900.0, 4.5, 1.3, 1.29], rank=2, pixels=4000), config) == ([1], [])
    assert offered_components(_subspace([900.0, 1.09], rank=1, pixels=40_000), config) == ([], [])


def cube_with_weak_component(bands: int = 31, side: int = 160, amplitude: float = 0.33, seed: int = 0):
    """(clean, noisy) (B, side, side): three strong components spread over the bands, and a weak one in
    :data:`WEAK_BANDS` only, ``amplitude`` noise sigmas strong there: its whitened eigenvalue falls below the edge,
    where its eigenvector is still well determined."""
    rng = np.random.default_rng(seed)
    maps = smooth_images(4, side, side, seed)
    maps /= maps.std(axis=(1, 2), keepdims=True)
    sigma = rng.uniform(0.01, 0.03, bands)
    spectra = rng.uniform(0.5, 1.5, (bands, 3)) * np.array([0.5, 0.2, 0.1])
    clean = 1.0 + np.einsum("bk,khw->bhw", spectra, maps[:3])
    weak = np.zeros(bands)
    weak[list(WEAK_BANDS)] = amplitude * sigma[list(WEAK_BANDS)]
    clean += weak[:, None, None] * maps[3]
    noisy = clean + sigma[:, None, None] * rng.standard_normal(clean.shape)
    return clean, noisy.astype(np.float32)


def test_a_component_below_the_edge_goes_to_the_bands_that_carry_it_and_hurts_no_other() -> None:
    clean, noisy = cube_with_weak_component()
    config = LowRankConfig(spatial="dct")
    spectra, positions = sample_pixels_where(noisy, config.sample_size, config.seed)
    subspace = fit_lowrank(spectra, config, neighbour_pairs(noisy, seed=config.seed + 1), positions)
    assert subspace.rank == 3 and subspace.eigenvalues[3] < subspace.edge  # the weak component is below the edge
    facts: dict = {}
    blended = denoise_with_subspace(noisy, subspace, config, facts=facts).astype(np.float64)
    plain = denoise_with_subspace(noisy, subspace, replace(config, component_blend=False)).astype(np.float64)
    offered, beta = facts["component_blend"]["offered"], facts["component_blend"]["beta"]
    assert 3 in offered
    below = offered.index(3)
    assert np.all(beta[below, list(WEAK_BANDS)] == 1.0)
    others = [b for b in range(clean.shape[0]) if b not in WEAK_BANDS]
    # most bands leave it out or keep a small share (SURE's confidence ramps a band away from its default, 0 here)
    assert np.median(beta[below, others]) < 0.1 and np.mean(beta[below, others] > 0.5) < 0.2
    error_blended = ((blended - clean) ** 2).mean(axis=(1, 2))
    error_plain = ((plain - clean) ** 2).mean(axis=(1, 2))
    assert np.all(error_blended[list(WEAK_BANDS)] < 0.5 * error_plain[list(WEAK_BANDS)])
    assert np.all(error_blended[others] <= 1.001 * error_plain[others])


def test_without_the_blend_the_pipeline_is_as_before_and_spatial_none_is_the_projection_alone() -> None:
    clean, noisy = cube_with_weak_component(bands=17, side=64)
    config = LowRankConfig(spatial="none")
    spectra, positions = sample_pixels_where(noisy, config.sample_size, config.seed)
    subspace = fit_lowrank(spectra, config, None, positions)
    facts: dict = {}
    projection = denoise_with_subspace(noisy, subspace, config, facts=facts)
    assert "component_blend" not in facts
    np.testing.assert_array_equal(projection, denoise_with_subspace(noisy, subspace, replace(config, component_blend=False)))


def test_the_untrained_decsc_gets_the_same_blend_as_lowrank() -> None:
    from hsidenoise.denoise import denoise_array
    from hsidenoise.methods.decsc import DECSCEigenImageDenoiser
    from hsidenoise.model import build_model
    from hsidenoise.subspace import LowRankDenoiser, spatial_denoiser
    from hsidenoise.tiling import TileConfig

    _, noisy = cube_with_weak_component()
    tiles, config = TileConfig(tile=160), LowRankConfig(spatial="dct")
    front_end = denoise_array(noisy, LowRankDenoiser(config), tiles)
    without = denoise_array(noisy, LowRankDenoiser(replace(config, component_blend=False)), tiles)
    eigen_denoiser = DECSCEigenImageDenoiser(build_model("dctcsc").double(), pilot=spatial_denoiser(config))
    ours = denoise_array(noisy, LowRankDenoiser(config, eigen_denoiser, name="decsc"), tiles)
    assert np.abs(front_end - without).max() > 1e-3 * np.abs(front_end).max()  # the blend changed bands
    # the blend's weights are continuous in the front end's eigen-images, which the float64 model and the pipeline's
    # float32 DCT give to about 1e-7 of their size
    assert np.abs(ours.astype(np.float64) - front_end).max() < 2e-5 * np.abs(front_end).max()


def test_the_run_report_says_which_components_the_bands_took() -> None:
    from hsidenoise.denoise import denoise_array
    from hsidenoise.subspace import LowRankDenoiser
    from hsidenoise.tiling import TileConfig

    _, noisy = cube_with_weak_component()
    denoiser = LowRankDenoiser(LowRankConfig(spatial="dct"))
    denoise_array(noisy, denoiser, TileConfig(tile=96, overlap=16))
    blend = denoiser.info()["component_blend"]
    assert blend["tiles"] == 4 and blend["components"][-1] == denoiser.subspace.rank  # one below the edge offered
    assert blend["bands_using"][-1] >= len(WEAK_BANDS) and 0 < blend["mean_weight"][-1] < 0.5
    assert all(weight > 0.9 for weight in blend["mean_weight"][:-1])  # the kept ones stay in nearly every band
    off = LowRankDenoiser(LowRankConfig(spatial="dct", component_blend=False))
    denoise_array(noisy, off, TileConfig(tile=96, overlap=16))
    assert "component_blend" not in off.info()


@pytest.mark.parametrize("method", ["lowrank", "decsc"])
def test_no_component_blend_from_the_cli_gives_the_edges_rank_for_every_band(tmp_path, method: str) -> None:
    """As a user runs it: the default run reports the components it weighed; ``--no-component-blend`` runs the
    pipeline without the blend (``LowRankConfig(component_blend=False)``), bit for bit, for both methods."""
    import json

    from typer.testing import CliRunner

    from hsidenoise.cli import app
    from hsidenoise.cube import Cube, CubeMeta
    from hsidenoise.denoise import denoise_array
    from hsidenoise.io import read_cube, write_cube
    from hsidenoise.subspace import LowRankDenoiser
    from hsidenoise.tiling import TileConfig

    _, noisy = cube_with_weak_component()  # one tile; the weak component below the edge is offered
    write_cube(tmp_path / "c.hdr", Cube(noisy, CubeMeta()))
    runner, documents, outputs = CliRunner(), {}, {}
    for name, flags in (("blend", []), ("plain", ["--no-component-blend"])):
        extra = ["--method", method] + (["--spatial", "dct"] if method == "lowrank" else [])
        result = runner.invoke(app, ["run", str(tmp_path / "c.hdr"), "-o", str(tmp_path / f"{name}.hdr"), *extra, *flags, "--json"])  # fmt: skip
        assert result.exit_code == 0, result.stderr
        documents[name] = json.loads(result.stdout)["method_info"]
        outputs[name] = read_cube(tmp_path / f"{name}.hdr").data
    info = documents["blend"] if method == "lowrank" else documents["blend"]["front_end"]
    assert info["component_blend"]["components"]
    plain = documents["plain"] if method == "lowrank" else documents["plain"]["front_end"]
    assert "component_blend" not in plain
    assert not np.array_equal(outputs["blend"], outputs["plain"])
    if method == "lowrank":
        expected = denoise_array(noisy, LowRankDenoiser(LowRankConfig(spatial="dct", component_blend=False)), TileConfig())
        np.testing.assert_array_equal(outputs["plain"], expected)
