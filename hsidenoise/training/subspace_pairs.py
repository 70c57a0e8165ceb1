"""Training pairs for the subspace DECSC, built in the front end's whitened subspace.

Per *round* the sampler takes the next training cube (in a shuffled order), and

1. synthesises noise on the whole clean cube with a recipe drawn from the noise mix (:mod:`hsidenoise.noise`);
2. fits the front end on the whole noisy cube as inference does (:func:`hsidenoise.subspace.fit_lowrank` on up
   to ``front_end_pixels`` random spectra): per-band sigma, whitening, the basis and eigenvalues;
3. on a random ``region_size`` square of the cube: the noisy eigen-images Z (robust projection of the noisy
   region, :func:`hsidenoise.subspace.project`), their DCT pilot P, and the target T, the clean cube's
   projection on the *same* basis and whitening, T = basis^T (clean - mean) / sigma;
4. draws ``patches_per_round`` examples from that region: a random crop, flip and rotation; with probability
   ``real_fraction`` the example keeps the real (Z, P) of step 3 (the noise the estimated basis and the robust
   steps leave, outliers included), otherwise it gets fresh noise in the eigen domain, Z' = T + N(0, I) (the
   whitened eigen-images carry unit white noise, so this is exact for the Gaussian part) and its own pilot
   P' = DCT(Z'). Every synthetic example therefore sees a noise draw no other example saw. With
   ``synthetic_noise`` = (lo, hi), lo < hi, each component's level is drawn from U(lo, hi) instead of 1
   (Z' = T + sigma_i N(0, I), P' = DCT(Z') with those levels): the front end's eigen-images really carry
   0.5 to 1.0 (``shared/reference/learned-eigenimage-notes.md``).

Every example also carries the noise level of each eigen-image (``noise``): the drawn sigma_i for synthetic
examples; for real ones, with ``real_noise="pipeline"`` (the default) the level the pipeline passes its
eigen-image denoiser at run time (:data:`PIPELINE_NOISE`: 1, the whitening's nominal level, until the pipeline
passes a measured one; then this must call the same estimate), with ``real_noise="true"`` the true level of the
round, the standard deviation of Z - T per component over the region (what a per-component estimate aims at).

Every example also carries what maps its eigen-images back to data units as the pipeline's back-projection
does (:func:`hsidenoise.subspace.synthesis`: data = offset + loadings @ eigen-images) and the clean crop in data
units minus that offset (``bands``), so a loss can be computed per band in the users' units
(:mod:`hsidenoise.training.losses`); the clean crop includes what lies outside the subspace, which no
eigen-image denoiser can recover but which sets each band's error floor.

Every draw of a round comes from one generator in a fixed order (synthetic noise from a generator seeded by
the round and the example's index), so a checkpoint's (round start state, round index, position) replays it
bit for bit, as :class:`hsidenoise.training.data.PatchSampler` does.

Shapes: a batch holds eigen, pilot, target (N, k, p, p) float32 with k the largest rank in the batch (smaller
ranks zero-padded), eigenvalues (N, k) (padding: 1) and mask (N, k) (1 for real components); bands
(N, B, p, p) float32 with B the most bands in the batch, loadings (N, B, k) (padding: 0) and band_mask (N, B).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.training.data import NoiseMix, TrainingCube
from hsidenoise.errors import CheckpointError, ConfigError
from hsidenoise.subspace import LowRankConfig
from hsidenoise.noise import NoiseSpec, add_noise

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PIPELINE_NOISE = 1.0
"""The noise level the pipeline passes its eigen-image denoiser (``denoise_with_subspace``): the whitening's
nominal 1. Real training examples carry it with ``real_noise="pipeline"``, so that training sees what run time
sees; when the pipeline passes a measured level per component, the sampler must compute that same level here."""


@dataclass(frozen=True)
class SubspaceSamplerConfig:
    """How subspace training pairs are made.

    Attributes:
        noise: recipes and weights; one is drawn per round.
        patch_size: side of an example's square crop.
        region_size: side of the square region that is projected per round (the whole cube when smaller).
        patches_per_round: examples drawn per round (per noise draw and front-end fit).
        real_fraction: share of examples that keep the real front-end eigen-images instead of fresh noise.
        front_end: the low-rank pipeline (its spatial denoiser makes the pilot; it must be inference's).
        front_end_pixels: random spectra that fit the front end, as at inference.
        self_supervised: the cubes are real noisy data with no clean version: no noise is added, every example
            keeps the real eigen-images and the target is left at zero (unused: the loss is SURE).
        synthetic_noise: (lo, hi): synthetic examples' per-component noise levels are drawn from U(lo, hi);
            (1, 1), the default, keeps unit noise (and the random stream of earlier versions).
        real_noise: the level real examples carry: ``"pipeline"`` (what run time passes) or ``"true"``.
    """

    noise: NoiseMix = ((NoiseSpec("noniid"), 1.0), (NoiseSpec("mixture"), 1.0))
    patch_size: int = 48
    region_size: int = 128
    patches_per_round: int = 48
    real_fraction: float = 0.5
    front_end: LowRankConfig = field(default_factory=lambda: LowRankConfig(spatial="dct"))
    front_end_pixels: int = 65_536
    self_supervised: bool = False
    synthetic_noise: tuple[float, float] = (1.0, 1.0)
    real_noise: str = "pipeline"

    def __post_init__(self) -> None:
        if not self.noise:
            raise ConfigError("SubspaceSamplerConfig.noise is empty; give at least one recipe, e.g. noniid")
        for name in ("patch_size", "region_size", "patches_per_round", "front_end_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SubspaceSamplerConfig.{name} must be at least 1; got {getattr(self, name)}")
        if self.region_size < self.patch_size:
            raise ConfigError(f"region_size {self.region_size} must be at least patch_size {self.patch_size}")
        if self.real_noise not in ("pipeline", "true"):
            raise ConfigError(f"real_noise must be 'pipeline' or 'true'; got {self.real_noise!r}")
        low, high = self.synthetic_noise
        if not 0 < low <= high:
            raise ConfigError(f"synthetic_noise must be (lo, hi) with 0 < lo <= hi; got {self.synthetic_noise}")
        if not 0 <= self.real_fraction <= 1:
            raise ConfigError(f"real_fraction must be in [0, 1]; got {self.real_fraction}")
        if self.front_end.spatial not in ("dct", "none"):
            raise ConfigError(
                f"the training pilot must be cheap per example: front_end.spatial 'dct' or 'none', got "
                f"{self.front_end.spatial!r}"
            )


@dataclass(frozen=True, eq=False)
class EigenRegion:
    """One round's region in the whitened subspace.

    Attributes:
        eigen: (k, r, c) noisy eigen-images of the region (unit noise).
        pilot: (k, r, c) their front-end estimate.
        target: (k, r, c) the clean region projected on the same basis and whitening.
        eigenvalues: (k,) whitened eigenvalues of the kept components.
        noise: (k,) noise level of each eigen-image (``SubspaceSamplerConfig.real_noise``).
        bands: (B, r, c) float32 the clean region in data units minus the synthesis offset (zeros when
            self-supervised).
        loadings: (B, k) the synthesis loadings (data units per whitened unit; :func:`hsidenoise.subspace.synthesis`).
        cube: the training cube's name.
        recipe: the noise recipe drawn.
    """

    eigen: np.ndarray
    pilot: np.ndarray
    target: np.ndarray
    eigenvalues: np.ndarray
    noise: np.ndarray
    bands: np.ndarray
    loadings: np.ndarray
    cube: str
    recipe: str

    @property
    def rank(self) -> int:
        return int(self.eigen.shape[0])


def eigen_region(
    clean: np.ndarray, noisy: np.ndarray, rows: slice, cols: slice, config: SubspaceSamplerConfig, seed: int
) -> tuple[EigenRegion, Any]:
    """Steps 2-3 of a round: fit the front end on the whole noisy cube, project one region.

    Args:
        clean, noisy: (B, H, W) in the same units.
        rows, cols: the region.
        seed: seeds the front end's pixel sample.

    Returns:
        (the region with an empty cube name and recipe, the fitted :class:`hsidenoise.subspace.Subspace`).
    """
    from hsidenoise.statistics import neighbour_pairs
    from hsidenoise.subspace import fit_lowrank, project, spatial_denoiser, synthesis
    from hsidenoise.subspace.pipeline import sample_pixels_where

    front_end = config.front_end
    pairs = neighbour_pairs(noisy, seed=seed + 1)
    spectra, positions = sample_pixels_where(noisy, config.front_end_pixels, seed)
    subspace = fit_lowrank(spectra, front_end, pairs, positions)
    eigen, _ = project(noisy[:, rows, cols], subspace, front_end)
    pilot = spatial_denoiser(front_end).denoise(eigen, 1.0)
    region = np.asarray(clean[:, rows, cols], dtype=np.float64)
    bands, height, width = region.shape
    whitened = (region.reshape(bands, -1) - subspace.mean[:, None]) / subspace.sigma[:, None]
    target = (subspace.basis.T @ whitened).reshape(subspace.rank, height, width)
    eigenvalues = np.asarray(subspace.eigenvalues[: subspace.rank], dtype=np.float64)
    if config.real_noise == "true":
        noise = (eigen - target).reshape(subspace.rank, -1).std(axis=1)
    else:
        noise = np.full(subspace.rank, PIPELINE_NOISE)
    offset, loadings = synthesis(subspace)
    clean_bands = (region - offset[:, None, None]).astype(np.float32)
    region_ = EigenRegion(
        eigen, pilot, target, eigenvalues, noise, clean_bands, np.asarray(loadings, np.float32), cube="", recipe=""
    )
    return region_, subspace


@dataclass(frozen=True, eq=False)
class EigenBatch:
    """A batch of subspace examples (see the module docstring for shapes)."""

    eigen: torch.Tensor
    pilot: torch.Tensor
    target: torch.Tensor
    eigenvalues: torch.Tensor
    mask: torch.Tensor
    noise: torch.Tensor
    bands: torch.Tensor
    loadings: torch.Tensor
    band_mask: torch.Tensor

    def to(self, device: torch.device | str) -> EigenBatch:
        tensors = (
            self.eigen, self.pilot, self.target, self.eigenvalues, self.mask, self.noise, self.bands, self.loadings,
            self.band_mask,
        )  # fmt: skip
        return EigenBatch(*(t.to(device, non_blocking=True) for t in tensors))


@dataclass
class _Round:
    region: EigenRegion
    examples: np.ndarray  # (n, 5) int64: row, col, quarter turns, flip, synthetic (0/1)
    seed: int
    position: int = 0


@dataclass
class _Replay:
    rounds: int
    position: int
    expected_rng: dict[str, Any]


class SubspaceSampler:
    """Seeded source of subspace training batches (see the module docstring).

    Args:
        cubes: the clean training cubes (each at least ``patch_size`` pixels on a side).
        config: crops, noise mix, front end.
        rng: the only source of randomness.
        on_round: called with the round index before each round's noise and front-end work.
    """

    def __init__(
        self,
        cubes: Sequence[TrainingCube],
        config: SubspaceSamplerConfig,
        *,
        rng: np.random.Generator,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        if not cubes:
            raise ConfigError("SubspaceSampler needs at least one training cube")
        for cube in cubes:
            if min(cube.data.shape[1:]) < config.patch_size or cube.bands < 2:
                raise ConfigError(
                    f"cube {cube.name} is {cube.data.shape} (bands, rows, cols); a {config.patch_size}-pixel patch "
                    "and at least 2 bands are needed; filter with load_training_set"
                )
        self.cubes = tuple(cubes)
        self.config = config
        self.on_round = on_round
        self._rng = rng
        self._weights = np.array([weight for _, weight in config.noise], dtype=np.float64)
        self._weights /= self._weights.sum()
        self._order: list[int] = []  # cubes left in this pass
        self._order_start: list[int] = []  # the same at the start of the current round
        self._rounds = 0
        self._round_start: dict[str, Any] | None = None
        self._round: _Round | None = None
        self._replay: _Replay | None = None

    @property
    def rounds(self) -> int:
        return self._rounds

    def next_batch(self, batch_size: int) -> EigenBatch:
        """The next ``batch_size`` examples (a new round starts when the current one is used up)."""
        import torch

        parts = []
        for _ in range(batch_size):
            round_ = self._current_round()
            parts.append(self._example(round_, round_.position))
            round_.position += 1
        rank = max(part[0].shape[0] for part in parts)
        size = self.config.patch_size
        eigen, pilot, target = (np.zeros((batch_size, rank, size, size), np.float32) for _ in range(3))
        eigenvalues = np.ones((batch_size, rank), np.float32)
        mask = np.zeros((batch_size, rank), np.float32)
        noise = np.ones((batch_size, rank), np.float32)
        band_count = max(part[5].shape[0] for part in parts)
        bands = np.zeros((batch_size, band_count, size, size), np.float32)
        loadings = np.zeros((batch_size, band_count, rank), np.float32)
        band_mask = np.zeros((batch_size, band_count), np.float32)
        for index, (z, p, t, lam, level, clean, synth) in enumerate(parts):
            k, b = z.shape[0], clean.shape[0]
            eigen[index, :k], pilot[index, :k], target[index, :k] = z, p, t
            eigenvalues[index, :k], mask[index, :k], noise[index, :k] = lam, 1.0, level
            bands[index, :b], loadings[index, :b, :k], band_mask[index, :b] = clean, synth, 1.0
        arrays = (eigen, pilot, target, eigenvalues, mask, noise, bands, loadings, band_mask)
        return EigenBatch(*(torch.from_numpy(a) for a in arrays))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to replay the sampler exactly (plain Python values only)."""
        return {
            "rounds": self._rounds,
            "round_start": self._round_start,
            "order": list(self._order_start),
            "position": self._round.position if self._round is not None else 0,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the current round is rebuilt (lazily) from its start state."""
        self._round = None
        if state["round_start"] is None:
            self._rng.bit_generator.state = state["rng"]
            self._rounds, self._round_start, self._replay = 0, None, None
            self._order, self._order_start = [], []
            return
        self._rng.bit_generator.state = state["round_start"]
        self._rounds = int(state["rounds"]) - 1
        self._order = [int(i) for i in state["order"]]
        self._round_start = None
        self._replay = _Replay(int(state["rounds"]), int(state["position"]), state["rng"])

    # -- internals -----------------------------------------------------------------------------------------

    def _current_round(self) -> _Round:
        if self._round is None and self._replay is not None:
            replay, self._replay = self._replay, None
            self._round = self._new_round()
            if self._rng.bit_generator.state != replay.expected_rng:
                raise CheckpointError(
                    f"replaying sampler round {replay.rounds} did not reproduce the saved random state; the training "
                    "data or the front end changed since the checkpoint: start a fresh run"
                )
            self._round.position = replay.position
        if self._round is None or self._round.position >= len(self._round.examples):
            self._round = self._new_round()
        return self._round

    def _new_round(self) -> _Round:
        self._round_start = self._rng.bit_generator.state
        self._order_start = list(self._order)
        if not self._order:  # a new pass over the cubes, in a new order
            self._order = [int(i) for i in self._rng.permutation(len(self.cubes))]
        cube = self.cubes[self._order.pop(0)]
        self._rounds += 1
        if self.on_round is not None:
            self.on_round(self._rounds)
        spec = self.config.noise[int(self._rng.choice(len(self._weights), p=self._weights))][0]
        if self.config.self_supervised:  # the cube is the user's noisy data as it is
            noisy, recipe = cube.data, "real"
        else:
            noisy, recipe = add_noise(cube.data, spec, self._rng).noisy, spec.recipe
        _, height, width = cube.data.shape
        side_r, side_c = min(self.config.region_size, height), min(self.config.region_size, width)
        row = int(self._rng.integers(0, height - side_r + 1))
        col = int(self._rng.integers(0, width - side_c + 1))
        seed = int(self._rng.integers(0, 2**31 - 1))
        region, _ = eigen_region(
            cube.data, noisy, slice(row, row + side_r), slice(col, col + side_c), self.config, seed
        )
        unseen = self.config.self_supervised  # the cube is noisy: no target, and the nominal level
        target = np.zeros_like(region.target) if unseen else region.target
        level = np.ones_like(region.noise) if unseen else region.noise
        clean_bands = np.zeros_like(region.bands) if unseen else region.bands
        region = EigenRegion(
            region.eigen, region.pilot, target, region.eigenvalues, level, clean_bands, region.loadings, cube.name,
            recipe,
        )  # fmt: skip
        count, patch = self.config.patches_per_round, self.config.patch_size
        examples = np.stack(
            [
                self._rng.integers(0, side_r - patch + 1, count),
                self._rng.integers(0, side_c - patch + 1, count),
                self._rng.integers(0, 4, count),
                self._rng.integers(0, 2, count),
                (self._rng.random(count) >= self.config.real_fraction).astype(np.int64)
                * (not self.config.self_supervised),
            ],
            axis=1,
        ).astype(np.int64)
        return _Round(region=region, examples=examples, seed=seed)

    def _example(self, round_: _Round, index: int) -> tuple[np.ndarray, ...]:
        from hsidenoise.subspace import spatial_denoiser

        row, col, turns, flip, synthetic = (int(v) for v in round_.examples[index])
        patch = self.config.patch_size
        crop = (slice(None), slice(row, row + patch), slice(col, col + patch))

        def augment(x: np.ndarray) -> np.ndarray:
            x = np.rot90(x[crop], turns, axes=(1, 2))
            return np.ascontiguousarray(x[:, :, ::-1] if flip else x)

        region = round_.region
        target = augment(region.target)
        if synthetic:
            noise_rng = np.random.default_rng([round_.seed, index])
            low, high = self.config.synthetic_noise
            level = noise_rng.uniform(low, high, target.shape[0]) if high > low else np.full(target.shape[0], low)
            eigen = target + level[:, None, None] * noise_rng.standard_normal(target.shape)
            pilot = spatial_denoiser(self.config.front_end).denoise(eigen, level if high > low else low)
        else:
            eigen, pilot, level = augment(region.eigen), augment(region.pilot), region.noise
        return eigen, pilot, target, region.eigenvalues, level, augment(region.bands), region.loadings
