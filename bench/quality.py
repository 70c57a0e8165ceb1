"""Denoising quality of hsidenoise next to the classical baselines, on real cubes that training never sees.

For every cube (default: one CAVE, one HYDICE and one AVIRIS scene from ``../shared/data``), min-max
normalised to [0, 1] as a whole, the script adds two noises with fixed seeds (non-i.i.d. Gaussian with
sigma_b ~ U(0, 95) / 255 per band, and the mixture recipe: that noise plus impulse, stripes and dead lines on
thirds of the bands; both from :mod:`hsidenoise.noise`), runs every method on the same noisy cube and
prints MPSNR (dB, per band with peak 1, averaged), SSIM (Wang, scikit-image convention), SAM (radians) and
wall-clock seconds side by side. Outputs are not clipped to [0, 1] before scoring.

Methods:

* ``noisy``: the noisy input itself.
* ``bm4d``: ``bm4d.bm4d`` (``baselines`` extra) with an oracle sigma. BM4D takes one white-noise sigma
  (or a stationary PSD), not one per band, so it gets the root mean square of the true per-band sigmas.
* ``fasthyde``: hyde-images' ``FastHyDe`` in its i.i.d. mode with the library's default subspace size 10
  (its non-i.i.d. mode returns garbage; ``shared/reference/cpu-probes.md``).
* ``lowrank-bm3d`` and ``lowrank-dct``: ``hsidenoise run --method lowrank`` through the same tiled
  pipeline (``hsidenoise.denoise.denoise_array``), with BM3D or with the numpy-only DCT fallback.
* ``decsc``: the shipped DECSC weights (``weights/decsc-dctcsc-coupled.safetensors``, or ``--weights PATH``: weights, a
  preset name, or a training checkpoint ``.pt``) through the same tiled pipeline; skipped with a note while
  there are none.

Usage::

    .venv/bin/python bench/quality.py                         # the three default cubes, full size
    .venv/bin/python bench/quality.py --quick                 # 64 x 64 centre crops: a smoke run in minutes
    .venv/bin/python bench/quality.py --cubes cave_256/chart_and_stuffed_toy_ms_256.mat --json out.json
    .venv/bin/python bench/quality.py --methods noisy lowrank-dct
    .venv/bin/python bench/quality.py --methods noisy lowrank-dct decsc --weights runs/paper/checkpoint.pt
    .venv/bin/python bench/quality.py --heldout --methods lowrank-dct decsc --seeds 2   # 17 more cubes, 150 x 150

A cube path is absolute or relative to ``../shared/data``. Unavailable methods (a baseline package not
installed, no weights) are reported as skipped, never silently dropped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsidenoise.quality.metrics import evaluate  # noqa: E402
from hsidenoise.noise import NoiseSpec, NoisyResult, add_noise, normalise_cube  # noqa: E402

DATA = REPO.parent / "shared" / "data"
WEIGHTS = REPO / "weights"
DEFAULT_CUBES = (
    "cave_256/real_and_fake_apples_ms_256.mat",
    "hydice_urban_crop/hydice.mat",
    "aviris_san_diego/sandiego_plane.mat",
)
NOISES = {"noniid": NoiseSpec("noniid", sigma_max=95.0), "mixture": NoiseSpec("mixture", sigma_max=95.0)}
SEED = 2026
"""Noise seed of cube i, noise j and seed index s: SEED + 100 * i + j + 1000 * s (s = 0 is the first seed)."""
FRONT_END = "lowrank-dct"
"""The method DECSC's rows are compared with: its own front end (the DCT low-rank pipeline)."""
QUICK_CROP = 64
FASTHYDE_SUBSPACE = 10

logger = logging.getLogger("bench.quality")


class Skipped(Exception):
    """A method that cannot run here; the message says why."""


Method = Callable[[np.ndarray, NoisyResult], np.ndarray]
"""(noisy (B, H, W) float32, the noise that was added) -> denoised (B, H, W)."""


def run_bm4d(noisy: np.ndarray, truth: NoisyResult) -> np.ndarray:
    try:
        import bm4d
    except ImportError as error:
        raise Skipped(f"bm4d is not installed ({error}); pip install 'hsidenoise[baselines]'") from None
    sigma = float(np.sqrt(np.mean(truth.sigma**2)))
    return np.asarray(bm4d.bm4d(noisy.transpose(1, 2, 0), sigma), dtype=np.float32).transpose(2, 0, 1)


