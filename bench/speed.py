"""Speed of hsidenoise next to BM4D and FastHyDe, and what each inference optimisation buys, in one run.

Cubes (default; real data from ``../shared/data``, min-max normalised as a whole, then non-i.i.d. Gaussian
noise sigma_b ~ U(0, 95) / 255 per band from :mod:`hsidenoise.noise`, seed ``2026 + position in this list``):

* ``256x256x31``: CAVE ``real_and_fake_apples`` as it is.
* ``512x512x31``: a 2 x 2 mosaic of the two CAVE scenes (apples | chart / chart upside down | apples mirrored).
* ``512x512x224``: AVIRIS Santa Barbara (90 x 90 x 224, all bands) mirror-tiled to 512 x 512; its 43
  zero-filled water-absorption bands are filled by linear interpolation along the spectrum first, so that every
  band carries signal.

Methods:

* ``lite``: hsidenoise DECSC through the tool's own path (``build_method("decsc")`` + ``denoise_array``,
  default tiling 256 / 32), tiles batched (``--batch-size``), with the optimised :class:`InferenceConfig`.
* ``lite-naive``: the same network and weights through ``InferenceConfig(naive=True)``: one tile per call
  (``batch_size=1``), one band window per model call, batch-wide convergence, fp32, the difference
  convolutions as their five-convolution definition, ``torch.no_grad`` instead of ``torch.inference_mode``.
* ``paper``: the untrained ``paper`` preset (4.29 M parameters, 7 x 7 cycle spinning), timing only; run on
  CUDA, skipped on CPU unless ``--paper`` is given.
* ``lowrank``: ``hsidenoise run --method lowrank`` (the classical pipeline, no weights).
* ``bm4d``: ``bm4d.bm4d`` with an oracle sigma (the RMS of the true per-band sigmas); ``fasthyde``:
  hyde-images' FastHyDe, i.i.d. mode; both through ``bench/quality.py``'s own functions.

Every measurement runs in a fresh child process (``bench/speed.py --one SPEC``), so that its peak RSS
(``VmHWM``: interpreter, libraries, the noisy cube and the method's working memory) is its own; the child
writes the output cube, and this process scores it (MPSNR against the clean cube, max |lite - lite-naive|).
Seconds are the method's call alone (for hsidenoise: statistics, front end, tiles and blending; not the model
construction). Solver evaluations per tile count every evaluation of the equilibrium layer (initial point,
Anderson solve, phantom steps), averaged over the tile's windows.

Further sections:

* ablation (``512x512x31``, or the quick cube): the optimised ``lite`` with one optimisation switched off at a
  time, each as a ratio to the optimised time, plus one thread instead of all cores;
* PSNR against solver evaluations: ``lite`` with ``max_iter`` in (1, 2, 4, 6, 10) on ``256x256x31`` (meaningful
  with trained weights only; the table says which weights ran).

Usage::

    .venv/bin/python bench/speed.py --json speed.json                  # everything (an hour or more on 2 cores)
    .venv/bin/python bench/speed.py --quick                            # 256x256x31, few methods, minutes
    .venv/bin/python bench/speed.py --quick --crop 96                  # a smoke run
    .venv/bin/python bench/speed.py --weights runs/lite/checkpoint.pt  # a training checkpoint
    .venv/bin/python bench/speed.py --device cuda --json speed-gpu.json

Targets (issue 5): ``lite`` at least 3 x faster than ``lite-naive`` with max |difference| <= 1e-3; on 2 CPU
cores ``lite`` on 512x512x31 at least 5 x faster than BM4D and no slower than FastHyDe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import memory  # noqa: E402  (bench/memory.py: peak resident memory of this process)
import quality  # noqa: E402  (bench/quality.py: the baselines and the DECSC loader)

DATA = REPO.parent / "shared" / "data"
SEED = 2026
SIGMA_MAX = 95.0
CUBES = ("256x256x31", "512x512x31", "512x512x224")
METHODS = ("subspace", "lowrank-dct", "lite", "lite-naive", "paper", "lowrank", "bm4d", "fasthyde")
QUICK_METHODS = ("lite", "lite-naive", "lowrank", "fasthyde")
SWEEP_ITERATIONS = (1, 2, 4, 6, 10)
ABLATION = {
    # name: (InferenceConfig overrides, batch size override, threads override)
    "optimised": ({}, None, None),
    "no tile batching (batch_size 1)": ({}, 1, None),
    "one window per call (window_batch 1)": ({"window_batch": 1}, None, None),
    "batch-wide convergence": ({"per_window_convergence": False}, None, None),
    "unfolded difference conv (5 convs)": ({"fold": False}, None, None),
    "torch.no_grad, not inference_mode": ({"inference_mode": False}, None, None),
    "one thread": ({}, None, 1),
    "naive (all of the above off)": ({"naive": True}, 1, None),
}
"""The ablation: the optimised ``lite`` with one thing changed."""


# ---------------------------------------------------------------------------------------------------------
# Cubes
# ---------------------------------------------------------------------------------------------------------


def _read(relative: str) -> np.ndarray:
    from hsidenoise.io import read_cube

    path = DATA / relative
    if not path.is_file():
        raise SystemExit(f"cube {path} not found; the speed bench needs ../shared/data next to the repository")
    return np.asarray(read_cube(path).data, dtype=np.float64)


def _fill_zero_bands(cube: np.ndarray) -> np.ndarray:
    """(B, H, W) with every all-zero band replaced by linear interpolation from the nearest non-zero bands."""
    dead = ~np.any(cube != 0, axis=(1, 2))
    if not dead.any():
        return cube
    bands = np.arange(cube.shape[0])
    good = bands[~dead]
    filled = cube.copy()
    flat = cube[good].reshape(good.size, -1)
    for band in bands[dead]:
        right = np.searchsorted(good, band)
        left_band, right_band = good[max(right - 1, 0)], good[min(right, good.size - 1)]
        weight = 0.0 if right_band == left_band else (band - left_band) / (right_band - left_band)
        left_row, right_row = np.searchsorted(good, left_band), np.searchsorted(good, right_band)
        filled[band] = ((1 - weight) * flat[left_row] + weight * flat[right_row]).reshape(cube.shape[1:])
    return filled


def clean_cube(name: str) -> np.ndarray:
    """The clean (B, H, W) float32 cube ``name`` (one of :data:`CUBES`), normalised to [0, 1] as a whole."""
    from hsidenoise.noise import normalise_cube

    if name == "256x256x31":
        cube = _read("cave_256/real_and_fake_apples_ms_256.mat")
    elif name == "512x512x31":
        apples = _read("cave_256/real_and_fake_apples_ms_256.mat")
        chart = _read("cave_256/chart_and_stuffed_toy_ms_256.mat")
        top = np.concatenate([apples, chart], axis=2)
        bottom = np.concatenate([chart[:, ::-1, :], apples[:, :, ::-1]], axis=2)
        cube = np.concatenate([top, bottom], axis=1)
    elif name == "512x512x224":
        scene = _fill_zero_bands(_read("aviris_santa_barbara_lacumbre_224/a_hsi_img_for_VI_demo.mat"))
        _, height, width = scene.shape
        cube = np.pad(scene, ((0, 0), (0, 512 - height), (0, 512 - width)), mode="symmetric")
    else:
        raise SystemExit(f"unknown cube {name!r}; choose from {', '.join(CUBES)}")
    return normalise_cube(cube)[0].astype(np.float32)


def make_cubes(names: list[str], workdir: Path, crop: int | None) -> dict[str, Path]:
    """Write clean.npy, noisy.npy and sigma.npy for each cube under ``workdir``; returns name -> folder."""
    from hsidenoise.noise import NoiseSpec, add_noise

    folders = {}
    for name in names:
        clean = clean_cube(name)
        if crop is not None:
            _, height, width = clean.shape
            top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
            clean = np.ascontiguousarray(clean[:, top : top + crop, left : left + crop])
        rng = np.random.default_rng(SEED + CUBES.index(name))
        noise = add_noise(clean, NoiseSpec("noniid", sigma_max=SIGMA_MAX), rng)
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "clean.npy", clean)
        np.save(folder / "noisy.npy", np.asarray(noise.noisy, dtype=np.float32))
        np.save(folder / "sigma.npy", np.asarray(noise.sigma, dtype=np.float64))
        folders[name] = folder
    return folders


# ---------------------------------------------------------------------------------------------------------
# One measurement, in a child process
# ---------------------------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_bytes() -> int:
    """VmHWM (bench/memory.py): ru_maxrss would carry this bench's own peak into every child on Linux."""
    return int(memory.peak_rss_mib() * 2**20)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one method on one cube as ``spec`` says; save its output; return seconds, memory and solver work."""
    folder = Path(spec["cube"])
    noisy = np.load(folder / "noisy.npy")
    sigma = np.load(folder / "sigma.npy")
    method = spec["method"]
    result: dict[str, Any] = {"rss_before": _peak_rss_bytes()}
    torch_used = method not in ("lowrank", "bm4d")
    if torch_used:
        import torch

        from hsidenoise.device import configure_threads

        result["threads"] = configure_threads(spec.get("threads"))
        result["torch"] = torch.__version__
    evaluations = None
    if method in ("lite", "lite-naive", "paper", "subspace"):  # subspace: shipped weights, --subspace-weights or preset
        from hsidenoise.denoise import denoise_array
        from hsidenoise.tiling import TileConfig

        torch.manual_seed(0)  # an untrained preset is the same network in every child
        started = time.perf_counter()
        weights = {"paper": "paper", "subspace": spec["subspace_weights"]}.get(method, spec["weights"])
        denoiser = quality.build_decsc(weights, device=spec["device"], solver=spec.get("solver") or None)
        inference = {k: v for k, v in (spec.get("inference") or {}).items() if v is not None}
        if method == "lite-naive":
            inference["naive"] = True
        if hasattr(denoiser, "config"):  # band-window models: the tool's inference defaults, then overrides
            denoiser.config = dataclasses.replace(denoiser.config, **inference)
        result["build_seconds"] = time.perf_counter() - started
        result["device"] = str(denoiser.device)
        if denoiser.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(denoiser.device)
        started, cpu = time.perf_counter(), _cpu_seconds()
        output = denoise_array(noisy, denoiser, TileConfig(tile=spec["tile"]), batch_size=spec["batch_size"])
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - started, _cpu_seconds() - cpu
        info = denoiser.info()
        evaluations = info["evaluations_per_tile"]
        result["tiles"] = info["tiles"]
        result["inference"] = info.get("inference")
        if denoiser.device.type == "cuda":
            result["cuda_peak"] = int(torch.cuda.max_memory_allocated(denoiser.device))
            result["device_name"] = torch.cuda.get_device_name(denoiser.device)
    elif method in ("lowrank", "lowrank-dct"):
        from hsidenoise.denoise import denoise_array
        from hsidenoise.methods import build_method
        from hsidenoise.tiling import TileConfig

        denoiser = build_method("lowrank", spatial="dct" if method == "lowrank-dct" else "auto")
        started, cpu = time.perf_counter(), _cpu_seconds()
        output = denoise_array(noisy, denoiser, TileConfig(tile=spec["tile"]), batch_size=spec["batch_size"])
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - started, _cpu_seconds() - cpu
    elif method in ("bm4d", "fasthyde"):
        run = quality.run_bm4d if method == "bm4d" else quality.run_fasthyde
        started, cpu = time.perf_counter(), _cpu_seconds()
        try:
            output = run(noisy, SimpleNamespace(sigma=sigma))
        except quality.Skipped as reason:
            return {**result, "skipped": str(reason)}
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - started, _cpu_seconds() - cpu
    else:
        raise SystemExit(f"unknown method {method!r}")
    result["peak_rss"] = _peak_rss_bytes()
    result["evaluations_per_tile"] = evaluations
    np.save(spec["output"], np.asarray(output, dtype=np.float32))
    return result


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``measure(spec)`` in a fresh interpreter; a timeout or a crash becomes a row note, not an exception."""
    spec_path = Path(spec["output"]).with_suffix(".spec.json")
    result_path = Path(spec["output"]).with_suffix(".result.json")
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(spec_path), "--result", str(result_path)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if completed.returncode != 0 or not result_path.is_file():
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {completed.returncode}: {tail[0][:200]}"}
    return json.loads(result_path.read_text())


