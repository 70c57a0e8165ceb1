"""Step 5 of the pipeline: the eigen-image denoisers, behind one interface.

An :class:`EigenImageDenoiser` takes the k eigen-images of a tile, (k, h, w) in whitened units, and the noise
level of each (1 after whitening), and returns the denoised stack of the same shape. Three implement it:

- :class:`DCTDenoiser` (numpy only): a two-stage sliding-window 8 x 8 DCT denoiser (hard threshold, then
  empirical Wiener with the first stage as pilot; G. Yu and G. Sapiro, "DCT image denoising", IPOL 2011, with
  BM3D's aggregation weights);
- :class:`BM3DDenoiser`: BM3D (Dabov et al. 2007), the ``bm3d`` package (``baselines`` extra);
- the subspace DECSC (:class:`hsidenoise.methods.decsc.DECSCEigenImageDenoiser`): the DCT pilot
  corrected by the equilibrium model;

and :class:`ProjectionOnly` (``spatial="none"``) returns the eigen-images as they are. The pipeline
(:class:`hsidenoise.subspace.pipeline.LowRankDenoiser`) runs any of them between projection and
back-projection; ``--method lowrank --spatial dct|bm3d|none`` and ``--method decsc`` (subspace weights) are
configurations of that one pipeline.

Optional hooks a denoiser may have, which the pipeline calls when present: ``prepare(subspace)`` once per cube
(before the first tile), ``last_facts`` (a dict of facts about its last call, reported per tile), ``info()``
(facts for the run report), and ``wants_samples`` / ``adapt_to(eigen_images, progress)`` (learning from
crops of the cube before it is denoised).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from hsidenoise.errors import ConfigError
from hsidenoise.subspace.config import LowRankConfig

DCT_BLOCK = 8
"""Block side of the DCT denoiser (smaller images are padded symmetrically)."""

DCT_DTYPE = np.float32
"""Floating type of the DCT denoiser's block coefficients and sums. float32 halves the memory traffic and doubles
the matrix-product rate; against float64 the outputs differ by about 1e-7 relative (measured in bench/README.md:
MPSNR unchanged to 0.01 dB), far below the noise the denoiser removes."""
DCT_ITEMSIZE = np.dtype(DCT_DTYPE).itemsize

DCT_CHUNK_BYTES = 64 << 20
"""Bytes of one image group's block coefficients in :func:`dct_denoise_stack`: 64 :data:`DCT_DTYPE` values per
block, about 16 MiB per 256 x 256 image, of which about three copies are alive at once. Images go through in
groups of at most this much (one image at least), so the working set does not grow with the number of
eigen-images (kept components); each image is denoised independently, so grouping changes the result only by
float rounding (the matrix products may sum in another order)."""

@runtime_checkable
class EigenImageDenoiser(Protocol):
    """What the pipeline needs from an eigen-image denoiser.

    Attributes:
        name: short name, shown in reports (``"dct"``, ``"bm3d"``, ``"none"``, ``"decsc"``).
    """

    name: str

    def denoise(self, eigen_images: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
        """Denoise a stack of eigen-images.

        Args:
            eigen_images: (k, h, w) in whitened units.
            noise: the noise standard deviation of every eigen-image (a number), or of each one ((k,)).

        Returns:
            (k, h, w) float64.
        """
        ...


@runtime_checkable
class BlendedEigenImageDenoiser(EigenImageDenoiser, Protocol):
    """An eigen-image denoiser whose change to its own front end the pipeline may blend per band
    (:mod:`hsidenoise.subspace.band_blend`; the DCT-CSC of ``--method decsc``).

    Attributes:
        band_blend: whether the pipeline should blend (False: plain back-projection of :meth:`denoise`).

    Optional: ``blend_default``, per part the weight a band keeps unless SURE is confident otherwise (None: free;
    :func:`~hsidenoise.subspace.band_blend.blend_weights`); without it every part starts at 0.
    """

    band_blend: bool

    def denoise_parts(
        self, eigen_images: np.ndarray, noise: float | np.ndarray, perturbation: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k, h, w) eigen-images -> the front end (k, h, w), the denoiser's changes to it (parts, k, h, w; they add
        up to its output minus the front end; the pipeline weighs each part apart) and the changes' responses to a
        small (k, h, w) ``perturbation`` of the eigen-images (parts, k, h, w)."""
        ...

    def record_blend(self, beta: np.ndarray) -> None:
        """Take note of the blend weights (parts, B) the pipeline chose for one tile (for the run report)."""
        ...