def run_fasthyde(noisy: np.ndarray, truth: NoisyResult) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pytorch_wavelets' pkg_resources, torch.jit deprecations
            import hyde
        import torch
    except ImportError as error:
        raise Skipped(f"hyde-images is not installed ({error}); pip install 'hsidenoise[baselines]'") from None
    image = torch.from_numpy(np.ascontiguousarray(noisy.transpose(1, 2, 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subspace = min(FASTHYDE_SUBSPACE, noisy.shape[0])
        result = hyde.FastHyDe()(image, noise_type="additive", iid=True, k_subspace=subspace)
    return result.numpy().astype(np.float32).transpose(2, 0, 1)


def lowrank_method(spatial: str) -> Method:
    def run(noisy: np.ndarray, truth: NoisyResult) -> np.ndarray:
        from hsidenoise.denoise import denoise_array
        from hsidenoise.errors import ConfigError
        from hsidenoise.subspace import LowRankConfig, LowRankDenoiser

        try:
            denoiser = LowRankDenoiser(LowRankConfig(spatial=spatial))
        except ConfigError as error:
            raise Skipped(str(error)) from None
        return denoise_array(noisy, denoiser)

    return run


DECSC_SETTINGS: dict[str, object] = {"weights": None, "device": "cpu", "batch_size": 4, "adapt_seconds": 60.0}
"""What ``run_decsc`` uses (set by ``--weights``, ``--device``, ``--batch-size``): weights None means the shipped
``weights/decsc-dctcsc-coupled.safetensors``."""


def default_weights() -> Path | None:
    """The shipped default weights (``weights/decsc-dctcsc-coupled.safetensors`` with its JSON), or None without them."""
    from hsidenoise.model import find_default_weights

    return find_default_weights()


def training_overlap(cubes: list[str], weights: str | Path | None) -> str | None:
    """A line naming which of ``cubes`` the DECSC weights' card lists as training data (None: no card says)."""
    path = default_weights() if weights is None else Path(weights)
    card_path = path.with_suffix(".json") if path is not None else None
    if card_path is None or not card_path.is_file():
        return None
    card = json.loads(card_path.read_text()).get("card") or {}
    trained = {Path(str(item.get("file", ""))).name for item in card.get("data") or []}
    seen = [cube for cube in cubes if Path(cube).name in trained]
    unseen = [cube for cube in cubes if Path(cube).name not in trained]
    return (
        f"--heldout: no setting of the front end was chosen on these cubes, but the DECSC weights were trained on "
        f"{len(seen)} of the {len(cubes)} (their card's data; fresh noise here); not on: {', '.join(unseen) or 'none'}"
    )


def shipped(stem: str) -> Path | None:
    """``weights/<stem>.safetensors`` when it and its JSON exist, else None."""
    path = WEIGHTS / f"{stem}.safetensors"
    return path if path.is_file() and path.with_suffix(".json").is_file() else None


def describe_weights(weights: str | Path | None) -> str:
    """One line naming what ``build_decsc`` will load for ``weights`` (None: the shipped weights)."""
    from hsidenoise.model import PRESETS

    if weights is None:
        shipped = default_weights()
        return f"shipped {shipped.relative_to(REPO)}" if shipped else "none (no weights/decsc-dctcsc-coupled.safetensors)"
    if str(weights) in PRESETS:
        return f"untrained {weights} preset (random initialisation: timing only, not quality)"
    path = Path(weights)
    kind = "training checkpoint" if path.suffix == ".pt" else "weights"
    return f"{kind} {path}"


def build_decsc(
    weights: str | Path,
    *,
    device: str = "cpu",
    window_batch: int | None = None,
    solver: dict[str, float | int] | None = None,
    preset: str = "paper",
    adapt_seconds: float = 0.0,
):
    """A DECSC denoiser (:class:`hsidenoise.methods.decsc_bands.DECSCDenoiser`) for the benches.

    Args:
        weights: a ``.safetensors`` file (with its ``.json``), a preset name (an untrained network), or a
            training checkpoint ``checkpoint.pt`` of ``hsidenoise train`` (its network must be ``preset``;
            the front end is the training default, the DCT low-rank pipeline).
        device: ``cpu``, ``cuda`` or ``auto``.
        window_batch: band windows per model call.
        solver: overrides of the solver config (e.g. ``{"max_iter": 4}``).
        preset: the network of a ``.pt`` checkpoint.
    """
    from hsidenoise.methods import build_method

    path = Path(weights)
    if path.suffix != ".pt":
        return build_method(
            "decsc", model=str(weights), device=device, window_batch=window_batch, solver=solver,
            adapt_seconds=adapt_seconds,
        )  # fmt: skip
    preset = str(DECSC_SETTINGS.get("preset") or preset)
    from dataclasses import replace

    import torch

    from hsidenoise.device import select_device
    from hsidenoise.errors import CheckpointError
    from hsidenoise.model import build_model
    from hsidenoise.methods.decsc_bands import DECSCDenoiser, InferenceConfig

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network = build_model(preset)
        network.load_state_dict(state["model"])
    except (OSError, RuntimeError, KeyError, EOFError) as error:
        raise CheckpointError(f"cannot load {path} as a {preset} training checkpoint: {error}") from None
    if solver:
        network.deq.config = replace(network.deq.config, **solver)
    from hsidenoise.model.decsc import EIGEN_MODELS

    if isinstance(network, EIGEN_MODELS):
        from hsidenoise.model.adapt import AdaptConfig
        from hsidenoise.methods.decsc import build_subspace_decsc

        adaptation = AdaptConfig(seconds=adapt_seconds) if adapt_seconds > 0 else None
        return build_subspace_decsc(network, device=select_device(device), adaptation=adaptation)
    return DECSCDenoiser(network, device=select_device(device), config=InferenceConfig(window_batch=window_batch or 1))


def run_decsc_adapted(noisy: np.ndarray, truth: NoisyResult) -> np.ndarray:
    """DECSC with ``--adapt`` (self-supervised adaptation to the noisy cube itself, ``--adapt-seconds``)."""
    return run_decsc(noisy, truth, adapt_seconds=float(DECSC_SETTINGS["adapt_seconds"]))


def run_decsc(noisy: np.ndarray, truth: NoisyResult, adapt_seconds: float = 0.0) -> np.ndarray:
    from hsidenoise.denoise import denoise_array
    from hsidenoise.errors import HsiDenoiseError

    weights = DECSC_SETTINGS["weights"] or default_weights()
    if weights is None:
        raise Skipped(
            f"no DECSC weights at {WEIGHTS / 'decsc-dctcsc-coupled.safetensors'} (training writes them); "
            "pass --weights PATH (.safetensors, or a training checkpoint .pt)"
        )
    try:
        method = build_decsc(weights, device=str(DECSC_SETTINGS["device"]), adapt_seconds=adapt_seconds)
    except HsiDenoiseError as error:
        raise Skipped(f"DECSC weights {weights} cannot be used: {error}") from None
    return denoise_array(noisy, method, batch_size=int(DECSC_SETTINGS["batch_size"]))


METHODS: dict[str, Method] = {
    "noisy": lambda noisy, truth: noisy,
    "bm4d": run_bm4d,
    "fasthyde": run_fasthyde,
    "lowrank-bm3d": lowrank_method("bm3d"),
    "lowrank-dct": lowrank_method("dct"),
    "decsc": run_decsc,
    "decsc-adapt": run_decsc_adapted,
}


@dataclass
class Row:
    cube: str
    shape: tuple[int, int, int]
    noise: str
    method: str
    mpsnr: float | None = None
    mssim: float | None = None
    sam: float | None = None
    seconds: float | None = None
    note: str = ""
    seed: int = 0
    band_psnr: list[float] | None = None


@dataclass
class Bench:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_clean(path: str, quick: bool, corner: int | None = None) -> np.ndarray:
    """(B, H, W) float32 in [0, 1]: the cube min-max normalised as a whole (a centre crop with ``quick``; with
    ``corner``, its first ``corner`` rows and columns after normalising the whole cube, as ``bench/mixture.py
    --heldout`` cuts them)."""
    from hsidenoise.io import read_cube

    resolved = Path(path) if Path(path).is_absolute() else DATA / path
    if not resolved.exists():
        raise SystemExit(f"cube {resolved} not found; pass paths relative to {DATA} or absolute paths")
    data = np.asarray(read_cube(resolved).data, dtype=np.float64)
    if quick:
        _, height, width = data.shape
        top, left = max(0, (height - QUICK_CROP) // 2), max(0, (width - QUICK_CROP) // 2)
        data = data[:, top : top + QUICK_CROP, left : left + QUICK_CROP]
    normalised = normalise_cube(data)[0]
    return normalised if corner is None else np.ascontiguousarray(normalised[:, :corner, :corner])


def run_bench(cubes: list[str], methods: list[str], quick: bool, seeds: int = 1, corner: int | None = None) -> Bench:
    from hsidenoise.quality.metrics import psnr_per_band

    bench = Bench()
    skipped: dict[str, str] = {}
    for cube_index, path in enumerate(cubes):
        clean = load_clean(path, quick, corner)
        for seed_index, (noise_index, (noise_name, spec)) in itertools.product(range(seeds), enumerate(NOISES.items())):
            seed = SEED + 100 * cube_index + noise_index + 1000 * seed_index
            truth = add_noise(clean, spec, np.random.default_rng(seed))
            for name in methods:
                row = Row(cube=path, shape=tuple(int(v) for v in clean.shape), noise=noise_name, method=name, seed=seed)
                bench.rows.append(row)
                if name in skipped:
                    row.note = skipped[name]
                    continue
                started = time.perf_counter()
                try:
                    estimate = METHODS[name](truth.noisy, truth)
                except Skipped as reason:
                    skipped[name] = row.note = str(reason)
                    print(f"  {name}: skipped ({reason})", flush=True)
                    continue
                row.seconds = 0.0 if name == "noisy" else time.perf_counter() - started
                report = evaluate(np.asarray(estimate, dtype=np.float64), clean)
                row.mpsnr, row.mssim, row.sam = report.mpsnr, report.mssim, report.sam
                row.band_psnr = [float(v) for v in psnr_per_band(np.asarray(estimate, dtype=np.float64), clean)]
                print(f"  {Path(path).stem:28s} {noise_name:8s} s{seed_index} {name:13s} {row.mpsnr:6.2f} dB  SSIM {row.mssim:.4f}  "
                      f"SAM {row.sam:.4f}  {row.seconds:6.1f} s", flush=True)
    bench.notes = [f"{name}: {reason}" for name, reason in skipped.items()]
    return bench


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(bench: Bench, methods: list[str]) -> str:
    lines = [
        "| cube (B×H×W) | noise | method | MPSNR (dB) | SSIM | SAM (rad) | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in bench.rows:
        shape = "×".join(str(v) for v in row.shape)
        lines.append(
            f"| {Path(row.cube).stem} ({shape}) | {row.noise} | {row.method} | {_cell(row.mpsnr, 2)} | "
            f"{_cell(row.mssim, 4)} | {_cell(row.sam, 4)} | {_cell(row.seconds, 1)} |"
        )
    lines += ["", "MPSNR (dB) side by side:", ""]
    lines += ["| cube | noise | seed | " + " | ".join(methods) + " |", "| --- | --- | --- |" + " --- |" * len(methods)]
    cases = dict.fromkeys((row.cube, row.noise, row.seed) for row in bench.rows)
    for cube, noise, seed in cases:
        cells = {row.method: _cell(row.mpsnr, 2) for row in bench.rows if (row.cube, row.noise, row.seed) == (cube, noise, seed)}
        lines.append(f"| {Path(cube).stem} | {noise} | {seed} | " + " | ".join(cells.get(m, "—") for m in methods) + " |")
    lines += versus_front_end(bench)
    lines += [""] + [f"- skipped {note}" for note in bench.notes]
    return "\n".join(lines)


def versus_front_end(bench: Bench) -> list[str]:
    """DECSC against its own front end, and adapted DECSC against DECSC, per case and seed."""
    return versus(bench, "decsc", FRONT_END) + versus(bench, "decsc-adapt", "decsc")


def versus(bench: Bench, method: str, base_method: str) -> list[str]:
    """``method`` against ``base_method`` per case and seed: both MPSNRs, the difference, the worst band."""
    pairs = []
    for row in bench.rows:
        if row.method != method or row.mpsnr is None:
            continue
        key = (row.cube, row.noise, row.seed, base_method)
        base = next((r for r in bench.rows if (r.cube, r.noise, r.seed, r.method) == key), None)
        if base is not None and base.mpsnr is not None:
            pairs.append((row, base))
    if not pairs:
        return []
    lines = [
        "",
        f"{method} against {base_method}; per-band columns: PSNR of {method} minus {base_method}'s, per band:",
        "",
        f"| cube | noise | seed | {base_method} | {method} | difference | worst band (index: dB) | bands < −0.2 dB | "
        "seconds ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    gains = []
    for row, base in pairs:
        per_band = np.asarray(row.band_psnr) - np.asarray(base.band_psnr)
        worst = int(np.nanargmin(per_band))
        gains.append(row.mpsnr - base.mpsnr)
        ratio = row.seconds / base.seconds if base.seconds else float("nan")
        lines.append(
            f"| {Path(row.cube).stem} | {row.noise} | {row.seed} | {base.mpsnr:.2f} | {row.mpsnr:.2f} | "
            f"{row.mpsnr - base.mpsnr:+.3f} | {worst}: {per_band[worst]:+.3f} | {int(np.sum(per_band < -0.2))} | "
            f"{ratio:.2f} |"
        )
    lines += ["", f"Mean {method} − {base_method}: {np.mean(gains):+.3f} dB; smallest {np.min(gains):+.3f} dB."]
    return lines


def environment() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "seed": SEED,
        "decsc_weights": describe_weights(DECSC_SETTINGS["weights"]),
        "noises": {name: {"recipe": spec.recipe, "sigma_max": spec.sigma_max} for name, spec in NOISES.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cubes", nargs="+", default=list(DEFAULT_CUBES), help="cube files (absolute, or relative to ../shared/data)"
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="methods to run, in this order"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CROP} x {QUICK_CROP} centre crops, all bands")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument(
        "--weights", help="decsc: weights file, preset name or training checkpoint .pt (default: the shipped weights)"
    )
    parser.add_argument("--device", default="cpu", help="decsc: cpu, cuda or auto (default cpu)")
    parser.add_argument("--batch-size", type=int, default=4, help="decsc: tiles per model call (default 4)")
    parser.add_argument("--preset", default="paper", help="decsc: the network of a band-window checkpoint .pt (default paper)")
    parser.add_argument("--seeds", type=int, default=2, help="noise seeds per case (default 2)")
    parser.add_argument("--adapt-seconds", type=float, default=60.0, help="decsc-adapt: adaptation budget (default 60)")
    parser.add_argument(
        "--heldout", action="store_true",
        help="the 17 cubes of bench/mixture.py --heldout (their first 150 x 150 pixels) instead of --cubes: held out "
        "from the front end's tuning; which of them the DECSC weights were trained on is printed from their card",
    )
    args = parser.parse_args(argv)
    corner = None
    if args.heldout:
        from bench.mixture import HELDOUT, HELDOUT_CROP

        args.cubes, corner = list(HELDOUT), HELDOUT_CROP
    logging.basicConfig(level=logging.WARNING)
    DECSC_SETTINGS.update(
        weights=args.weights, device=args.device, batch_size=args.batch_size, preset=args.preset,
        adapt_seconds=args.adapt_seconds,
    )  # fmt: skip
    if "decsc" in args.methods:
        print(f"decsc weights: {describe_weights(args.weights)}", flush=True)

    bench = run_bench(args.cubes, args.methods, args.quick, args.seeds, corner)
    caveat = training_overlap(args.cubes, args.weights) if args.heldout and "decsc" in args.methods else None
    table = markdown(bench, args.methods)
    print()
    print(table)
    if caveat:
        print(f"\n{caveat}")
    if args.json is not None:
        rows = [vars(row) for row in bench.rows]
        payload = {"environment": environment(), "quick": args.quick, "rows": rows, "notes": bench.notes}
        if caveat:
            payload["caveat"] = caveat
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
