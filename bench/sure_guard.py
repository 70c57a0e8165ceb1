"""Could a per-component SURE guard keep DECSC from losing to its front end? (issue 17; weights/README.md)

For each case of ``bench/quality.py`` (whole cube as one tile): z = ``project`` of the noisy cube, C = the clean
cube on the same whitening and basis, FE = the shipped DCT-CSC with its gate shut (the front end), x* = the shipped
model; the divergence of x* - FE by one Rademacher probe (finite difference, float64). Prints the MPSNR change
over FE (band space, peak 1; worst band) of x*, of the oracle per-component choice by the true eigen-image error,
of the choice by SURE's estimate of that error, and of the SURE-optimal blend FE + t (x* - FE), t in [0, 1]; then
per component the true and the SURE-estimated error difference (per pixel) and t.

Usage: ``.venv/bin/python bench/sure_guard.py [SEED_INDEX ...]`` (default 0 1). Needs ``../shared/data``.
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.quality import DEFAULT_CUBES, NOISES, SEED, load_clean
from hsidenoise.noise import add_noise
from hsidenoise.statistics import neighbour_pairs
from hsidenoise.subspace import LowRankConfig, fit_lowrank, project, sample_pixels
from hsidenoise.subspace.projection import back_project
from hsidenoise.model.weights import load_weights, find_default_weights
EPS = 1e-3
"""Finite-difference step of the divergence probe (unit noise in whitened units)."""


def forward(model: torch.nn.Module, z: np.ndarray, eigenvalues: np.ndarray, gate_on: bool) -> np.ndarray:
    """The model on (k, h, w) eigen-images; with the gate shut it is the front end."""
    gate = model.gate.data.clone()
    if not gate_on:
        model.gate.data.fill_(-1.0)
    with torch.no_grad():
        out, _ = model(torch.tensor(z)[None], None, torch.tensor(eigenvalues)[None],
                       noise=torch.ones(1, z.shape[0], dtype=torch.float64))
    model.gate.data.copy_(gate)
    return out[0].numpy()


def mpsnr(x: np.ndarray, clean: np.ndarray) -> tuple[float, np.ndarray]:
    mse = ((x - clean) ** 2).reshape(x.shape[0], -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / mse))), 10 * np.log10(1.0 / mse)


def main(seeds: list[int]) -> None:
    torch.set_num_threads(1)
    model = load_weights(find_default_weights())[0].double().eval()
    config = LowRankConfig(spatial="dct")
    for s in seeds:
        for index, name in enumerate(DEFAULT_CUBES):
            clean = np.asarray(load_clean(name, quick=False), dtype=np.float64)
            bands = clean.shape[0]
            for ni, noise in enumerate(("noniid", "mixture")):
                seed = SEED + 1000 * s + 100 * index + ni
                noisy = add_noise(clean, NOISES[noise], np.random.default_rng(seed)).noisy
                sub = fit_lowrank(sample_pixels(noisy, config.sample_size, config.seed), config,
                                  neighbour_pairs(noisy, seed=1))
                Z, _ = project(noisy, sub, config)
                C = (sub.basis.T @ ((clean.reshape(bands, -1) - sub.mean[:, None]) / sub.sigma[:, None])).reshape(Z.shape)
                k, n = Z.shape[0], Z[0].size
                ev = sub.eigenvalues[:k]
                probe = np.random.default_rng(7).choice([-1.0, 1.0], size=Z.shape)
                X, FE = forward(model, Z, ev, True), forward(model, Z, ev, False)
                Xp, FEp = forward(model, Z + EPS * probe, ev, True), forward(model, Z + EPS * probe, ev, False)
                d = X - FE
                div_d = (((Xp - FEp) - d) * probe).reshape(k, -1).sum(1) / EPS
                dd = (d**2).reshape(k, -1).sum(1)
                cross = (d * (FE - Z)).reshape(k, -1).sum(1)
                sure_diff = dd + 2 * cross + 2 * div_d  # SURE(x*) - SURE(FE), sigma = 1
                true_diff = ((X - C) ** 2).reshape(k, -1).sum(1) - ((FE - C) ** 2).reshape(k, -1).sum(1)
                t = np.clip(-(cross + div_d) / np.maximum(dd, 1e-12), 0.0, 1.0)
                outs = {
                    "FE": FE,
                    "x*": X,
                    "oracle": np.where((true_diff < 0)[:, None, None], X, FE),
                    "sure": np.where((sure_diff < 0)[:, None, None], X, FE),
                    "blend": FE + t[:, None, None] * d,
                }
                res = {key: mpsnr(back_project(v, sub), clean) for key, v in outs.items()}
                base = res["FE"]
                line = " ".join(
                    f"{key} {res[key][0] - base[0]:+.3f} (worst band {np.min(res[key][1] - base[1]):+.2f})"
                    for key in outs if key != "FE"
                )
                print(f"{name.split('/')[-1][:10]} {noise[:5]} s{s} k={k} FE {base[0]:.2f} | {line}")
                print("    per comp true diff/n", np.round(true_diff / n, 4), "sure diff/n", np.round(sure_diff / n, 4),
                      "t", np.round(t, 2))
                sys.stdout.flush()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [0, 1])