def bm3d_available() -> bool:
    """Whether the optional ``bm3d`` package (``baselines`` extra) is installed."""
    return importlib.util.find_spec("bm3d") is not None


def resolve_spatial(spatial: str) -> str:
    """The denoiser that ``spatial`` selects here: ``"auto"`` becomes ``"bm3d"`` or ``"dct"``.

    Raises:
        ConfigError: ``"bm3d"`` was asked for but the package is not installed.
    """
    if spatial == "auto":
        return "bm3d" if bm3d_available() else "dct"
    if spatial == "bm3d" and not bm3d_available():
        raise ConfigError(
            "spatial='bm3d' needs the bm3d package: pip install 'hsidenoise[baselines]', or use spatial='dct'"
        )
    return spatial


def spatial_denoiser(config: LowRankConfig | None = None) -> EigenImageDenoiser:
    """The classical eigen-image denoiser that ``config.spatial`` selects (see :func:`resolve_spatial`).

    Raises:
        ConfigError: ``"bm3d"`` was asked for but the package is not installed.
    """
    config = config or LowRankConfig()
    name = resolve_spatial(config.spatial)
    if name == "bm3d":
        return BM3DDenoiser()
    if name == "dct":
        return DCTDenoiser(threshold=config.dct_threshold)
    return ProjectionOnly()


def _noise_per_image(noise: float | np.ndarray, count: int) -> np.ndarray:
    """(count,) float64 noise levels from one number or one per image."""
    return np.broadcast_to(np.asarray(noise, dtype=np.float64), (count,))


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Symmetric padding at the bottom and right until both sides are at least ``size``."""
    while image.shape[0] < size or image.shape[1] < size:
        rows, cols = max(0, size - image.shape[0]), max(0, size - image.shape[1])
        image = np.pad(image, ((0, min(rows, image.shape[0])), (0, min(cols, image.shape[1]))), mode="symmetric")
    return image


# ----------------------------------------------------------------------------------------------------------
# BM3D
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BM3DDenoiser:
    """BM3D on each eigen-image (the ``bm3d`` package; ``spatial="bm3d"``)."""

    name: ClassVar[str] = "bm3d"

    def denoise(self, eigen_images: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
        """(k, h, w) in whitened units, noise std (one or (k,)) -> (k, h, w) float64, one BM3D call per image."""
        sigma = _noise_per_image(noise, eigen_images.shape[0])
        denoised = np.empty(eigen_images.shape, dtype=np.float64)
        for index, image in enumerate(eigen_images):
            denoised[index] = bm3d_denoise(image, float(sigma[index]))
        return denoised


def bm3d_denoise(image: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (Dabov et al. 2007; the ``bm3d`` package) on one image with white noise of std ``sigma``.

    Args:
        image: (h, w); sigma: noise standard deviation in the image's units.

    Returns:
        (h, w) float64.
    """
    import bm3d

    height, width = image.shape
    padded = _pad_to(np.asarray(image, dtype=np.float64), 2 * DCT_BLOCK)
    low = float(padded.min())
    span = max(float(padded.max()) - low, sigma, np.finfo(np.float64).tiny)
    # BM3D's block-matching thresholds were tuned for images in [0, 1]: map the image there and back
    estimate = np.asarray(bm3d.bm3d((padded - low) / span, sigma / span), dtype=np.float64)
    return estimate[:height, :width] * span + low


# ----------------------------------------------------------------------------------------------------------
# Sliding-window DCT
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DCTDenoiser:
    """The two-stage sliding-window DCT denoiser on each eigen-image (``spatial="dct"``).

    Attributes:
        threshold: hard threshold of the first stage, in noise sigmas (``LowRankConfig.dct_threshold``).

    The same denoiser in torch on a GPU: :class:`hsidenoise.subspace.dct_torch.TorchDCTDenoiser`.
    """

    threshold: float
    name: ClassVar[str] = "dct"

    def denoise(self, eigen_images: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
        """(k, h, w) in whitened units, noise std (one or (k,)) -> (k, h, w) float64.

        Eigen-images of one noise level go through one batched call (:func:`dct_denoise_stack`).
        """
        sigma = _noise_per_image(noise, eigen_images.shape[0])
        if eigen_images.shape[0] and np.all(sigma == sigma[0]):
            return dct_denoise_stack(eigen_images, float(sigma[0]), self.threshold)
        denoised = np.empty(eigen_images.shape, dtype=np.float64)
        for index, image in enumerate(eigen_images):
            denoised[index] = dct_denoise(image, float(sigma[index]), self.threshold)
        return denoised


def _dct_matrix(size: int) -> np.ndarray:
    """(size, size) orthonormal DCT-II matrix D: D @ v is the DCT of v (``scipy.fft.dct(..., norm="ortho")``).

    D[k, n] = sqrt(2 / size) cos(pi (2 n + 1) k / (2 size)), row 0 scaled by 1 / sqrt(2); written out, since
    importing ``scipy.fft`` for an 8 x 8 matrix costs a third of a second per process.
    """
    frequency, position = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    matrix = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * position + 1) * frequency / (2 * size))
    matrix[0] /= np.sqrt(2.0)
    return matrix