# ---------------------------------------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------------------------------------


def score(row: dict[str, Any], output: Path, clean: np.ndarray) -> None:
    from hsidenoise.quality.metrics import mpsnr

    if output.is_file():
        row["mpsnr"] = mpsnr(np.load(output), clean)


def run_bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cubes = ["256x256x31"] if args.quick else list(args.cubes)
    methods = list(args.methods or (QUICK_METHODS if args.quick else METHODS))
    needed = set(cubes) | ({"256x256x31"} if args.sweep else set())
    folders = make_cubes([name for name in CUBES if name in needed], workdir, args.crop)
    weights = args.weights or "paper"  # the band-window rows: --weights, else the untrained paper network (lite was retired)
    subspace = args.subspace_weights or quality.shipped("decsc-subspace") or "subspace"
    base = {
        "weights": str(weights),
        "subspace_weights": str(subspace),
        "device": args.device,
        "tile": args.tile,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "inference": {"window_batch": args.window_batch},
    }
    from hsidenoise.device import select_device

    on_cuda = select_device(args.device).type == "cuda"
    rows: list[dict[str, Any]] = []

    def measure_row(section: str, cube: str, label: str, spec: dict[str, Any]) -> dict[str, Any]:
        output = workdir / f"{section}-{cube}-{len(rows)}.npy"
        spec = {**base, **spec, "cube": str(folders[cube]), "output": str(output)}
        shape = tuple(int(v) for v in np.load(folders[cube] / "noisy.npy", mmap_mode="r").shape)
        row: dict[str, Any] = {"section": section, "cube": cube, "shape": shape, "method": label}
        print(f"  {section:8s} {cube:12s} {label:40s} ...", end="", flush=True)
        row.update(run_child(spec, args.timeout))
        clean = np.load(folders[cube] / "clean.npy")
        score(row, output, clean)
        row["output"] = str(output) if output.is_file() else None
        if "seconds" in row:
            row["voxels_per_s"] = float(np.prod(shape)) / row["seconds"]
        print(" " + _status(row), flush=True)
        rows.append(row)
        return row

    for cube in cubes:
        outputs: dict[str, Path] = {}
        for method in methods:
            if method == "paper" and not (on_cuda or args.paper):
                rows.append(
                    {"section": "main", "cube": cube, "method": method,
                     "skipped": "paper preset not run on CPU (49 shifted copies per window; pass --paper to time it)"}
                )
                continue
            spec: dict[str, Any] = {"method": method}
            if method == "lite-naive":
                spec["batch_size"] = 1
            row = measure_row("main", cube, method, spec)
            if row.get("output"):
                outputs[method] = Path(row["output"])
        if "lite" in outputs and "lite-naive" in outputs:
            difference = float(np.max(np.abs(np.load(outputs["lite"]) - np.load(outputs["lite-naive"]))))
            for row in rows:
                if row["section"] == "main" and row["cube"] == cube and row["method"] == "lite":
                    row["max_abs_diff_vs_naive"] = difference
        for path in outputs.values():
            path.unlink(missing_ok=True)
    if args.ablation:
        reference = None
        cube = "256x256x31" if args.quick else "512x512x31"
        if cube not in folders:
            folders.update(make_cubes([cube], workdir, args.crop))
        for label, (inference, batch_size, threads) in ABLATION.items():
            spec = {"method": "lite", "inference": {**base["inference"], **inference}, "tile": args.ablation_tile}
            if batch_size is not None:
                spec["batch_size"] = batch_size
            if threads is not None:
                spec["threads"] = threads
            row = measure_row("ablation", cube, label, spec)
            if label == "optimised":
                reference = np.load(row["output"]) if row.get("output") else None
            elif row.get("output") and reference is not None:
                row["max_abs_diff_vs_optimised"] = float(np.max(np.abs(np.load(row["output"]) - reference)))
            if row.get("output") and label != "optimised":
                Path(row["output"]).unlink()
    if args.sweep:
        for iterations in SWEEP_ITERATIONS:
            measure_row("sweep", "256x256x31", f"lite max_iter={iterations}",
                        {"method": "lite", "solver": {"max_iter": iterations}})
    for row in rows:
        if row.get("output"):
            Path(row["output"]).unlink(missing_ok=True)
        row.pop("output", None)
    if args.weights or quality.default_weights():
        described = quality.describe_weights(args.weights)
    else:
        described = quality.describe_weights("lite") + "; no weights/decsc-lite.safetensors yet"
    return {"rows": rows, "weights": described}


