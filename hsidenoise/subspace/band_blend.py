"""Step 6, guarded: per band, how much of a learned eigen-image denoiser's change to keep, chosen by SURE.

A learned eigen-image denoiser (the DCT-CSC of ``--method decsc``) returns the front end FE0 (``--method lowrank``'s
eigen-images, computed inside the model), its change in parts (for DCT-CSC two: the trained second stage's FE - FE0
and the equilibrium's x* - FE), and how each part responds to a small move of its input. Back in bands, part i of
band b is delta_ib = L_b part_i (L the synthesis rows, :func:`~hsidenoise.subspace.projection.synthesis`) and the
output is FE0_b + sum_i beta_ib delta_ib with the beta_b in [0, :data:`BETA_MAX`]^P that minimise Stein's unbiased
risk estimate of the band's mean squared error over the entries of the tile that the front end did not replace or
destripe (where the noise is the Gaussian noise of sigma_b), centred along columns (P, :func:`centre_lines`, so
that a stripe the cleaning missed does not count as signal):

    SURE_b(beta) = ||P (FE0_b + sum_i beta_i delta_ib - y_b)||^2 - tr(P) sigma_b^2
                   + 2 sigma_b^2 div_b(P (FE0_b + sum_i beta_i delta_ib)),

a convex quadratic in beta, minimised over the box exactly (:func:`blend_weights`). So a band that keeps nothing is
the front end's band bit for bit; a band moves away from its default (the trained second stage kept, the
equilibrium's part at its best) toward SURE's choice by the share min(1, z / :data:`CONFIDENCE_RAMP`), z SURE's
estimate of what that saves in its standard errors (``ramp=None``: all the way where z exceeds :data:`SIGNIFICANCE`,
else not at all).

The noise energy cancels between the outputs, so unlike an MPSNR estimate (which needs sigma_b to a few hundredths
of a per cent, ``bench/README.md``) this choice needs sigma_b only in the divergence term, where a sigma_b too high
(the quiet bands) only makes it keep less of the change. div_b is estimated by Monte Carlo (Ramani, Blu and Unser
2008) with one probe: the kept entries of every band move by h sigma_b probe_b (a Rademacher probe,
:func:`band_probe`), the entries the cleaning imputed follow them as the imputation makes them
(:func:`~hsidenoise.subspace.outliers.move_cleaned`), the model runs again on the eigen-images so moved
(:func:`probe_perturbation`; its hard thresholds free to move too), and the responses give the k x k traces of the
eigen-image map by Hutchinson's trick, from which every band's divergence follows through its rows of the basis
and the synthesis (:func:`subspace_divergence`), every cross-component term of the coupling and the hard
thresholds' jumps included. That holds the fitted model; the fit's own response to the data is added
(:mod:`~hsidenoise.subspace.fit_divergence`). The cleaning's decisions (which entries are missing, which lines
striped) are held: their jumps are left out, which on bands where half the entries were replaced leaves SURE
biased (bench/README.md). A per-band blend matches MPSNR, the mean of the bands' PSNR: every band's own error is
what is minimised.

Shapes: tiles (B, h, w); eigen-images (k, h, w); per-band vectors (B,); parts (P, ...).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np

from hsidenoise.subspace.outliers import CleanedTile, move_cleaned
from hsidenoise.subspace.projection import reweight, synthesis
from hsidenoise.subspace.signal_subspace import Subspace

DIVERGENCE_STEP = 1e-2
"""Finite-difference step of the divergence, in noise sigmas (small against the noise, large against float32's
rounding of the noise-sized change)."""
PROBE_SEED = 20261205
"""Seed of the Rademacher probe (the same for every tile: reproducible runs)."""
BETA_MAX = 1.0
"""The most of the change a band keeps: a blend between the two outputs, never an extrapolation beyond the
model's (measured: allowing 2 gains +0.02 to +0.04 dB on average in a whole-cube probe, but single bands lose
more)."""
SIGNIFICANCE = 2.0
"""A band leaves its default weights (:func:`blend_weights`) only where SURE's estimate of the MSE that saves
exceeds this many of its standard errors, 2 sigma_b ||(beta - default) delta||. Measured on the four single-tile
cases of bench/README.md ("The band blend anchored on the front end"): 1 keeps less of the trained stage and loses
0.005-0.03 dB a case; 3 gains up to 0.01 dB more; 2 is the middle, not tuned further on the validation cubes. Both
blends now use :data:`CONFIDENCE_RAMP` instead; this all-or-nothing guard is ``ramp=None``."""
CONFIDENCE_RAMP = 6.0
"""Both blends (this module's, in ``run --method decsc``, and :mod:`~hsidenoise.subspace.component_blend`'s): each band
moves from its default toward SURE's choice by the share min(1, z / CONFIDENCE_RAMP), z SURE's saving in its standard
errors (:func:`blend_weights`' ``ramp``). Measured (bench/README.md, "The guard made a ramp"), the component blend's
mean change against the front end without it and bands more than 0.2 dB below that: on the twelve validation cases
the all-or-nothing guard at 2 standard errors +0.302 dB and 21 of 1,528 bands (worst -0.88); no guard +0.492 and
115 (-1.58); the ramp at 2, 3, 4, 6: +0.466 / 56, +0.428 / 33, +0.392 / 14, +0.338 / 7 (worst -1.28, -0.79, -0.57,
-0.48); on the 68 held-out cases of ``bench/quality.py --heldout`` (11,748 bands) the guard +0.113 non-i.i.d. /
+0.064 mixture and 207 bands, the ramp at 4 +0.313 / +0.131 and 226, at 6 +0.223 / +0.097 and 108. DECSC's band
blend, DECSC - front end: validation +0.1995 and 7 bands below -0.2 dB with the guard, +0.1998 and 4 with the ramp at
6 (+0.1983 and 3 at 3); held-out +0.194, 65 of 68 cases above, 372 bands with the guard, +0.196, 67, 335 with it."""


def band_probe(kept: np.ndarray, seed: int = PROBE_SEED) -> np.ndarray:
    """A Rademacher probe of a tile's kept entries: (B, h, w) float64, +-1 where ``kept``, 0 elsewhere."""
    return np.where(kept, _probe_signs(kept.shape, seed), 0).astype(np.float64)


@functools.lru_cache(maxsize=8)
def _probe_signs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The probe's signs for a tile shape: the same for every tile of that shape (a grid has at most four), drawn
    once; int8, read-only."""
    signs = (np.random.default_rng(seed).integers(0, 2, shape) * 2 - 1).astype(np.int8)
    signs.flags.writeable = False
    return signs


def probe_perturbation(
    probe: np.ndarray,
    subspace: Subspace,
    step: float = DIVERGENCE_STEP,
    weights: np.ndarray | None = None,
    cleaned: CleanedTile | None = None,
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """How the eigen-images move (k, h, w) when each band b of the tile moves by step sigma_b probe_b.

    Whitening divides band b by sigma_b, so they move by step basis^T probe (``step`` noise sigmas per
    component), or, where the projection weighted the pixel's imputed entries (``weights``, :func:`entry_weights
    <hsidenoise.subspace.projection.entry_weights>`), by the same weighted fit of the move. With ``cleaned`` (the
    tile cleaning's result), the imputed entries move too, as the imputation makes them follow the moved entries
    (:func:`~hsidenoise.subspace.outliers.move_cleaned`). With ``extra`` (B, e) directions (eigenvectors below the
    edge, :mod:`~hsidenoise.subspace.component_blend`), their plain projections of the move follow: (k + e, h, w).
    """
    bands, height, width = probe.shape
    move = step * subspace.sigma[:, None, None] * probe
    if cleaned is not None:
        move = move_cleaned(move, cleaned, subspace.regression)
    flat = move.reshape(bands, -1) / subspace.sigma[:, None]  # whitened
    moved = subspace.basis.T @ flat
    if weights is not None:
        reweight(moved, lambda pixels: flat[:, pixels], weights.reshape(bands, -1), subspace.basis)
    if extra is not None:
        moved = np.concatenate([moved, extra.T @ flat])
    return moved.reshape(moved.shape[0], height, width)


def centre_columns(values: np.ndarray) -> np.ndarray:
    """``values`` (..., h, w) less each column's mean: :func:`centre_lines` where every entry is kept (also what the
    eigen-images' side of the divergence applies, :func:`subspace_divergence`)."""
    return values - values.sum(axis=-2, keepdims=True) / values.shape[-2]


def _centre(values: np.ndarray, kept: np.ndarray, axis: int) -> np.ndarray:
    """``values`` (0 off ``kept``) less their mean over the kept entries of each line along ``axis`` (-2: columns,
    -1: rows); 0 off ``kept``. A symmetric projection on the kept entries."""
    if axis == -2 and kept.all():  # nothing left out (Gaussian noise only): the same sums, without the masks' copies
        return centre_columns(values)
    count = kept.sum(axis=axis, keepdims=True)
    inside = np.where(kept, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, inside.sum(axis=axis, keepdims=True) / count, 0.0)
    return np.where(kept, inside - mean, 0.0)


def centre_lines(values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """P values: each band's kept entries less their column's mean over the kept entries, 0 off ``kept``.

    P is a symmetric projection, so the divergence SURE needs is that of P delta (:func:`subspace_divergence`).
    SURE's sums run over P's output, so a column stripe that the tile cleaning missed (an offset of the kept
    entries of a column, not Gaussian noise) does not enter them: left in, SURE rewarded a change that follows it
    back towards the noisy tile (measured, ``bench/quality.py``: CAVE mixture seed 0 went from +0.02 to +0.09 dB
    over the front end, its worst band from -0.41 to -0.23 dB). Centring the rows too (for stripes across the
    track) cost 0.07 dB on the CAVE cube with Gaussian noise and helped nowhere, so only columns are centred; the
    tile cleaning still finds row stripes itself.

    Args:
        values: (..., B, h, w); kept: (B, h, w) bool.
    """
    return _centre(values, kept, -2)


def subspace_divergence(
    perturbation: np.ndarray,
    responses: np.ndarray,
    subspace: Subspace,
    step: float = DIVERGENCE_STEP,
    loadings: np.ndarray | None = None,
) -> np.ndarray:
    """div_b of each part's column-centred change (P, B), from the k x k traces of the eigen-image map.

    Band b's change is delta_b = L_b d(z) with z = E^T W (y - mean) (W = diag(1 / sigma)), so for the fitted model
    held, sum_p d delta_b(p) / d y_b(p) = sum_ij L_bi T_ij E_bj / sigma_b with T_ij = tr(J_ij), J_ij the
    derivative of component i's change by component j's input, every pixel's by its own (column-centred: tr(P J),
    :func:`centre_lines`). T is estimated by Hutchinson's trick from the one probe: the eigen-images moved by
    ``perturbation`` (each component by step E^T probe: uncorrelated, of variance step^2) and the change
    responding by r, T_ij ~ sum_p perturbation_j(p) (P r_i)(p) / step^2, cross-component terms (the coupling) and
    the hard thresholds' jumps included. Every band's divergence then comes from the same k^2 traces, which all
    bands' probes inform: estimated from band b's own probe alone (sum_p probe_b (P L r)_b / (step sigma_b), the
    previous estimator) the other bands' probes add noise in proportion to 1 / ||E_b||, which on the noisiest bands
    (a small share of their whitened variance in the subspace) was as large as SURE's own error (measured on the
    12 cases of ``bench/quality.py``: 17 bands below -0.2 dB against 12, bench/README.md).

    The traces are sums over every pixel of the tile: on a band whose entries the cleaning replaced (not in SURE's
    sums) that overstates the kept entries' divergence by the replaced share, which errs on the side the cleaning's
    own noise-driven decisions push SURE (their jumps are not in any probe; measured: scaling the term to the kept
    entries gave 12 bands below -0.2 dB, the worst -1.44).

    Args:
        perturbation: (k, h, w) the eigen-images' move (:func:`probe_perturbation`).
        responses: (P, k, h, w) each part's response to it.
        subspace: the fitted model (its basis E, synthesis rows L and band sigma).
        step: the probe's step, in noise sigmas.
        loadings: (B, k) the rows that carry the change to the bands, when not the synthesis rows (the synthesis
            rows weighted by the component blend, :mod:`~hsidenoise.subspace.component_blend`).
    """
    parts, rank = responses.shape[:2]
    centred = centre_columns(responses)  # P r
    traces = np.einsum("jp,aip->aij", perturbation.reshape(rank, -1), centred.reshape(parts, rank, -1)) / step**2
    loadings = synthesis(subspace)[1] if loadings is None else loadings  # (B, k)
    return np.einsum("bi,aij,bj->ab", loadings, traces, subspace.basis) / subspace.sigma


def blend_weights(
    noisy: np.ndarray,
    kept: np.ndarray,
    front: np.ndarray,
    changes: np.ndarray,
    change_divergence: np.ndarray,
    sigma: np.ndarray,
    beta_max: float = BETA_MAX,
    default: Sequence[float | None] | None = None,
    centre: bool = True,
    ramp: float | None = None,
) -> np.ndarray:
    """beta (parts, B) in [0, beta_max] minimising each band's SURE over its kept entries (module docstring).

    With parts delta_1 .. delta_P of the change, SURE_b(beta) = beta^T A beta + 2 g^T beta + const, with
    A_ij = <delta_i, delta_j> and g_i = <delta_i, FE_b - y_b> + sigma_b^2 div_b(delta_i): a convex quadratic,
    minimised over the box exactly by :func:`box_quadratic_minimum`; the sums run over the kept entries centred
    along columns (:func:`centre_lines`; ``change_divergence`` must be of the centred parts). A band leaves its ``default`` (the parts
    given a value held there, the others at their best; all parts 0 when None) only where SURE's estimate of the
    MSE that saves exceeds :data:`SIGNIFICANCE` times its standard error, 2 sigma_b ||(beta - default) delta||
    (the estimate errs by 2 (<(beta - default) delta, n> - sigma_b^2 div)).

    Args:
        noisy: (B, h, w) the tile as read; kept: (B, h, w) bool, the entries SURE may use.
        front: (B, h, w) the front end's output; changes: (P, B, h, w) the parts of the model's output minus it
            (or (B, h, w), one part).
        change_divergence: (P, B) (or (B,)) :func:`subspace_divergence` of each part (plus the fit's share).
        sigma: (B,) Gaussian noise sigma, data units.
        default: per part, the weight a band keeps unless SURE is confident otherwise, or None (free).
        centre: the sums over the kept entries centred along columns (:func:`centre_lines`); False: as they are
            (``change_divergence`` then of the parts themselves).
        ramp: None: the guard above (all or nothing at :data:`SIGNIFICANCE` standard errors). A number R: the
            band moves from its default toward SURE's minimum by the share min(1, z / R), z the saving in standard
            errors (SURE decreases all along that segment: a shrinkage toward the default, in proportion to
            SURE's confidence).

    Returns:
        (P, B) float64 (or (B,) for one part given as (B, h, w)).
    """
    single = changes.ndim == 3
    changes = changes[None] if single else changes
    divergence = np.atleast_2d(np.asarray(change_divergence, dtype=np.float64))
    parts, bands = changes.shape[:2]
    if centre:
        delta = centre_lines(changes, kept).reshape(parts, bands, -1)
        residual = centre_lines(front - noisy, kept).reshape(bands, -1)
    else:
        delta = np.where(kept, changes, 0.0).reshape(parts, bands, -1)
        residual = np.where(kept, front - noisy, 0.0).reshape(bands, -1)
    gram = np.einsum("ibp,jbp->bij", delta, delta)  # (B, P, P)
    linear = np.einsum("ibp,bp->bi", delta, residual)
    linear += (np.asarray(sigma, dtype=np.float64) ** 2)[:, None] * divergence.T
    beta = sure_weights(gram, linear, sigma, beta_max, default, ramp)
    return beta[0] if single else beta


def sure_weights(
    gram: np.ndarray,
    linear: np.ndarray,
    sigma: np.ndarray,
    beta_max: float = BETA_MAX,
    default: Sequence[float | None] | None = None,
    ramp: float | None = None,
) -> np.ndarray:
    """:func:`blend_weights` from its sums: SURE_b(beta) = beta^T A_b beta + 2 g_b^T beta + const.

    Args:
        gram: (B, P, P) A_b; linear: (B, P) g_b (the divergence term included); sigma: (B,) noise sigma, data units.
        beta_max, default, ramp: as :func:`blend_weights`.

    Returns:
        (P, B) float64.
    """
    bands, parts = linear.shape
    linear = np.nan_to_num(linear, nan=0.0)
    best = box_quadratic_minimum(gram, linear, beta_max)  # (B, P)
    held = np.zeros((bands, parts))
    fixed = [i for i in range(parts) if default is None or default[i] is not None]
    free = [i for i in range(parts) if i not in fixed]
    if default is not None:
        held[:, fixed] = [float(default[i]) for i in fixed]
    if free:  # the free parts at their best with the others held
        shifted = linear[:, free] + np.einsum("bij,bj->bi", gram[:, free][:, :, fixed], held[:, fixed])
        held[:, free] = box_quadratic_minimum(gram[:, free][:, :, free], shifted, beta_max)

    def sure(beta: np.ndarray) -> np.ndarray:
        return np.einsum("bi,bij,bj->b", beta, gram, beta) + 2 * np.einsum("bi,bi->b", linear, beta)

    step = best - held
    spread = 2 * np.asarray(sigma, dtype=np.float64) * np.sqrt(np.maximum(np.einsum("bi,bij,bj->b", step, gram, step), 0))
    saving = sure(held) - sure(best)
    if ramp is None:
        beta = np.where((saving > SIGNIFICANCE * spread)[:, None], best, held).T
    else:
        share = np.clip(np.divide(saving, ramp * spread, out=np.zeros(bands), where=spread > 0), 0.0, 1.0)
        beta = (held + share[:, None] * step).T
    return beta


def box_quadratic_minimum(gram: np.ndarray, linear: np.ndarray, high: float) -> np.ndarray:
    """argmin over [0, high]^P of beta^T A beta + 2 g^T beta, per band, for a few parts P.

    Every face of the box is tried (each part free, at 0 or at ``high``): the free parts solve their linear
    system, the candidates inside the box are scored, the best kept. Exact for a convex quadratic; 3^P faces.

    Args:
        gram: (B, P, P) positive semi-definite A; linear: (B, P) g.

    Returns:
        (B, P) float64; where A is zero the parts stay 0.
    """
    bands, parts = linear.shape
    best = np.zeros((bands, parts))
    best_value = np.zeros(bands)  # beta = 0
    for states in itertools.product((0, 1, 2), repeat=parts):  # 0: at 0, 1: at high, 2: free
        free = [i for i, state in enumerate(states) if state == 2]
        candidate = np.array([high if state == 1 else 0.0 for state in states])[None].repeat(bands, axis=0)
        valid = np.ones(bands, bool)
        if free:
            fixed = [i for i in range(parts) if i not in free]
            right = -(linear[:, free] + np.einsum("bij,bj->bi", gram[:, free][:, :, fixed], candidate[:, fixed]))
            system = gram[:, free][:, :, free]
            scale = np.abs(system).max(axis=(1, 2))
            determinant = np.linalg.det(system)
            valid = np.abs(determinant) > 1e-12 * np.maximum(scale, 1e-300) ** len(free)
            safe = np.where(valid[:, None, None], system, np.eye(len(free))[None])
            solution = np.linalg.solve(safe, right[..., None])[..., 0]
            candidate[:, free] = solution
            valid &= np.all((solution >= 0.0) & (solution <= high), axis=1) & np.isfinite(solution).all(axis=1)
        value = np.einsum("bi,bij,bj->b", candidate, gram, candidate) + 2 * np.einsum("bi,bi->b", linear, candidate)
        better = valid & (value < best_value)
        best[better], best_value[better] = candidate[better], value[better]
    return best
