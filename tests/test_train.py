"""Training path: example sampling (data.py) and the training loop (train.py), on tiny synthetic cubes."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from hsidenoise.training.data import (
    LowRankFrontEnd,
    PatchSampler,
    SamplerConfig,
    TrainingCube,
    load_training_set,
    make_rng,
    parse_noise_mix,
)
from hsidenoise.errors import ConfigError
from hsidenoise.noise import NoiseSpec

torch.set_num_threads(1)


def smooth_cube(bands: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(B, H, W) low-rank, spatially smooth cube: 3 endmember spectra times smooth abundance maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    maps = np.stack([np.sin(3 * yy + 1) ** 2, np.cos(2 * xx) ** 2, (yy * xx + 0.2 * rng.random((rows, cols)))])
    spectra = np.abs(rng.normal(size=(bands, 3))) + np.linspace(0.2, 1.0, bands)[:, None]
    return np.einsum("bk,khw->bhw", spectra, maps).astype(np.float32)


def halving_front_end(noisy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for the low-rank front end: deterministic, and it draws from ``rng`` like the real one."""
    rng.random(3)
    return noisy * np.float32(0.5), np.linspace(0.01, 0.02, noisy.shape[0])


# ---------------------------------------------------------------------------------------------------------
# data.py
# ---------------------------------------------------------------------------------------------------------


def test_training_cube_drops_dead_bands_fills_nan_and_normalises_over_the_cube() -> None:
    raw = np.arange(5 * 4 * 3, dtype=np.float64).reshape(5, 4, 3)
    raw[1] = np.nan  # all-NaN band
    raw[3] = 7.0  # constant band
    raw[4, 0, 0] = np.nan  # one missing pixel in a valid band
    cube = TrainingCube.from_array(raw, name="synthetic")

    np.testing.assert_array_equal(cube.kept_bands, [0, 2, 4])
    expected = raw[[0, 2, 4]].copy()
    expected[2, 0, 0] = np.nanmean(raw[4])
    expected = (expected - np.nanmin(expected)) / (np.nanmax(expected) - np.nanmin(expected))
    np.testing.assert_allclose(cube.data, expected, rtol=1e-6, atol=1e-7)
    assert cube.data.dtype == np.float32

    raw[2, 1, 1] = -9999.0  # a nodata pixel counts as missing, like NaN
    with_nodata = TrainingCube.from_array(raw, name="synthetic", nodata=-9999.0)
    kept = np.where(raw[[0, 2, 4]] == -9999.0, np.nan, raw[[0, 2, 4]])  # -9999 does not enter the range
    filled = np.nanmean(kept[1])
    assert with_nodata.data[1, 1, 1] == pytest.approx(
        (filled - np.nanmin(kept)) / (np.nanmax(kept) - np.nanmin(kept)), rel=1e-6
    )


def test_parse_noise_mix_reads_weights_and_rejects_bad_items() -> None:
    mix = parse_noise_mix("noniid:0.5, mixture:1.5", sigma_max=50)
    assert [(spec.recipe, spec.sigma_max, weight) for spec, weight in mix] == [
        ("noniid", 50, 0.5),
        ("mixture", 50, 1.5),
    ]
    assert parse_noise_mix("gauss")[0][0] == NoiseSpec("gauss")
    for bad in ("nosuchnoise", "noniid:-1", "noniid:x", " , "):
        with pytest.raises(ConfigError):
            parse_noise_mix(bad)


def _stepped_cube(bands: int, rows: int, cols: int) -> TrainingCube:
    """Band b spans exactly [b / (4 B), 1 - b / (4 B)] (its first pixel is the low end, its last the high end)."""
    rng = np.random.default_rng(5)
    low = np.arange(bands) / (4 * bands)
    data = low[:, None, None] + rng.random((bands, rows, cols)) * (1 - 2 * low)[:, None, None]
    data[:, 0, 0], data[:, -1, -1] = low, 1 - low
    return TrainingCube(name="stepped", source=None, data=data.astype(np.float32), kept_bands=np.arange(bands))