def dct_denoise(image: np.ndarray, sigma: float, threshold: float) -> np.ndarray:
    """Two-stage sliding-window 2-D DCT denoising of one image.

    Args:
        image: (h, w); sigma: noise standard deviation in the image's units; threshold: the first stage's
            hard threshold in sigmas.

    Returns:
        (h, w) float64. See :func:`dct_denoise_stack`.
    """
    return dct_denoise_stack(np.asarray(image)[None], sigma, threshold)[0]


def dct_group_size(height: int, width: int) -> int:
    """Images of ``height`` x ``width`` that :func:`dct_denoise_stack` denoises together (:data:`DCT_CHUNK_BYTES`)."""
    blocks = (max(height, DCT_BLOCK) - DCT_BLOCK + 1) * (max(width, DCT_BLOCK) - DCT_BLOCK + 1)
    return max(1, DCT_CHUNK_BYTES // (DCT_BLOCK * DCT_BLOCK * blocks * DCT_ITEMSIZE))


def dct_group_bytes(height: int, width: int, count: int) -> int:
    """Bytes of one block-coefficient tensor of :func:`dct_denoise_stack` on ``count`` images of that size.

    (64, min(count, group), h - 7, w - 7) :data:`DCT_DTYPE`, the unit of its working set (about three are alive at
    once).
    """
    blocks = (max(height, DCT_BLOCK) - DCT_BLOCK + 1) * (max(width, DCT_BLOCK) - DCT_BLOCK + 1)
    return min(max(count, 1), dct_group_size(height, width)) * DCT_BLOCK * DCT_BLOCK * blocks * DCT_ITEMSIZE


def dct_denoise_stack(images: np.ndarray, sigma: float, threshold: float) -> np.ndarray:
    """Two-stage sliding-window 2-D DCT denoising of a stack of images with the same noise level, in one call.

    Every overlapping :data:`DCT_BLOCK` x :data:`DCT_BLOCK` block (stride 1) is transformed. Stage 1 keeps
    the coefficients above ``threshold * sigma`` (and the DC) and averages the blocks with weights
    1 / (kept coefficients). Stage 2 shrinks the noisy coefficients by the empirical Wiener factor
    P^2 / (P^2 + sigma^2), P being stage 1's coefficients, with weights 1 / sum of squared factors.
    Each image is denoised independently (the same result, up to float rounding, as one :func:`dct_denoise` call
    per image).
    numpy only, in :data:`DCT_DTYPE`: the transform of every block is one matrix product of the 64 x 64
    Kronecker DCT with the 64 shifted views of the images (:func:`_block_dct`), the aggregation one product
    and 64 shifted additions (:func:`_aggregate`), so ``--method lowrank`` never imports torch.

    Args:
        images: (n, h, w); sigma: noise standard deviation in the images' units; threshold: the first
            stage's hard threshold in sigmas.

    Returns:
        (n, h, w) float64.
    """
    count, height, width = images.shape
    padded = np.stack([_pad_to(np.asarray(image, dtype=np.float64), DCT_BLOCK) for image in images])
    transform = _dct_matrix(DCT_BLOCK)
    group = dct_group_size(height, width)
    estimate = np.empty((count, height, width), dtype=np.float64)
    for first in range(0, count, group):
        chunk = padded[first : first + group]
        estimate[first : first + group] = _dct_two_stages(chunk, transform, sigma, threshold)[:, :height, :width]
    return estimate


def _block_dct(images: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The 2-D DCT of every stride-1 block, coefficient-major: (n, H, W) -> (64, n, H - 7, W - 7) :data:`DCT_DTYPE`.

    Row ``u * 8 + v`` holds coefficient (u, v) of every block. The 64 shifted views of the images (pixel
    (a, b) of every block) are stacked in that layout, then one (64, 64) x (64, n (H - 7) (W - 7)) matrix
    product with the Kronecker product of the 8 x 8 transform with itself gives all coefficients.
    """
    patches = _block_pixels(images)
    coefficients = np.empty_like(patches)
    kronecker = np.kron(transform, transform).astype(DCT_DTYPE)  # [u * 8 + v, a * 8 + b] = D[u, a] D[v, b]
    np.matmul(kronecker, patches.reshape(len(patches), -1), out=coefficients.reshape(len(patches), -1))
    return coefficients


def _block_pixels(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Every stride-1 block's pixels, pixel-major: (n, H, W) -> (64, n, H - 7, W - 7), row ``a * 8 + b``."""
    count, height, width = images.shape
    rows, cols = height - DCT_BLOCK + 1, width - DCT_BLOCK + 1
    if out is None:
        out = np.empty((DCT_BLOCK * DCT_BLOCK, count, rows, cols), dtype=DCT_DTYPE)
    for a in range(DCT_BLOCK):
        for b in range(DCT_BLOCK):
            out[a * DCT_BLOCK + b] = images[:, a : a + rows, b : b + cols]
    return out


def _aggregate(coefficients: np.ndarray, weights: np.ndarray, transform: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Weighted average of the inverse blocks at their places: sum_blocks w * idct(C) / sum_blocks w.

    Args:
        coefficients: (64, n, H - 7, W - 7) coefficient-major (:func:`_block_dct`), already multiplied by their
            block's weight.
        weights: (n, H - 7, W - 7) block weights.
        shape: (n, H, W).

    Returns:
        (n, H, W) :data:`DCT_DTYPE`.
    """
    blocks = coefficients.shape[0]
    pixels = np.empty_like(coefficients)  # (64, n, i, j): pixel (a, b) of every block, each a contiguous plane
    inverse = np.kron(transform, transform).T.astype(DCT_DTYPE)
    np.matmul(inverse, coefficients.reshape(blocks, -1), out=pixels.reshape(blocks, -1))
    total = np.zeros(shape, dtype=DCT_DTYPE)
    rows, cols = shape[1] - DCT_BLOCK + 1, shape[2] - DCT_BLOCK + 1
    for a in range(DCT_BLOCK):
        for b in range(DCT_BLOCK):
            total[:, a : a + rows, b : b + cols] += pixels[a * DCT_BLOCK + b]
    del pixels
    norm = np.zeros(shape, dtype=DCT_DTYPE)  # the box sum of the weights: separable, 8 + 8 shifted additions
    partial = np.zeros((shape[0], shape[1], cols), dtype=DCT_DTYPE)
    for a in range(DCT_BLOCK):
        partial[:, a : a + rows, :] += weights
    for b in range(DCT_BLOCK):
        norm[:, :, b : b + cols] += partial
    total /= norm
    return total


def _dct_two_stages(padded: np.ndarray, transform: np.ndarray, sigma: float, threshold: float) -> np.ndarray:
    """The two stages of :func:`dct_denoise_stack` on a group of padded images: (n, H, W) -> (n, H, W) float32.

    Coefficient-major throughout ((64, n, H - 7, W - 7), :func:`_block_dct`), in place where a coefficient
    array is no longer needed, so that about three of them are alive at once.
    """
    noisy = _block_dct(padded, transform)
    keep = np.abs(noisy) > threshold * sigma
    keep[0] = True  # the DC
    weights = np.reciprocal(np.count_nonzero(keep, axis=0), dtype=DCT_DTYPE)
    kept = np.multiply(noisy, keep)
    del keep
    kept *= weights
    pilot = _aggregate(kept, weights, transform, padded.shape)
    del kept
    shrink = _block_dct(pilot, transform)
    shrink *= shrink  # the pilot's power, then the Wiener factor in its place
    shrink /= shrink + sigma * sigma
    weights = 1 / np.maximum(np.einsum("k...,k...->...", shrink, shrink), DCT_DTYPE(1e-12))
    shrink *= noisy
    del noisy
    shrink *= weights
    return _aggregate(shrink, weights, transform, padded.shape)


# ----------------------------------------------------------------------------------------------------------
# The projection alone
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectionOnly:
    """No spatial denoising: the eigen-images as they are (``spatial="none"``)."""

    name: ClassVar[str] = "none"

    def denoise(self, eigen_images: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
        """(k, h, w) -> a float64 copy."""
        return np.array(eigen_images, dtype=np.float64)
