"""DCT-CSC: the front end's two-stage sliding DCT as a convolutional sparse coding layer, and an equilibrium
around it (the ``dctcsc`` presets).

The front end's eigen-image denoiser (:func:`hsidenoise.subspace.eigenimages.dct_denoise_stack`) is a
convolutional sparse coding layer in CSCNet's layout: its dictionary is the 64 atoms of the 8 x 8 DCT as one
8 x 8 convolution with 64 output channels, stride 1 (the sliding window); analysis is that convolution, synthesis
its transposed convolution with BM3D's aggregation weights, divided by the box sum of the weights. Per
component i with noise level sigma_i (an input: the pipeline's ``noise``, one per eigen-image, FFDNet-style):

1. stage 1 (the pilot): Y = A z; keep |Y| > ``threshold`` sigma_i (and the DC); weights 1 / kept;
   pilot = S(w1 keep Y) / box(w1);
2. stage 2 (the front end's output): P = A pilot; Wiener factors F = P^2 / (P^2 + (omega sigma_i)^2);
   weights w2 = 1 / sum F^2; FE = S(w2 F Y) / box(w2), with omega = exp(a_f + b_f log sigma_i + c_f l_i)
   per frequency f (l_i = log10(lambda_i) / 2, the component's SNR level), so thresholds stay proportional to
   each component's measured noise, modulated by learned functions of its level and its eigenvalue;
3. optional cross-component coupling (``coupling``, GIC-like shared codes): a structure map shared by all
   components of a sample, G = sum_j pi_j (P_j / s_j)^2 (s_j the component's signal scale, pi learned slot
   weights), adds kappa_f s_i^2 G to the pilot power of every component, so that high-SNR components tell the
   weak ones where structure is; kappa starts at 0;
4. the equilibrium: x = f(x) = (1 - alpha) FE + alpha D Soft_theta(D^T ((1 - mu) x + mu z)), with a learned
   tied dictionary D (64 atoms 8 x 8, stride 1): an orthogonal mix Q = exp(P - P^T) of the DCT atoms, i.e. any
   orthonormal basis of 8 x 8 blocks, divided by its operator norm (computed from the filters' spectrum). It is
   a tight frame, D D^T = I, whatever training does: a dictionary that is not (free filters) loses a few per cent
   of every coefficient, which on the strongest eigen-images (std ~80) costs more than all the noise it removes
   (measured: MSE 1.06 -> 246 on a HYDICE component). Thresholds
   theta_i,f = sigma_i softplus(rho_f + g_f l_i) ||D_f||, mu in [0, 1] and alpha in [0, ``gate_max``]. The
   soft threshold is nonexpansive and ||D|| <= 1, so f is a contraction
   with constant alpha (1 - mu) <= ``gate_max`` < 1 *by construction*: the fixed point exists, is unique, and
   Anderson reaches it from the warm start x0 = FE (the front end's output). Gradients: JFB / the phantom
   gradient of :class:`hsidenoise.model.deq.DEQ` (one undamped step by default).

At initialisation A and S are the DCT, omega = 1, kappa = 0 and alpha = 0: f is the constant FE, its fixed point
is the front end's output exactly (up to float rounding), reached at the first evaluation. Training moves alpha,
the filters, the Wiener and threshold functions away from there.

Shapes: eigen-images (N, k, H, W) in whitened units; eigenvalues, noise, mask (N, k). Images smaller than 8
pixels are padded symmetrically at the bottom and right, as the front end does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.model.deq import DEQ
from hsidenoise.model.gic import soft_threshold
from hsidenoise.model.solver import SolverConfig, SolverStats, config_with_solver

KIND = "dctcsc"
"""The ``kind`` tag of this family's configs."""
BLOCK = 8
"""Atom side (the front end's DCT block)."""
ATOMS = BLOCK * BLOCK
GROUP_BYTES = 64 << 20
"""Bytes of one code tensor (images, 64, H - 7, W - 7) per group of eigen-images (float32); a tile's components go
through in groups of at most this much, so the working set does not grow with the rank."""
NORM_GRID = 64
"""FFT grid side on which the operator norm of an 8 x 8 filter bank is taken (its frequency response maximum)."""


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