def test_examples_are_crops_flips_rotations_normalised_per_window() -> None:
    """Without noise every example must be some crop / rotation / flip of the clean cube, mapped with the
    (lo, hi) of its band window, found here by brute force over every candidate."""
    bands, rows, cols, window, patch = 9, 11, 10, 5, 4
    cube = _stepped_cube(bands, rows, cols)
    config = SamplerConfig(noise=((NoiseSpec("gauss", sigma_max=0.0), 1.0),), patch_size=patch, patches_per_cube=6)
    sigma = np.linspace(0.01, 0.05, bands)
    sampler = PatchSampler(
        [cube], config, band_window=window, rng=make_rng(3), front_end=lambda noisy, rng: (noisy.copy(), sigma)
    )
    batch = sampler.next_batch(6)
    assert batch.clean.shape == (6, window, patch, patch) and batch.sigma.shape == (6, window)
    assert all(t.dtype == torch.float32 for t in (batch.clean, batch.noisy, batch.init, batch.sigma))

    seen_transforms = set()
    for clean, noisy, init, sigma_window in zip(batch.clean.numpy(), batch.noisy, batch.init, batch.sigma, strict=True):
        np.testing.assert_array_equal(clean, noisy.numpy())
        np.testing.assert_array_equal(clean, init.numpy())
        matches = []
        for band, row, col, turns, flip in itertools.product(
            range(bands - window + 1), range(rows - patch + 1), range(cols - patch + 1), range(4), range(2)
        ):
            lo = band / (4 * bands)  # the window's smallest low end and largest high end
            hi = 1 - lo
            candidate = np.rot90(cube.data[band : band + window, row : row + patch, col : col + patch], turns, (1, 2))
            candidate = (candidate[:, :, ::-1] if flip else candidate).astype(np.float64)
            if np.allclose(clean, (candidate - lo) / (hi - lo), atol=1e-5):
                matches.append((band, turns, flip))
                np.testing.assert_allclose(sigma_window.numpy(), sigma[band : band + window] / (hi - lo), rtol=1e-6)
        assert matches, "an example is not a crop/flip/rotation of the clean cube normalised per window"
        seen_transforms.update((turns, flip) for _, turns, flip in matches)
    assert len(seen_transforms) > 1  # augmentation does happen


def _sampler(seed: int, cubes: list[TrainingCube], **config: object) -> PatchSampler:
    settings = {"noise": parse_noise_mix("noniid:0.5,mixture:0.5"), "patch_size": 8, "patches_per_cube": 3, **config}
    return PatchSampler(
        cubes, SamplerConfig(**settings), band_window=31, rng=make_rng(seed), front_end=halving_front_end
    )


def _batches(sampler: PatchSampler, count: int, size: int = 4) -> list[np.ndarray]:
    return [np.concatenate([t.numpy().ravel() for t in vars(sampler.next_batch(size)).values()]) for _ in range(count)]


@pytest.fixture
def two_cubes() -> list[TrainingCube]:
    return [
        TrainingCube.from_array(smooth_cube(33, 12, 13, seed=1), name="a"),
        TrainingCube.from_array(smooth_cube(37, 9, 11, seed=2), name="b"),
    ]


def test_sampler_is_reproducible_per_seed_and_differs_across_seeds(two_cubes: list[TrainingCube]) -> None:
    first, again, other = (_batches(_sampler(seed, two_cubes), 4) for seed in (7, 7, 8))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not any(np.array_equal(a, c) for a, c in zip(first, other, strict=True))


