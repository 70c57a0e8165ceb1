"""Small model configs for tests: the noise-aware band-window network of the retired ``lite`` preset.

The preset and its weights were retired (CHANGELOG, Unreleased); the band-window code keeps its noise-aware mode
(``DECSCConfig(noise_aware=True)``), which these tests exercise with the same small architecture.
"""

from __future__ import annotations

from hsidenoise.model.decsc import DECSCConfig
from hsidenoise.model.solver import SolverConfig

NOISE_AWARE = DECSCConfig(
    gic_atoms=32,
    gic_kernel=9,
    gic_stride=4,
    lsu_atoms=8,
    lsu_kernel=7,
    lsu_stride=4,
    shifts=1,
    prior="conv",
    prior_depth=1,
    prior_width=32,
    noise_aware=True,
    threshold_init=2.5,  # in whitened units the noise has std 1: start by passing only > 2.5 sigma structure
    synthesis_init=0.05,  # start near the front end's estimate (a near-zero correction)
    solver=SolverConfig(max_iter=6, phantom_steps=2),
)
"""Noise-aware, 31-band windows: GIC 32 atoms 9x9 and LSU 8 atoms 3x7x7 at stride 4, one residual conv block as
Net1, 6 Anderson evaluations + 2 phantom steps: 0.27 M parameters."""
