"""Training examples for DECSC: clean cubes, on-the-fly noise, the low-rank front end, random windows.

The model is trained on exactly what it sees at inference. Per *round* and per training cube, the sampler

1. synthesises noise on the whole clean cube (normalised to [0, 1]) with a recipe drawn from the noise mix
   (:mod:`hsidenoise.noise`, default non-i.i.d. sigma_b ~ U(0, 95)/255);
2. runs the front end on the whole noisy cube, as ``hsidenoise run`` does: the low-rank pipeline
   (:class:`hsidenoise.subspace.LowRankDenoiser`) prepared on up to 65,536 random pixel spectra, whose output is
   the equilibrium's initial point ``init`` and whose per-band noise estimate is ``sigma``;
3. draws many examples from that one noisy cube (the front end is the expensive part, so it is amortised):
   a random window of ``band_window`` consecutive bands, a random ``patch_size`` square crop, a random flip and
   90 degree rotation applied identically to clean / noisy / init, each normalised per window as at inference:
   ``lo, hi`` = min / max of the noisy cube over the window's bands (whole spatial extent),
   ``x' = (x - lo) / (hi - lo)`` for clean, noisy and init, ``sigma' = sigma / (hi - lo)``.

Cubes with fewer bands than the model's window, or smaller than one patch, are skipped (and listed in
:attr:`TrainingSet.skipped`): we do not invent bands by reflection.

Every random draw of a round comes from one :class:`numpy.random.Generator` in a fixed order, so the
sampler's state (the generator state at the start of the current round, the round index and the position in
the round) is enough to replay it bit for bit after a restart: see :meth:`PatchSampler.state_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hsidenoise.errors import CheckpointError, ConfigError, CubeReadError, HsiDenoiseError
from hsidenoise.subspace import LowRankConfig
from hsidenoise.noise import NoiseSpec, add_noise, normalise_cube

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

NoiseMix = tuple[tuple[NoiseSpec, float], ...]
"""Noise recipes with their sampling weights, e.g. ``((NoiseSpec("noniid"), 0.5), (NoiseSpec("mixture"), 0.5))``."""


def parse_noise_mix(text: str, *, sigma_max: float | None = None) -> NoiseMix:
    """Parse ``"noniid"`` or ``"noniid:0.5,mixture:0.5"`` into a :data:`NoiseMix`.

    Args:
        text: comma-separated ``recipe[:weight]`` items; a missing weight is 1. Weights need not sum to 1.
        sigma_max: Gaussian level on the 0-255 scale for every recipe; None keeps :class:`NoiseSpec`'s default.

    Raises:
        ConfigError: an unknown recipe, a weight that is not a positive number, or an empty list.
    """
    mix: list[tuple[NoiseSpec, float]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, weight_text = item.partition(":")
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ConfigError(
                f"noise mix item {item!r} has weight {weight_text!r}; write recipe:weight, e.g. noniid:0.5"
            ) from None
        if not (np.isfinite(weight) and weight > 0):
            raise ConfigError(f"noise mix item {item!r} needs a positive weight; got {weight}")
        spec = NoiseSpec(name.strip()) if sigma_max is None else NoiseSpec(name.strip(), sigma_max=sigma_max)
        mix.append((spec, weight))
    if not mix:
        raise ConfigError(f"noise mix {text!r} names no recipe; write e.g. noniid or noniid:0.5,mixture:0.5")
    return tuple(mix)


def format_noise_mix(mix: NoiseMix) -> str:
    """The inverse of :func:`parse_noise_mix` for the model card, e.g. ``"noniid(95):0.5,mixture(95):0.5"``."""
    return ",".join(f"{spec.recipe}({spec.sigma_max:g}):{weight:g}" for spec, weight in mix)


@dataclass(frozen=True)
class SamplerConfig:
    """How training examples are made.

    Attributes:
        noise: recipes and their weights; one is drawn per cube and round.
        patch_size: side of the square spatial crop, in pixels.
        patches_per_cube: examples drawn from each cube per round, i.e. per noise draw and front-end run.
        front_end: the low-rank pipeline that gives noise-aware models their initial point and sigma; it must
            be the one inference runs.
        front_end_pixels: at most this many random pixel spectra feed the front end's noise estimate and
            subspace (as at inference).
    """

    noise: NoiseMix = ((NoiseSpec("noniid"), 1.0),)
    patch_size: int = 64
    patches_per_cube: int = 128
    front_end: LowRankConfig = LowRankConfig()
    front_end_pixels: int = 65_536

    def __post_init__(self) -> None:
        if not self.noise:
            raise ConfigError("SamplerConfig.noise is empty; give at least one recipe, e.g. noniid")
        if any(not (weight > 0) for _, weight in self.noise):
            raise ConfigError(f"noise weights must be positive; got {[weight for _, weight in self.noise]}")
        for name in ("patch_size", "patches_per_cube", "front_end_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SamplerConfig.{name} must be at least 1; got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------------------------
# Clean cubes
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainingCube:
    """One clean cube ready for training.

    Attributes:
        name: a short label (the file name) for logs and the model card.
        source: the file it came from (None for arrays handed in directly).
        data: (B, H, W) float32 in [0, 1]: the valid bands, min-max normalised with one range per cube.
        kept_bands: (B,) indices of those bands in the source (all-NaN and constant bands are dropped).
    """

    name: str
    source: Path | None
    data: np.ndarray
    kept_bands: np.ndarray

    @classmethod
    def from_array(
        cls, array: np.ndarray, *, name: str, source: Path | None = None, nodata: float | None = None
    ) -> TrainingCube:
        """Drop all-NaN / constant bands, fill remaining invalid pixels by their band mean, map to [0, 1].

        Args:
            array: (B, H, W) any numeric dtype.
            nodata: a value that marks missing pixels (besides NaN / inf), or None.

        Raises:
            CubeReadError: no band has at least two distinct valid values.
        """
        from hsidenoise.statistics import invalid_mask

        values = np.asarray(array, dtype=np.float64)
        valid = ~invalid_mask(np.asarray(array), nodata)
        band_min = np.min(values, axis=(1, 2), where=valid, initial=np.inf)
        band_max = np.max(values, axis=(1, 2), where=valid, initial=-np.inf)
        kept = np.flatnonzero(band_max > band_min)
        if kept.size == 0:
            raise CubeReadError(
                f"{name}: all {values.shape[0]} bands are NaN, nodata or constant; a training cube needs varying data"
            )
        values, valid = values[kept], valid[kept]
        if not valid.all():
            band_mean = np.sum(values, axis=(1, 2), where=valid) / valid.sum(axis=(1, 2))
            values = np.where(valid, values, band_mean[:, None, None])
        data, _, _ = normalise_cube(values)
        return cls(name=name, source=source, data=data, kept_bands=kept)

    @classmethod
    def load(cls, path: Path, *, var: str | None = None) -> TrainingCube:
        """Read a cube of any supported format with :func:`hsidenoise.io.read_cube` (see :meth:`from_array`)."""
        from hsidenoise.io import read_cube

        cube = read_cube(Path(path), var=var)
        return cls.from_array(cube.data, name=Path(path).name, source=Path(path), nodata=cube.meta.nodata)

    @property
    def bands(self) -> int:
        return int(self.data.shape[0])


@dataclass(frozen=True)
class TrainingSet:
    """The cubes a run trains on, and the files it passed over with the reason.

    Attributes:
        cubes: usable cubes, in a fixed (sorted-path) order.
        skipped: (path, reason) for every file that was found but not used.
    """

    cubes: tuple[TrainingCube, ...]
    skipped: tuple[tuple[str, str], ...] = ()


def load_training_set(
    paths: Sequence[Path],
    *,
    band_window: int,
    patch_size: int,
    exclude: Sequence[Path] = (),
) -> TrainingSet:
    """Load every usable cube under ``paths``.

    A file that cannot be read (e.g. a MAT file with several candidate 3-D variables), has fewer valid bands
    than ``band_window`` or is smaller than ``patch_size`` is skipped and listed with the reason.

    Args:
        paths: cube files or directories of cubes (searched recursively).
        band_window: the model's band window (DECSCConfig.bands).
        patch_size: side of the training crop.
        exclude: files never to train on (the validation cubes); compared after resolving symlinks.

    Raises:
        ConfigError: no usable cube was found (the message lists why each file was skipped).
    """
    excluded = {Path(path).resolve() for path in exclude}
    cubes: list[TrainingCube] = []
    skipped: list[tuple[str, str]] = []
    from hsidenoise.io.discovery import find_cube_files

    for path in find_cube_files(paths):
        if path.resolve() in excluded:
            skipped.append((str(path), "validation cube"))
            continue
        try:
            cube = TrainingCube.load(path)
        except HsiDenoiseError as error:
            skipped.append((str(path), str(error)))
            continue
        _, rows, cols = cube.data.shape
        if cube.bands < band_window:
            skipped.append((str(path), f"{cube.bands} valid bands, fewer than the model's {band_window}-band window"))
        elif min(rows, cols) < patch_size:
            skipped.append((str(path), f"{rows}x{cols} pixels, smaller than the {patch_size}x{patch_size} patch"))
        else:
            cubes.append(cube)
    for path, reason in skipped:
        logger.info("not training on %s: %s", path, reason)
    if not cubes:
        reasons = "; ".join(f"{Path(path).name}: {reason}" for path, reason in skipped) or "no cube files found"
        raise ConfigError(f"no usable training cube under {', '.join(map(str, paths))} ({reasons})")
    return TrainingSet(cubes=tuple(cubes), skipped=tuple(skipped))


# ---------------------------------------------------------------------------------------------------------
# The front end: what the model starts from
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FrontEndStatistics:
    """The part of :class:`hsidenoise.statistics.CubeStatistics` the low-rank front end reads.

    Attributes:
        sample_spectra: (n, B) float32 random pixel spectra of the noisy cube.
        mean: (B,) float64 mean of each band over the whole cube.
    """

    sample_spectra: np.ndarray
    mean: np.ndarray


class FrontEnd(Protocol):
    """Maps a whole noisy cube to the model's initial point and per-band noise estimate."""

    def __call__(self, noisy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Args: noisy (B, H, W) float32. Returns: init (B, H, W) float32, sigma (B,) in the units of ``noisy``."""
        ...


def sample_statistics(noisy: np.ndarray, rng: np.random.Generator, max_pixels: int) -> FrontEndStatistics:
    """Up to ``max_pixels`` pixel spectra drawn without replacement, and the band means, of a (B, H, W) cube."""
    bands = noisy.shape[0]
    pixels = noisy.reshape(bands, -1)
    count = min(max_pixels, pixels.shape[1])
    chosen = np.sort(rng.choice(pixels.shape[1], size=count, replace=False))
    return FrontEndStatistics(
        sample_spectra=np.ascontiguousarray(pixels[:, chosen].T, dtype=np.float32),
        mean=pixels.mean(axis=1, dtype=np.float64),
    )


@dataclass(frozen=True)
class LowRankFrontEnd:
    """The classical pipeline of :mod:`hsidenoise.subspace` run on the whole cube, as ``hsidenoise run`` does.

    Attributes:
        config: the low-rank settings.
        max_pixels: at most this many random pixel spectra feed ``prepare``.
    """

    config: LowRankConfig = SamplerConfig.front_end
    max_pixels: int = SamplerConfig.front_end_pixels

    @classmethod
    def from_sampler(cls, config: SamplerConfig) -> LowRankFrontEnd:
        return cls(config=config.front_end, max_pixels=config.front_end_pixels)

    def __call__(self, noisy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Args: noisy (B, H, W) float32. Returns: init (B, H, W) float32, sigma (B,) float64."""
        from hsidenoise.subspace import LowRankDenoiser

        denoiser = LowRankDenoiser(self.config)
        denoiser.prepare(sample_statistics(noisy, rng, self.max_pixels))
        init = np.asarray(denoiser.denoise_tile(noisy), dtype=np.float32)
        return init, np.asarray(denoiser.subspace.sigma, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# Windows and batches
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NormalisedWindow:
    """One band window mapped to the model's units.

    Attributes:
        noisy, init, clean: (b, h, w) float32, ``(x - lo) / (hi - lo)``; ``clean`` may be None (inference).
        sigma: (b,) float32, ``sigma / (hi - lo)``.
        lo, hi: the mapping, to undo it with ``x * (hi - lo) + lo``.
    """

    noisy: np.ndarray
    init: np.ndarray
    clean: np.ndarray | None
    sigma: np.ndarray
    lo: float
    hi: float


def normalise_window(
    noisy: np.ndarray,
    init: np.ndarray,
    sigma: np.ndarray,
    lo: float,
    hi: float,
    clean: np.ndarray | None = None,
) -> NormalisedWindow:
    """Map a window to [0, 1] with the noisy cube's (lo, hi) over the window's bands (DESIGN.md, Normalisation).

    Args:
        noisy, init, clean: (b, h, w) arrays in cube units.
        sigma: (b,) noise std in cube units.
        lo, hi: min / max of the noisy cube over the window's bands and the whole spatial extent.
    """
    span = max(float(hi) - float(lo), np.finfo(np.float32).tiny)
    scale = np.float32(1.0 / span)
    offset = np.float32(lo)

    def mapped(x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - offset) * scale).astype(np.float32, copy=False)

    return NormalisedWindow(
        noisy=mapped(noisy),
        init=mapped(init),
        clean=None if clean is None else mapped(clean),
        sigma=(np.asarray(sigma, dtype=np.float64) / span).astype(np.float32),
        lo=float(lo),
        hi=float(hi),
    )


@dataclass(frozen=True, eq=False)
class PatchBatch:
    """A training batch in the model's units.

    Attributes:
        clean, noisy, init: (N, b, h, w) float32 tensors.
        sigma: (N, b) float32 tensor, per-band noise std (front-end estimate) in the same units.
    """

    clean: torch.Tensor
    noisy: torch.Tensor
    init: torch.Tensor
    sigma: torch.Tensor

    def to(self, device: torch.device | str) -> PatchBatch:
        return PatchBatch(*(t.to(device, non_blocking=True) for t in (self.clean, self.noisy, self.init, self.sigma)))


@dataclass(frozen=True, eq=False)
class _PreparedCube:
    """One cube of a round: its noisy version and front-end output, in [0, 1] cube units."""

    clean: np.ndarray  # (B, H, W)
    noisy: np.ndarray  # (B, H, W)
    init: np.ndarray  # (B, H, W)
    sigma: np.ndarray  # (B,)
    band_min: np.ndarray  # (B,) of noisy
    band_max: np.ndarray  # (B,) of noisy


@dataclass
class _Round:
    cubes: list[_PreparedCube]
    examples: np.ndarray  # (n, 6) int64: cube, first band, row, col, quarter turns, flip
    position: int = 0


@dataclass
class _ReplayState:
    rounds: int
    position: int
    expected_rng: dict[str, Any]


class PatchSampler:
    """Seeded source of training batches; see the module docstring for what one round does.

    Args:
        cubes: the clean training cubes (each with at least ``band_window`` bands and ``patch_size`` pixels).
        config: patch size, noise mix, examples per front-end run.
        band_window: bands per example (the model's window, DECSCConfig.bands).
        rng: the only source of randomness (e.g. ``np.random.default_rng([seed, rank])``).
        front_end: maps a noisy cube to (init, sigma); None gives init = noisy and sigma = the synthetic noise's
            true Gaussian sigma (for noise-blind models that ignore both).
        on_round: called with the round index before each round's noise and front-end work (for progress).
    """

    def __init__(
        self,
        cubes: Sequence[TrainingCube],
        config: SamplerConfig,
        *,
        band_window: int,
        rng: np.random.Generator,
        front_end: FrontEnd | None = None,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        if not cubes:
            raise ConfigError("PatchSampler needs at least one training cube")
        for cube in cubes:
            _, rows, cols = cube.data.shape
            if cube.bands < band_window or min(rows, cols) < config.patch_size:
                raise ConfigError(
                    f"cube {cube.name} is {cube.data.shape} (bands, rows, cols); a {band_window}-band window and a "
                    f"{config.patch_size}x{config.patch_size} patch need more; filter with load_training_set"
                )
        self.cubes = tuple(cubes)
        self.config = config
        self.band_window = band_window
        self.front_end = front_end
        self.on_round = on_round
        self._rng = rng
        self._weights = np.array([weight for _, weight in config.noise], dtype=np.float64)
        self._weights /= self._weights.sum()
        self._rounds = 0
        self._round_start: dict[str, Any] | None = None
        self._round: _Round | None = None
        self._replay: _ReplayState | None = None

    @property
    def examples_per_round(self) -> int:
        return len(self.cubes) * self.config.patches_per_cube

    @property
    def rounds(self) -> int:
        """Rounds started so far (the current one included)."""
        return self._rounds

    def next_batch(self, batch_size: int) -> PatchBatch:
        """The next ``batch_size`` examples; starts a new round (noise + front end) when the current one is used up.

        Returns:
            PatchBatch with clean / noisy / init (N, band_window, patch, patch) and sigma (N, band_window).
        """
        import torch

        parts: list[tuple[np.ndarray, ...]] = []
        for _ in range(batch_size):
            round_ = self._current_round()
            parts.append(self._example(round_, round_.examples[round_.position]))
            round_.position += 1
        clean, noisy, init, sigma = (torch.from_numpy(np.stack(column)) for column in zip(*parts, strict=True))
        return PatchBatch(clean=clean, noisy=noisy, init=init, sigma=sigma)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to replay the sampler exactly (plain Python values only)."""
        return {
            "rounds": self._rounds,
            "round_start": self._round_start,
            "position": self._round.position if self._round is not None else 0,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the current round is rebuilt (lazily) from its start state."""
        self._round = None
        if state["round_start"] is None:
            self._rng.bit_generator.state = state["rng"]
            self._rounds, self._round_start, self._replay = 0, None, None
            return
        self._rng.bit_generator.state = state["round_start"]
        self._rounds = int(state["rounds"]) - 1
        self._round_start = None
        self._replay = _ReplayState(
            rounds=int(state["rounds"]), position=int(state["position"]), expected_rng=state["rng"]
        )

    # -- internals -----------------------------------------------------------------------------------------

    def _current_round(self) -> _Round:
        if self._round is None and self._replay is not None:
            self._round = self._replayed_round(self._replay)
            self._replay = None
        if self._round is None or self._round.position >= len(self._round.examples):
            self._round = self._new_round()
        return self._round

    def _replayed_round(self, replay: _ReplayState) -> _Round:
        """Rebuild the round a checkpoint stopped in (the generator is at its start state) and check it."""
        round_ = self._new_round()
        if self._rng.bit_generator.state != replay.expected_rng:
            raise CheckpointError(
                f"replaying sampler round {replay.rounds} did not reproduce the saved random state; the training "
                "data or the front end changed since the checkpoint: start a fresh run"
            )
        round_.position = replay.position
        return round_

    def _new_round(self) -> _Round:
        self._round_start = self._rng.bit_generator.state
        self._rounds += 1
        if self.on_round is not None:
            self.on_round(self._rounds)
        prepared = [self._prepare(cube) for cube in self.cubes]
        return _Round(cubes=prepared, examples=self._draw_examples())

    def _prepare(self, cube: TrainingCube) -> _PreparedCube:
        spec = self.config.noise[int(self._rng.choice(len(self._weights), p=self._weights))][0]
        result = add_noise(cube.data, spec, self._rng)
        noisy = result.noisy
        if self.front_end is None:
            init, sigma = noisy, np.asarray(result.sigma, dtype=np.float64)
        else:
            init, sigma = self.front_end(noisy, self._rng)
        return _PreparedCube(
            clean=cube.data,
            noisy=noisy,
            init=init,
            sigma=sigma,
            band_min=noisy.min(axis=(1, 2)),
            band_max=noisy.max(axis=(1, 2)),
        )

    def _draw_examples(self) -> np.ndarray:
        per_cube, patch = self.config.patches_per_cube, self.config.patch_size
        rows = []
        for index, cube in enumerate(self.cubes):
            bands, height, width = cube.data.shape
            rows.append(
                np.stack(
                    [
                        np.full(per_cube, index),
                        self._rng.integers(0, bands - self.band_window + 1, per_cube),
                        self._rng.integers(0, height - patch + 1, per_cube),
                        self._rng.integers(0, width - patch + 1, per_cube),
                        self._rng.integers(0, 4, per_cube),
                        self._rng.integers(0, 2, per_cube),
                    ],
                    axis=1,
                )
            )
        table = np.concatenate(rows).astype(np.int64)
        return table[self._rng.permutation(len(table))]

    def _example(self, round_: _Round, example: np.ndarray) -> tuple[np.ndarray, ...]:
        cube_index, band, row, col, turns, flip = (int(v) for v in example)
        cube = round_.cubes[cube_index]
        window = slice(band, band + self.band_window)
        crop = (window, slice(row, row + self.config.patch_size), slice(col, col + self.config.patch_size))

        def augment(x: np.ndarray) -> np.ndarray:
            x = np.rot90(x[crop], turns, axes=(1, 2))
            return x[:, :, ::-1] if flip else x

        mapped = normalise_window(
            augment(cube.noisy),
            augment(cube.init),
            cube.sigma[window],
            lo=float(cube.band_min[window].min()),
            hi=float(cube.band_max[window].max()),
            clean=augment(cube.clean),
        )
        return (
            np.ascontiguousarray(mapped.clean),
            np.ascontiguousarray(mapped.noisy),
            np.ascontiguousarray(mapped.init),
            mapped.sigma,
        )


def make_rng(seed: int, rank: int = 0) -> np.random.Generator:
    """The sampler's generator for one process: independent streams per (seed, rank)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(rank)]))