def test_sampler_state_replays_the_same_batches_after_a_restart(two_cubes: list[TrainingCube]) -> None:
    rounds: list[int] = []
    straight = _sampler(11, two_cubes)
    straight.on_round = rounds.append
    expected = _batches(straight, 7)  # 28 examples = 4 rounds of 6 (2 cubes x 3) and a part
    assert rounds == [1, 2, 3, 4, 5]

    interrupted = _sampler(11, two_cubes)
    head = _batches(interrupted, 3)  # stops in the middle of round 2
    state = interrupted.state_dict()
    resumed = _sampler(999, two_cubes)  # another seed: everything must come from the state
    resumed.load_state_dict(state)
    for a, b in zip(head + _batches(resumed, 4), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sampler_rejects_cubes_too_small_for_the_window() -> None:
    small = TrainingCube.from_array(smooth_cube(20, 12, 12), name="small")
    with pytest.raises(ConfigError, match="31-band window"):
        _sampler(0, [small])


def test_load_training_set_skips_cubes_without_enough_bands_or_pixels(tmp_path: Path) -> None:
    from scipy.io import savemat

    savemat(tmp_path / "good.mat", {"cube": smooth_cube(33, 24, 24).transpose(1, 2, 0)})
    savemat(tmp_path / "few_bands.mat", {"cube": smooth_cube(5, 24, 24).transpose(1, 2, 0)})
    savemat(tmp_path / "tiny.mat", {"cube": smooth_cube(33, 7, 13).transpose(1, 2, 0)})
    (tmp_path / "notes.txt").write_text("not a cube")

    training = load_training_set([tmp_path], band_window=31, patch_size=16)
    assert [cube.name for cube in training.cubes] == ["good.mat"]
    reasons = dict(training.skipped)
    assert "31-band window" in reasons[str(tmp_path / "few_bands.mat")]
    assert "16x16 patch" in reasons[str(tmp_path / "tiny.mat")]

    excluded = load_training_set([tmp_path], band_window=5, patch_size=7, exclude=[tmp_path / "good.mat"])
    assert [cube.name for cube in excluded.cubes] == ["few_bands.mat", "tiny.mat"]
    with pytest.raises(ConfigError, match="no usable training cube"):
        load_training_set([tmp_path], band_window=64, patch_size=8)


# ---------------------------------------------------------------------------------------------------------
# train.py
# ---------------------------------------------------------------------------------------------------------


def tiny_model_config():
    from hsidenoise.model import DECSCConfig
    from hsidenoise.model.solver import SolverConfig

    return DECSCConfig(
        bands=31,
        gic_atoms=4,
        gic_kernel=3,
        gic_stride=2,
        lsu_atoms=2,
        lsu_kernel=3,
        lsu_stride=2,
        shifts=1,
        prior="conv",
        prior_depth=1,
        prior_width=4,
        noise_aware=True,
        threshold_init=1.0,
        solver=SolverConfig(max_iter=2, phantom_steps=1),
    )


@pytest.fixture
def cube_files(tmp_path: Path) -> tuple[Path, Path]:
    """A directory with two 33 x 24 x 24 training cubes, and a validation cube of 37 x 21 x 23 inside it."""
    from scipy.io import savemat

    data = tmp_path / "cubes"
    data.mkdir()
    savemat(data / "first.mat", {"cube": smooth_cube(33, 24, 24, seed=1).transpose(1, 2, 0)})
    savemat(data / "second.mat", {"cube": 100 + 50 * smooth_cube(33, 24, 24, seed=2).transpose(1, 2, 0)})
    savemat(data / "held_out.mat", {"cube": smooth_cube(37, 21, 23, seed=3).transpose(1, 2, 0)})
    return data, data / "held_out.mat"


def tiny_train_config(cube_files: tuple[Path, Path], out_dir: Path, **overrides: object):
    from hsidenoise.subspace import LowRankConfig
    from hsidenoise.training import TrainConfig

    data, held_out = cube_files
    settings = {
        "model": tiny_model_config(),
        "data": (data,),
        "validation": (held_out,),
        "out_dir": out_dir,
        "sampler": SamplerConfig(patch_size=12, patches_per_cube=8, front_end=LowRankConfig(spatial="none")),
        "batch_size": 2,
        "lr": 1e-3,
        "epochs": 2,
        "steps_per_epoch": 3,
        "checkpoint_every_s": 0.0,
        "validation_crop": 16,
        **overrides,
    }
    return TrainConfig(**settings)


class Killed(Exception):
    """Stands in for the process being killed right after a checkpoint."""


@pytest.mark.parametrize(("noise_aware", "factor"), [(False, 0.5), (True, 0.95)])
def test_training_lowers_the_loss_on_fixed_examples(
    cube_files: tuple[Path, Path], tmp_path: Path, noise_aware: bool, factor: float
) -> None:
    """12 steps lower the MSE on a fixed probe batch. The noise-blind model starts far from the clean data; the
    noise-aware one starts from the front end and first learns to stop spoiling it."""
    import dataclasses

    from hsidenoise.model import build_model
    from hsidenoise.training import fit

    model_config = dataclasses.replace(tiny_model_config(), noise_aware=noise_aware)
    config = tiny_train_config(cube_files, tmp_path / "run", model=model_config, epochs=1, steps_per_epoch=12, lr=1e-2)
    cubes = load_training_set(config.data, band_window=31, patch_size=12, exclude=config.validation).cubes
    front_end = LowRankFrontEnd.from_sampler(config.sampler)
    probe = PatchSampler(cubes, config.sampler, band_window=31, rng=make_rng(123), front_end=front_end).next_batch(8)

    def probe_loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            output, _ = model.eval()(probe.noisy, init=probe.init, sigma=probe.sigma)
        return float(torch.mean((output - probe.clean) ** 2))

    torch.manual_seed(config.seed)
    before = probe_loss(build_model(config.model))
    result = fit(config)
    assert probe_loss(result.model) < factor * before
    assert result.steps == 12 and result.epochs == 1


@pytest.mark.parametrize("killed_after", [3, 4])  # at an epoch boundary and inside an epoch
def test_resume_after_a_kill_gives_bit_identical_weights(
    cube_files: tuple[Path, Path], tmp_path: Path, killed_after: int
) -> None:
    from hsidenoise.training import fit

    straight = fit(tiny_train_config(cube_files, tmp_path / "straight"))

    def kill(event) -> None:
        if event.event == "step" and event.step == killed_after:
            raise Killed

    interrupted_config = tiny_train_config(cube_files, tmp_path / "interrupted")
    with pytest.raises(Killed):
        fit(interrupted_config, progress=kill)
    resumed = fit(interrupted_config, resume=True)

    assert resumed.steps == straight.steps == 6
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [score.mpsnr for score in resumed.history] == [score.mpsnr for score in straight.history]


def test_the_paper_network_takes_a_training_step(cube_files: tuple[Path, Path], tmp_path: Path) -> None:
    """The authors' network (``train --preset paper``, for GPU training) trains on the CPU: one step, its
    architecture as the preset's, with a one-evaluation solve to keep it quick."""
    from dataclasses import replace

    from hsidenoise.model import PRESETS
    from hsidenoise.model.solver import SolverConfig
    from hsidenoise.training import fit

    paper = replace(PRESETS["paper"], solver=SolverConfig(max_iter=1, phantom_steps=1))
    result = fit(
        tiny_train_config(
            cube_files, tmp_path / "paper", model=paper, epochs=1, steps_per_epoch=1, batch_size=1, validation=()
        )
    )
    assert result.steps == 1 and result.weights is not None and result.weights.is_file()
    assert result.model.config.bands == 31 and result.model.config.prior == "swin"
    assert all(bool(torch.isfinite(p).all()) for p in result.model.parameters())


def test_resume_without_a_checkpoint_is_a_clear_error(cube_files: tuple[Path, Path], tmp_path: Path) -> None:
    from hsidenoise.errors import CheckpointError
    from hsidenoise.training import fit

    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit(tiny_train_config(cube_files, tmp_path / "empty"), resume=True)


def test_resume_with_another_loss_is_refused_but_a_checkpoint_that_predates_the_record_resumes(
    cube_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from dataclasses import replace

    from hsidenoise.errors import CheckpointError
    from hsidenoise.training import fit

    config = tiny_train_config(cube_files, tmp_path / "run", epochs=1, validation=(), loss="mpsnr")

    def kill(event) -> None:
        if event.event == "step" and event.step == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(config, progress=kill)
    with pytest.raises(CheckpointError, match="different loss"):
        fit(replace(config, loss="mse"), resume=True)
    path = config.out_dir / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["identity"]["loss"]  # as written before the loss was recorded
    torch.save(state, path)
    assert fit(config, resume=True).steps == 3


def test_fit_writes_weights_card_and_validation_then_finetune_continues(
    cube_files: tuple[Path, Path], tmp_path: Path
) -> None:
    import json

    from hsidenoise.model import load_weights
    from hsidenoise.training import FINETUNE_LR, finetune, fit

    trained = fit(tiny_train_config(cube_files, tmp_path / "base", epochs=1))
    assert trained.weights is not None and trained.weights.is_file()
    card = trained.card
    assert [entry["file"] for entry in card["data"]] == ["first.mat", "second.mat"]  # held_out.mat is not trained on
    assert card["validation_cubes"] == [str(cube_files[1])] and card["steps"] == 3
    assert list(trained.validation.per_case) == ["held_out.mat/noniid"]
    assert np.isfinite([trained.validation.mpsnr, trained.validation.init_mpsnr]).all()

    tuned = finetune(tiny_train_config(cube_files, tmp_path / "tuned", epochs=1, lr=None), trained.weights)
    assert tuned.weights is not None and tuned.weights.is_file() and tuned.weights != trained.weights
    assert tuned.card["from_weights"] == str(trained.weights) and tuned.card["lr"] == FINETUNE_LR
    start, _, _ = load_weights(trained.weights)
    for name, value in start.state_dict().items():  # the loaded weights are the trained ones ...
        assert torch.equal(value, trained.model.state_dict()[name]), name
    assert any(  # ... and finetuning moved them
        not torch.equal(value, tuned.model.state_dict()[name]) for name, value in start.state_dict().items()
    )
    written = json.loads(tuned.weights.with_suffix(".json").read_text())
    assert written["card"]["from_weights"] == str(trained.weights) and written["card"]["steps"] == 3


def _ddp_worker(rank: int, port: int, config, out: Path) -> None:
    import os

    from hsidenoise.training import fit

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank))
    result = fit(config)
    torch.save({"state": result.model.state_dict(), "weights": result.weights}, out / f"rank{rank}.pt")