def _status(row: dict[str, Any]) -> str:
    if "seconds" in row:
        text = f"{row['seconds']:.2f} s"
        if row.get("mpsnr") is not None:
            text += f", {row['mpsnr']:.2f} dB"
        return text
    return row.get("skipped") or row.get("error") or f"timed out after {row.get('timeout', 0):.0f} s"


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:.0f}"


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _sci(value: float | None) -> str:
    return "—" if value is None else f"{value:.2e}"


def _seconds(row: dict[str, Any]) -> str:
    if "seconds" in row:
        return f"{row['seconds']:.2f}"
    if "timeout" in row:
        return f"> {row['timeout']:.0f} (timed out)"
    return "—"


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cube: naive / optimised time, max |difference|, and BM4D / FastHyDe time over ``lite``'s."""
    found = []
    for cube in dict.fromkeys(row["cube"] for row in rows if row["section"] == "main"):
        by_method = {row["method"]: row for row in rows if row["section"] == "main" and row["cube"] == cube}
        lite = by_method.get("lite", {})
        if "seconds" not in lite:
            continue
        entry: dict[str, Any] = {"cube": cube, "max_abs_diff_vs_naive": lite.get("max_abs_diff_vs_naive")}
        for other in ("lite-naive", "bm4d", "fasthyde", "lowrank"):
            row = by_method.get(other, {})
            if "seconds" in row:
                entry[f"{other}_over_lite"] = row["seconds"] / lite["seconds"]
            elif "timeout" in row:
                entry[f"{other}_over_lite"] = f"> {row['timeout'] / lite['seconds']:.1f}"
        found.append(entry)
    return found


def markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    settings = report["environment"]["args"]
    threads = next((row["threads"] for row in rows if row["method"] == "lite" and "threads" in row), None)
    lines = [
        f"DECSC weights: {report['weights']}",
        f"`lite`: tile {settings['tile']}, {settings['batch_size']} tiles per call, {settings['window_batch']} windows "
        f"per model call, {threads} threads; seconds are wall-clock, CPU seconds summed over threads",
        "",
    ]
    if settings.get("crop"):
        lines[-1:-1] = [f"Every cube centre-cropped to {settings['crop']} x {settings['crop']} pixels (--crop)."]
    lines += [
        "| cube | method | seconds | CPU seconds | voxels/s | evaluations / tile | peak RSS (MiB) | CUDA peak (MiB) "
        "| MPSNR (dB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes = []
    for row in (r for r in rows if r["section"] == "main"):
        if "skipped" in row or "error" in row:
            notes.append(f"- {row['cube']} {row['method']}: {row.get('skipped') or row.get('error')}")
        lines.append(
            f"| {row['cube']} | {row['method']} | {_seconds(row)} | {_num(row.get('cpu_seconds'), 2)} | "
            f"{_num(row.get('voxels_per_s'), 0)} | "
            f"{_num(row.get('evaluations_per_tile'), 2)} | {_mib(row.get('peak_rss'))} | "
            f"{_mib(row.get('cuda_peak'))} | {_num(row.get('mpsnr'), 2)} |"
        )
    lines += ["", "Ratios (time of the other method / time of `lite`; above 1: `lite` is faster):", ""]
    lines += ["| cube | naive / lite | max abs diff lite vs naive | BM4D / lite | FastHyDe / lite | lowrank / lite |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for entry in report["ratios"]:
        cells = [
            entry.get(key) if isinstance(entry.get(key), str) else _num(entry.get(key), 2)
            for key in ("lite-naive_over_lite", "bm4d_over_lite", "fasthyde_over_lite", "lowrank_over_lite")
        ]
        lines.append(
            f"| {entry['cube']} | {cells[0]} | {_sci(entry.get('max_abs_diff_vs_naive'))} | {cells[1]} | {cells[2]} | "
            f"{cells[3]} |"
        )
    ablation = [row for row in rows if row["section"] == "ablation"]
    if ablation:
        reference = next((row.get("seconds") for row in ablation if row["method"] == "optimised"), None)
        lines += [
            "",
            f"Ablation on {ablation[0]['cube']}, tile {settings['ablation_tile']} (`lite`, one thing changed; "
            "time / optimised time):",
            "",
        ]
        reference_cpu = next((row.get("cpu_seconds") for row in ablation if row["method"] == "optimised"), None)
        lines += ["| variant | seconds | x optimised | CPU seconds | x optimised (CPU) | evaluations / tile | "
                  "peak RSS (MiB) | MPSNR (dB) | max abs diff vs optimised |"]
        lines += ["| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in ablation:
            factor = row["seconds"] / reference if reference and "seconds" in row else None
            cpu = row.get("cpu_seconds")
            cpu_factor = cpu / reference_cpu if reference_cpu and cpu is not None else None
            lines.append(
                f"| {row['method']} | {_seconds(row)} | {_num(factor, 2)} | {_num(cpu, 2)} | {_num(cpu_factor, 2)} | "
                f"{_num(row.get('evaluations_per_tile'), 2)} | {_mib(row.get('peak_rss'))} | "
                f"{_num(row.get('mpsnr'), 2)} | {_sci(row.get('max_abs_diff_vs_optimised'))} |"
            )
    sweep = [row for row in rows if row["section"] == "sweep"]
    if sweep:
        lines += ["", "PSNR vs solver evaluations (`lite`, 256x256x31):", ""]
        lines += ["| max_iter | evaluations / tile | seconds | CPU seconds | MPSNR (dB) |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for row in sweep:
            lines.append(
                f"| {row['method'].split('=')[-1]} | {_num(row.get('evaluations_per_tile'), 2)} | {_seconds(row)} | "
                f"{_num(row.get('cpu_seconds'), 2)} | {_num(row.get('mpsnr'), 3)} |"
            )
    lines += [""] + notes
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "args": {key: value for key, value in vars(args).items() if key not in ("one", "result")},
        "seed": SEED,
        "noise": {"recipe": "noniid", "sigma_max": SIGMA_MAX},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cubes", nargs="+", default=list(CUBES), choices=list(CUBES), help="cubes to time")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="methods, in this order (default: all)")
    parser.add_argument(
        "--subspace-weights", help="subspace: weights or checkpoint (default: weights/decsc-subspace, else the preset)"
    )
    parser.add_argument("--quick", action="store_true", help=f"256x256x31 only, methods {', '.join(QUICK_METHODS)}")
    parser.add_argument("--crop", type=int, help="centre-crop every cube to CROP x CROP pixels (smoke runs)")
    parser.add_argument(
        "--weights", help="DECSC weights (.safetensors), preset name or training checkpoint .pt "
        "(default: weights/decsc-lite.safetensors if present, else the untrained lite preset)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (hsidenoise methods; default auto)")
    parser.add_argument("--paper", action="store_true", help="also time the paper preset on CPU")
    parser.add_argument("--tile", type=int, default=256, help="spatial tile side (default 256, the tool's)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per call for `lite` (default 4)")
    parser.add_argument(
        "--window-batch", type=int, default=None, help="band windows per model call (default: the tool's, 1 on CPU)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: the cores this process may use)")
    parser.add_argument(
        "--ablation-tile", type=int, help="tile side in the ablation (default: --tile; 128 with --quick, 9 tiles)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement (default 1800)")
    parser.add_argument("--no-ablation", dest="ablation", action="store_false", help="skip the ablation")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip PSNR vs evaluations")
    parser.add_argument("--workdir", type=Path, help="where cubes and outputs go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:
        import warnings

        warnings.simplefilter("ignore")
        result = measure(json.loads(args.one.read_text()))
        args.result.write_text(json.dumps(result))
        return 0

    if args.ablation_tile is None:
        args.ablation_tile = 128 if args.quick else args.tile
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hsidenoise-speed-", dir=args.workdir) as folder:
        report = run_bench(args, Path(folder))
    report["environment"] = environment(args)
    report["ratios"] = ratios(report["rows"])
    report["wall_seconds"] = time.perf_counter() - started
    print()
    print(markdown(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