def dct_atoms(dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """(64, 1, 8, 8) atoms of the orthonormal 8 x 8 DCT-II; atom (u, v) = outer(D[u], D[v]).

    ``F.conv2d(image, atoms)`` is the block DCT of every stride-1 block (coefficient u * 8 + v), as the front end's
    ``_block_dct``; ``F.conv_transpose2d`` puts the inverse blocks back at their places.
    """
    position = torch.arange(BLOCK, dtype=torch.float64, device=device)
    matrix = math.sqrt(2.0 / BLOCK) * torch.cos(math.pi * (2 * position[None] + 1) * position[:, None] / (2 * BLOCK))
    matrix[0] /= math.sqrt(2.0)
    return torch.einsum("ua,vb->uvab", matrix, matrix).reshape(ATOMS, 1, BLOCK, BLOCK).to(dtype)


def operator_norm(weight: Tensor) -> Tensor:
    """||conv2d(., weight)|| on the plane for a (64, 1, 8, 8) bank: sqrt(max_omega sum_f |W_f(omega)|^2).

    Evaluated on a :data:`NORM_GRID` frequency grid (8 for the DCT atoms, a tight frame).
    """
    spectrum = torch.fft.rfft2(weight[:, 0], s=(NORM_GRID, NORM_GRID))
    return spectrum.abs().square().sum(dim=0).max().sqrt()


def clamp_through(value: Tensor, low: float, high: float | None = None) -> Tensor:
    """``value`` clamped to [low, high] in the forward pass, its gradient passed through unchanged.

    A knob that starts at its bound (alpha = 0, kappa = 0: the front end exactly) is never stuck there: a plain
    clamp has no gradient once Adam pushed it past the bound.
    """
    return value + (value.clamp(low, high) - value).detach()


def synthesise(codes: Tensor, atoms: Tensor, padding: int = 0) -> Tensor:
    """``F.conv_transpose2d(codes, atoms, padding=padding)``: each block's atoms weighted by its codes, put back.

    One (64 x 64) matrix product gives every block's pixels, then 64 shifted additions put them at their
    places (the front end's ``_aggregate``); on the CPU this is about three times faster than the transposed
    convolution, and it keeps autograd.

    Shapes: codes (n, 64, h, w), atoms (64, 1, 8, 8) -> (n, 1, h + 7 - 2 padding, w + 7 - 2 padding).
    """
    n, atoms_count, rows, cols = codes.shape
    pixels = torch.matmul(atoms.flatten(1).T, codes.reshape(n, atoms_count, rows * cols)).view(n, -1, rows, cols)
    total = codes.new_zeros(n, rows + BLOCK - 1, cols + BLOCK - 1)
    for a in range(BLOCK):
        for b in range(BLOCK):
            total[:, a : a + rows, b : b + cols] += pixels[:, a * BLOCK + b]
    if padding:
        total = total[:, padding : total.shape[1] - padding, padding : total.shape[2] - padding]
    return total[:, None]


def box_sum(weights: Tensor) -> Tensor:
    """``F.conv_transpose2d(weights, ones(1, 1, 8, 8))``: each output pixel's sum over the blocks that cover it.

    Eight shifted additions along each axis instead of 64 multiply-adds per pixel (about ten times faster on the
    CPU); each output is a sum of the same 64 terms, so it rounds as the convolution does.

    Shapes: (n, 1, h, w) -> (n, 1, h + 7, w + 7).
    """
    padded = F.pad(weights, (BLOCK - 1, BLOCK - 1, BLOCK - 1, BLOCK - 1))
    rows = padded.shape[-2] - BLOCK + 1
    down = padded[..., :rows, :].clone()
    for a in range(1, BLOCK):
        down += padded[..., a : a + rows, :]
    cols = padded.shape[-1] - BLOCK + 1
    total = down[..., :cols].clone()
    for b in range(1, BLOCK):
        total += down[..., b : b + cols]
    return total


def _tracks_gradient(*tensors: Tensor) -> bool:
    """Whether autograd records an operation on ``tensors`` (else the solve's arithmetic may work in place)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _wiener_removed(noisy: Tensor, power: Tensor, noise_power: Tensor) -> tuple[Tensor, Tensor]:
    """What the Wiener factors F = P / (P + N) take away, weighted for aggregation: ((1 - F) Y w, w), with the
    blocks' weights w = 1 / sum F^2.

    Without autograd the terms are computed in place (three code-sized temporaries fewer: about 2.6 times faster on
    the CPU, where allocating them costs as much as the arithmetic); with it, as plain expressions.

    Shapes: noisy Y, power P (n, 64, h, w); noise_power N broadcastable to them -> (n, 64, h, w), (n, 1, h, w).
    """
    if _tracks_gradient(noisy, power, noise_power):
        factor = power / (power + noise_power)
        weights = 1.0 / factor.square().sum(dim=1, keepdim=True).clamp_min(1e-12)
        return noise_power / (power + noise_power) * noisy * weights, weights
    inverse = (power + noise_power).reciprocal_()
    weights = (power * inverse).square_().sum(dim=1, keepdim=True).clamp_min_(1e-12).reciprocal_()
    return inverse.mul_(noise_power).mul_(noisy).mul_(weights), weights


def symmetric_pad(images: Tensor, size: int = BLOCK) -> Tensor:
    """Symmetric padding at the bottom and right until both sides are at least ``size`` (the front end's ``_pad_to``).

    Shapes: (n, H, W) -> (n, max(H, size), max(W, size)).
    """
    while images.shape[-2] < size or images.shape[-1] < size:
        rows = min(max(0, size - images.shape[-2]), images.shape[-2])
        cols = min(max(0, size - images.shape[-1]), images.shape[-1])
        if rows:
            images = torch.cat([images, images[..., -rows:, :].flip(-2)], dim=-2)
        if cols:
            images = torch.cat([images, images[..., -cols:].flip(-1)], dim=-1)
    return images


@dataclass(frozen=True)
class DCTCSCConfig:
    """Architecture and solver of a DCT-CSC.

    Attributes:
        max_components: component slots (the front end keeps at most this many; its ``max_rank``).
        threshold: stage 1's hard threshold in noise sigmas; must be the front end's ``dct_threshold`` for the
            untrained model to equal it.
        learn_filters: the analysis and synthesis filters of the two stages are learned (from the DCT). Off in
            the presets: Adam moves every filter entry by about the learning rate per step, which breaks the
            perfect reconstruction of the strong components (eigen-images of std up to ~100) long before it
            helps (-0.02 dB on the validation cubes after two steps at 1e-4).
        coupling: cross-component coupling through a shared structure map (off: each component alone).
        gate_max: the most the equilibrium's map may mix in (alpha <= gate_max < 1: its contraction constant).
        threshold_init: initial soft threshold of the equilibrium's codes, in noise sigmas per unit atom.
        mix_init: initial mu, the share of the noisy eigen-image in what the equilibrium's layer re-codes.
        solver: Anderson and phantom-gradient (JFB: one undamped step) settings.
    """

    max_components: int = 32
    threshold: float = 2.7
    learn_filters: bool = False
    coupling: bool = False
    gate_max: float = 0.5
    threshold_init: float = 1.5
    mix_init: float = 0.5
    solver: SolverConfig = field(
        default_factory=lambda: SolverConfig(max_iter=30, tol=1e-3, phantom_steps=1, phantom_damping=1.0)
    )
    kind: str = KIND

    def __post_init__(self) -> None:
        if self.max_components < 1:
            raise ConfigError(f"DCT-CSC needs max_components >= 1; got {self.max_components}")
        if not (self.threshold > 0 and self.threshold_init > 0):
            raise ConfigError(f"threshold and threshold_init must be > 0; got {self.threshold}, {self.threshold_init}")
        if not 0 < self.gate_max < 1:
            raise ConfigError(f"gate_max must be in (0, 1) for a contraction; got {self.gate_max}")
        if not 0 <= self.mix_init <= 1:
            raise ConfigError(f"mix_init must be in [0, 1]; got {self.mix_init}")
        if self.kind != KIND:
            raise ConfigError(f"a DCTCSCConfig has kind {KIND!r}; got {self.kind!r}")

    @property
    def noise_aware(self) -> bool:
        return True

    @property
    def prior(self) -> str:
        """What ``hsidenoise models`` shows as the prior: the sparse prior of the DCT codes."""
        return "dct"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DCTCSCConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_with_solver(cls, data, "DCT-CSC")


class DCTCSC(nn.Module):
    """The front end's DCT denoiser as a CSC layer, and the equilibrium around it (see the module docstring).

    ``owns_front_end``: the model computes the front end's DCT itself (the pipeline passes no pilot).

    Example:
        >>> model = DCTCSC(DCTCSCConfig()).eval()
        >>> eigen = torch.randn(1, 3, 16, 16)
        >>> with torch.inference_mode():
        ...     out, stats = model(eigen, None, torch.tensor([[90.0, 9, 3]]), noise=torch.tensor([[1.0, 0.8, 0.6]]))
        >>> out.shape, bool(stats.converged.all())
        (torch.Size([1, 3, 16, 16]), True)
    """

    owns_front_end = True

    def __init__(self, config: DCTCSCConfig) -> None:
        super().__init__()
        self.config = config
        # learned filters are the DCT atoms (computed in the working precision) plus a learned difference
        zeros = torch.zeros(ATOMS, 1, BLOCK, BLOCK)
        self.analysis_delta = nn.Parameter(zeros.clone(), requires_grad=config.learn_filters)
        self.synthesis_delta = nn.Parameter(zeros.clone(), requires_grad=config.learn_filters)
        # Wiener noise factor omega = exp(a + b log sigma + c l), per frequency: 1 at the start
        self.wiener = nn.Parameter(torch.zeros(3, ATOMS))
        # the equilibrium's layer
        # tied: analysis = synthesis = D = Q DCT, Q = exp(P - P^T) orthogonal: a tight frame (D D^T = I) always
        self.dictionary_rotation = nn.Parameter(torch.zeros(ATOMS, ATOMS))
        self.rho = nn.Parameter(torch.full((ATOMS,), _inverse_softplus(config.threshold_init)))
        self.snr_gain = nn.Parameter(torch.zeros(ATOMS))
        self.mix = nn.Parameter(torch.tensor(float(config.mix_init)))
        self.gate = nn.Parameter(torch.zeros(()))  # alpha = clamp(gate, 0, gate_max): 0, the front end, at the start
        if config.coupling:
            self.coupling = nn.Parameter(torch.zeros(ATOMS))  # kappa_f = clamp(., min=0)
            self.slots = nn.Parameter(torch.zeros(config.max_components))  # pi = softmax over the real components
        self.deq = DEQ(config.solver, phantom_at_eval=False)

    # -- the CSC operators ---------------------------------------------------------------------------------

    def _bank(self, delta: Tensor) -> Tensor:
        """DCT atoms + ``delta``, (64, 1, 8, 8) in the parameters' precision."""
        return dct_atoms(delta.dtype, delta.device) + delta

    def _analyse(self, images: Tensor, weight: Tensor | None = None) -> Tensor:
        """(n, 1, H, W) -> (n, 64, H - 7, W - 7): the coefficients of every stride-1 block (learned analysis)."""
        return F.conv2d(images, self._bank(self.analysis_delta) if weight is None else weight)

    def _aggregate(self, coded: Tensor, weights: Tensor) -> Tensor:
        """sum_blocks w S(c) / box(w): coded (n, 64, h, w) already multiplied by weights (n, 1, h, w) -> (n, 1, H, W)."""
        total = synthesise(coded, self._bank(self.synthesis_delta))
        return total / box_sum(weights)

    def _front_end(
        self,
        images: Tensor,
        sigma: Tensor,
        level: Tensor,
        shared: Tensor | None,
        scale: Tensor,
        pilot: Tensor | None = None,
        codes: tuple[Tensor, Tensor] | None = None,
        anchor: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """The two stages on (n, 1, H, W) images with noise sigma (n,), SNR level (n,).

        ``shared``: (n, 64, h, w) structure map of each image's sample (coupling), or None. ``pilot``: stage 1's
        (n, 1, H, W) output when it is already known (the coupling computed it), or None. ``codes``: the images'
        codes Y and the pilot's squared codes, both (n, 64, h, w), when already known (the coupling's pass kept
        them), or None.

        Returns:
            FE and the departure z - FE, both (n, 1, H, W). With the DCT's perfect reconstruction
            (z = S(w2 Y) / box(w2)) the departure is aggregated from the part the Wiener factors take away,
            (1 - F) Y, so it keeps its digits on the strongest eigen-images (float32: std up to ~2.5e5), and
            FE = z - departure. With ``anchor``, also the departure z - FE0 of the *untrained* second stage
            (omega = 1, no coupling: ``--method lowrank``'s DCT, :meth:`anchor_departure`).
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.learn_filters):
            if codes is not None:
                noisy, power = codes
            else:
                if pilot is None:  # no parameter to learn here with fixed filters
                    noisy, pilot = self._stage_one(images, sigma)
                else:
                    noisy = self._analyse(images)
                power = self._analyse(pilot).square()
        # learned filters have no DCT to anchor on: their anchor is the trained front end itself
        anchored = self.anchor_departure(noisy, power, sigma) if anchor and not self.config.learn_filters else None
        if shared is not None:
            kappa = clamp_through(self.coupling, 0.0)[None, :, None, None]
            power = power + kappa * scale.square()[:, None, None, None] * shared
        a, b, c = self.wiener
        log_omega = a[None] + b[None] * sigma.log()[:, None] + c[None] * level[:, None]  # (n, 64)
        noise_power = (sigma[:, None] * torch.exp(log_omega)).square()[:, :, None, None]
        if self.config.learn_filters:  # learned filters: no perfect reconstruction to lean on
            factor = power / (power + noise_power)
            weights = 1.0 / factor.square().sum(dim=1, keepdim=True).clamp_min(1e-12)
            front = self._aggregate(factor * noisy * weights, weights)
            departure = images - front
        else:
            departure = self._aggregate(*_wiener_removed(noisy, power, noise_power))
        if not anchor:
            return images - departure, departure
        return images - departure, departure, departure if anchored is None else anchored

    def anchor_departure(self, noisy: Tensor, power: Tensor, sigma: Tensor) -> Tensor:
        """z - FE0, FE0 the second stage with its initial settings (omega = 1, no coupling): the front end's DCT,
        what ``--method lowrank`` outputs, whatever training moved. Noise-sized, aggregated from (1 - F0) Y as the
        trained departure is.

        Args:
            noisy: (n, 64, h, w) the images' codes Y; power: (n, 64, h, w) the pilot's squared codes (no coupling
                term); sigma: (n,) noise levels.

        Returns:
            (n, 1, H, W).
        """
        return self._aggregate(*_wiener_removed(noisy, power, sigma.square()[:, None, None, None]))

    def _stage_one(self, images: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Stage 1 on (n, 1, H, W) images: their codes Y (n, 64, h, w) and the hard-threshold pilot (n, 1, H, W)."""
        noisy = self._analyse(images)
        keep = noisy.abs() > self.config.threshold * sigma[:, None, None, None]
        keep[:, 0] = True
        weights = 1.0 / keep.sum(dim=1, keepdim=True).to(noisy.dtype)
        return noisy, self._aggregate(torch.where(keep, noisy, 0.0) * weights, weights)

    def _layer_parts(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The equilibrium layer's normalised tied dictionary (as analysis and synthesis), alpha and mu."""
        rotation = torch.linalg.matrix_exp(self.dictionary_rotation - self.dictionary_rotation.T)
        atoms = dct_atoms(rotation.dtype, rotation.device).flatten(1)
        dictionary = (rotation @ atoms).view(ATOMS, 1, BLOCK, BLOCK)
        analysis = synthesis = dictionary / operator_norm(dictionary)  # 8 for every orthonormal 8 x 8 basis
        alpha = clamp_through(self.gate, 0.0, self.config.gate_max)
        return analysis, synthesis, alpha, clamp_through(self.mix, 0.0, 1.0)

    @property
    def contraction(self) -> float:
        """Upper bound of the equilibrium map's Lipschitz constant, alpha (1 - mu) (< 1 by construction)."""
        with torch.no_grad():
            analysis, synthesis, alpha, mu = self._layer_parts()
            return float(alpha * (1 - mu) * operator_norm(analysis) * operator_norm(synthesis))

    # -- forward -------------------------------------------------------------------------------------------

    def forward(
        self,
        eigen: Tensor,
        pilot: Tensor | None,
        eigenvalues: Tensor,
        mask: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, SolverStats]:
        """Denoise the eigen-images: the front end's two stages, then the equilibrium.

        Args:
            eigen: (N, k, H, W) noisy eigen-images, whitened units.
            pilot: unused (the model computes the front end itself); kept for the family's call signature.
            eigenvalues: (N, k) whitened eigenvalues (>= about 1).
            mask: (N, k) 1 for real components, 0 for padding (None: all real); padding comes back unchanged.
            noise: (N, k) noise standard deviation of each eigen-image (None: 1, the whitening's nominal level).

        Returns:
            denoised (N, k, H, W) and the solve's statistics, one sample per real component.
        """
        out, stats, _ = self._solve(eigen, eigenvalues, mask, noise)
        return out, stats

    @torch.no_grad()
    def solve_with_response(
        self, eigen: Tensor, eigenvalues: Tensor, noise: Tensor | None, perturbation: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, SolverStats]:
        """The front end, the model's change to it, and how the change responds to a small perturbation of the
        noisy eigen-images: what the band blend's Monte-Carlo divergence needs (:mod:`hsidenoise.subspace.band_blend`).

        The front end is FE0, the model's two stages with their *initial* settings (:meth:`anchor_departure`):
        ``--method lowrank``'s DCT, whatever training moved, so that a band that keeps none of the change is
        the front end's band exactly (the trained second stage, learned Wiener factors and coupling, is part of
        the change: measured on HYDICE mixture, it alone lowered single bands by up to 1.6 dB). FE0 comes back as
        its departure z - FE0 and the model's output as two changes, x* - FE0 = (FE - FE0) + (x* - FE): the trained
        second stage's and the equilibrium's, which the band blend weighs apart. All are noise-sized, so they keep
        their digits in float32 on the strongest eigen-images. The responses are the changes on z + perturbation
        minus the changes on z, the whole model run again on the perturbed eigen-images, stage 1's hard thresholds
        included (holding them fixed leaves out what the thresholds' jumps add to the divergence in expectation:
        measured, it underestimated the divergence 2-4-fold on the CAVE validation cube). The perturbed solve
        starts where the first did (d = 0) and takes the same path: started from d*(z) it would stop at once
        (its residual is below the tolerance) and return d*(z) itself.

        Args:
            eigen: (N, k, H, W) noisy eigen-images; eigenvalues, noise: (N, k), as :meth:`forward`.
            perturbation: (N, k, H, W), small against the noise (about a hundredth of it).

        Returns:
            z - FE0 (N, k, H, W); the changes FE - FE0 and x* - FE and their responses, each (2, N, k, H, W); the
            (first) solve's statistics.
        """
        _, stats, record = self._solve(eigen, eigenvalues, None, noise, record=True)
        dtype = record["corrections"].dtype
        _, _, moved = self._solve(eigen.to(dtype) + perturbation.to(dtype), eigenvalues, None, noise, record=True)
        height, width = eigen.shape[-2:]
        owner, slot = record["owner"], record["slot"]

        def full(values: Tensor) -> Tensor:
            """(..., m, 1, H', W') per real component -> (..., N, k, H, W)."""
            out = torch.zeros((*values.shape[:-4], *eigen.shape), dtype=dtype, device=eigen.device)
            out[..., owner, slot, :, :] = values[..., 0, :height, :width]
            return out

        changes = full(record["corrections"])
        return full(record["departures"]), changes, full(moved["corrections"]) - changes, stats

    def _solve(
        self,
        eigen: Tensor,
        eigenvalues: Tensor,
        mask: Tensor | None,
        noise: Tensor | None,
        *,
        record: bool = False,
    ) -> tuple[Tensor, SolverStats, dict[str, Tensor]]:
        """:meth:`forward`'s work; ``record``: also return, for the real components in order (``owner``,
        ``slot``), the anchor's departures z - FE0 (m, 1, H', W') and the two changes (2, m, 1, H', W'): the trained
        second stage's FE - FE0 and the equilibrium's d* = x* - FE, FE0 the untrained front end
        (:meth:`anchor_departure`)."""
        n, k, height, width = self._check(eigen, eigenvalues, mask, noise)
        dtype = self.analysis_delta.dtype
        keep = torch.ones(n, k, dtype=torch.bool, device=eigen.device) if mask is None else mask > 0
        sigma_all = torch.ones(n, k, dtype=dtype, device=eigen.device) if noise is None else noise.to(dtype)
        owner, slot = keep.nonzero(as_tuple=True)
        images = symmetric_pad(eigen.to(dtype)[owner, slot])  # (m, H', W')
        sigma = sigma_all[owner, slot].clamp_min(1e-6)
        lam = eigenvalues.to(dtype)[owner, slot].clamp_min(1.0)
        level = torch.log10(lam) / 2
        scale = (lam - sigma.square()).clamp_min(0).sqrt().maximum(sigma)  # the component's signal scale
        pixels = (images.shape[-2] - BLOCK + 1) * (images.shape[-1] - BLOCK + 1)
        group = max(1, GROUP_BYTES // (ATOMS * pixels * images.element_size()))
        shared, pilots, kept = (None, None, None)
        if self.config.coupling:
            shared, pilots, kept = self._shared_map(images, sigma, scale, owner, slot, n, group)
        outputs, stats, corrections, departures = [], [], [], []
        for first in range(0, images.shape[0], group):
            part = slice(first, first + group)
            z = images[part, None]
            fe, departure, *anchor = self._front_end(
                z, sigma[part], level[part], None if shared is None else shared[owner[part]], scale[part],
                None if pilots is None else pilots[part], kept, anchor=record,
            )
            result, solve, delta = self._equilibrium(fe, departure, sigma[part], level[part])
            outputs.append(result[:, 0])
            stats.append(solve)
            if record:  # FE - FE0 = (z - FE0) - (z - FE) and d* = x* - FE: noise-sized terms only
                corrections.append(torch.stack([anchor[0] - departure, delta]))
                departures.append(anchor[0])
        out = eigen.to(dtype).clone()
        out[owner, slot] = torch.cat(outputs)[:, :height, :width]
        extra = {}
        if record:
            extra = {"owner": owner, "slot": slot, "corrections": torch.cat(corrections, dim=1),
                     "departures": torch.cat(departures)}  # fmt: skip
        return out, _concatenate(stats), extra

    def _shared_map(
        self,
        images: Tensor,
        sigma: Tensor,
        scale: Tensor,
        owner: Tensor,
        slot: Tensor,
        samples: int,
        group: int,
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """G per sample from every component, in groups: (samples, 64, h, w); stage 1's pilots (m, 1, H, W); and,
        when every component fits in one group, their codes Y and the pilots' squared codes (m, 64, h, w) each,
        for the second stage to reuse (else None)."""
        total = images.new_zeros(samples, ATOMS, images.shape[-2] - BLOCK + 1, images.shape[-1] - BLOCK + 1)
        norm = images.new_zeros(samples)
        pilots = []
        kept = None
        for first in range(0, images.shape[0], group):
            part = slice(first, first + group)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.learn_filters):
                noisy, pilot = self._stage_one(images[part, None], sigma[part])
                power = self._analyse(pilot).square()
                codes = power / scale[part, None, None, None].square()
            pilots.append(pilot)
            kept = (noisy, power) if images.shape[0] <= group else None
            weight = torch.exp(self.slots[slot[part]] - self.slots.max()).to(codes.dtype)
            total = total.index_add(0, owner[part], codes * weight[:, None, None, None])
            norm = norm.index_add(0, owner[part], weight)
        return total / norm.clamp_min(1e-12)[:, None, None, None], torch.cat(pilots), kept

    def thresholds(self, sigma: Tensor, level: Tensor) -> Tensor:
        """theta (n, 64, 1, 1) of the equilibrium's codes for noise sigma (n,) and SNR level l (n,)."""
        analysis, _, _, _ = self._layer_parts()
        rho = self.rho[None] + self.snr_gain[None] * level[:, None]  # (n, 64)
        return (sigma[:, None] * F.softplus(rho) * analysis.flatten(1).norm(dim=1)[None])[:, :, None, None]

    def layer(self, x: Tensor, noisy: Tensor, front: Tensor, threshold: Tensor) -> Tensor:
        """f(x) = (1 - alpha) FE + alpha D Soft_theta(D^T ((1 - mu) x + mu z)): all (n, 1, H, W), theta (n, 64, 1, 1).

        Lipschitz in x with constant at most :attr:`contraction` < 1.
        """
        analysis, synthesis, alpha, mu = self._layer_parts()
        # every block that overlaps the image (zero padding 7): D D^T = I up to the image's edges (a valid-only
        # dictionary covers edge pixels by fewer than 64 blocks and would shrink them towards zero)
        codes = soft_threshold(F.conv2d((1 - mu) * x + mu * noisy, analysis, padding=BLOCK - 1), threshold)
        return (1 - alpha) * front + alpha * synthesise(codes, synthesis, padding=BLOCK - 1)

    def correction(self, delta: Tensor, departure: Tensor, front_codes: Tensor, threshold: Tensor) -> Tensor:
        """f(FE + d) - FE, the equilibrium map on the correction d = x - FE, computed without cancellation.

        Mathematically ``layer(FE + d, z, FE, theta) - FE``. Because D D^T = I (a tight frame on the zero-padded
        plane), FE = D C0 with C0 = D^T FE, and with the codes c = C0 + u, u = D^T((1 - mu) d + mu (z - FE)):

            f(FE + d) - FE = alpha D (Soft_theta(C0 + u) - C0) = alpha D (u - clamp(C0 + u, -theta, theta)),

        in which every term is noise-sized (Soft_theta(c) = c - clamp(c, -theta, theta)). Computing ``layer`` and then subtracting FE instead loses float32's
        digits on the strongest eigen-images (std up to ~2.5e5 on the Santa Barbara example: a rounding error of
        0.8 noise sigmas, and a solve stalled at a relative residual of 0.017).

        Args:
            delta: (n, 1, H, W) the correction d. departure: (n, 1, H, W) z - FE, the noisy eigen-image's departure
                from the front end. front_codes: (n, 64, H + 7, W + 7) C0 = D^T FE. threshold: (n, 64, 1, 1) theta.
        """
        analysis, synthesis, alpha, mu = self._layer_parts()
        update = F.conv2d((1 - mu) * delta + mu * departure, analysis, padding=BLOCK - 1)
        theta = threshold.abs()
        # Soft(c) = c - clamp(c, -theta, theta), so Soft(C0 + u) - C0 = u - clamp(C0 + u, -theta, theta)
        if _tracks_gradient(update, front_codes, theta):
            shrunk_minus_front = update - torch.clamp(front_codes + update, -theta, theta)
        else:  # the same operations, two code-sized temporaries fewer (the solve runs without autograd)
            shrunk_minus_front = update.sub_(torch.add(front_codes, update).clamp_(-theta, theta))
        return alpha * synthesise(shrunk_minus_front, synthesis, padding=BLOCK - 1)

    def _equilibrium(self, fe: Tensor, departure: Tensor, sigma: Tensor, level: Tensor) -> tuple[Tensor, SolverStats, Tensor]:
        """x* = f(x*) from x0 = FE (d0 = 0), by Anderson; JFB / phantom steps carry the gradient. fe, departure
        (z - FE): (n, 1, H, W). Returns x*, the solve's statistics and d* = x* - FE."""

        def correction(state: tuple[Tensor, ...], injection: tuple[Tensor, ...]) -> tuple[Tensor]:
            departure, front_codes, threshold = injection
            return (self.correction(state[0], departure, front_codes, threshold),)

        # the state is the correction d = x - FE, so that the solver's relative residual measures the correction
        # (noise-sized), not the strongest eigen-images (std ~80), which would stop it far too early
        analysis = self._layer_parts()[0]
        front_codes = F.conv2d(fe, analysis, padding=BLOCK - 1)
        injection = (departure, front_codes, self.thresholds(sigma, level))
        (delta,), stats = self.deq(correction, (torch.zeros_like(fe),), injection)
        return fe + delta, stats, delta

    def _check(self, eigen: Tensor, eigenvalues: Tensor, mask: Tensor | None, noise: Tensor | None) -> tuple[int, ...]:
        if eigen.dim() != 4 or not 1 <= eigen.shape[1] <= self.config.max_components:
            raise CubeShapeError(
                f"DCT-CSC expects eigen-images (N, k, H, W) with 1 <= k <= {self.config.max_components}; "
                f"got {tuple(eigen.shape)}"
            )
        for name, value in (("eigenvalues", eigenvalues), ("mask", mask), ("noise", noise)):
            if value is not None and tuple(value.shape) != tuple(eigen.shape[:2]):
                raise CubeShapeError(f"{name} must be (N, k) = {tuple(eigen.shape[:2])}; got {tuple(value.shape)}")
        return tuple(eigen.shape)

    def fold_for_inference(self) -> DCTCSC:
        """Eval mode (nothing to fold); returns self."""
        return self.eval()


def _concatenate(parts: list[SolverStats]) -> SolverStats:
    """One :class:`SolverStats` for consecutive groups of samples."""
    if len(parts) == 1:
        return parts[0]
    steps = max(p.trace.shape[0] for p in parts)
    trace = torch.cat(
        [F.pad(p.trace, (0, 0, 0, steps - p.trace.shape[0]), value=float("nan")) for p in parts], dim=1
    )
    return SolverStats(
        evaluations=torch.cat([p.evaluations for p in parts]),
        residual=torch.cat([p.residual for p in parts]),
        trace=trace,
        calls=sum(p.calls for p in parts),
        tol=parts[0].tol,
        extra_evaluations=parts[0].extra_evaluations,
    )


DCTCSC_PRESETS: dict[str, DCTCSCConfig] = {
    "dctcsc": DCTCSCConfig(),
    "dctcsc-coupled": DCTCSCConfig(coupling=True),
}