def test_two_gloo_processes_end_with_identical_weights(cube_files: tuple[Path, Path], tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tiny_train_config(cube_files, tmp_path / "ddp", epochs=1, steps_per_epoch=2, validation=())
    mp.spawn(_ddp_worker, args=(port, config, tmp_path), nprocs=2, join=True)

    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    assert ranks[0]["weights"] is not None and ranks[1]["weights"] is None  # only rank 0 writes
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    samplers = [state["sampler"]["rng"] for state in checkpoint["random"]]
    assert len(samplers) == 2 and samplers[0] != samplers[1]  # each rank draws its own examples

    torch.manual_seed(config.seed)
    from hsidenoise.model import build_model

    initial = build_model(config.model).state_dict()
    assert any(not torch.equal(value, ranks[0]["state"][name]) for name, value in initial.items())


def test_the_best_epoch_is_the_largest_gain_over_the_front_end_not_the_highest_mpsnr() -> None:
    """A resume re-measures the front end (a new release, another --validation-crop): only the gain compares."""
    from hsidenoise.training.loop import is_best_epoch
    from hsidenoise.training.validation import ValidationScore

    earlier = [ValidationScore(30.10, 30.00, 15.0), ValidationScore(30.05, 30.00, 15.0)]  # gains 0.10, 0.05
    assert not is_best_epoch(ValidationScore(30.50, 30.45, 15.0), earlier)  # higher MPSNR, gain 0.05
    assert is_best_epoch(ValidationScore(29.90, 29.75, 15.0), earlier)  # lower MPSNR, gain 0.15
    assert is_best_epoch(ValidationScore(20.0, 25.0, 15.0), [])  # the first epoch is the best so far


def test_validation_crop_zero_scores_whole_cubes(cube_files: tuple[Path, Path], tmp_path: Path) -> None:
    from hsidenoise.training.validation import central_window, prepare_validation

    assert central_window(21, 23, 0) == (slice(None), slice(None), slice(None))
    assert central_window(21, 23, 40) == (slice(None), slice(0, 40), slice(0, 40))  # larger than the cube: all
    assert central_window(21, 23, 8) == (slice(None), slice(6, 14), slice(7, 15))
    config = tiny_train_config(cube_files, tmp_path / "run", validation_crop=0)
    cases = prepare_validation(config.validation, config.sampler, band_window=31, crop=0, front_end=None)
    assert cases and all(case.clean.shape[1:] == (21, 23) for case in cases)
    with pytest.raises(ConfigError, match="validation_crop"):
        tiny_train_config(cube_files, tmp_path / "run", validation_crop=-1)
