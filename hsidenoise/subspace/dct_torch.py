"""The front end's two-stage sliding DCT in torch, for ``--method lowrank`` on a GPU (issue 19, item 4).

The same operations as :func:`hsidenoise.subspace.eigenimages.dct_denoise_stack` (numpy, the CPU path): the
coefficients of every stride-1 8 x 8 block are one convolution with the 64 Kronecker DCT atoms, and the
weighted average of the inverse blocks one transposed convolution divided by the box sum of the weights. On a
GPU these are a few large kernels; on the CPU numpy's version is faster and does not import torch (about 2 s
per process), so :class:`TorchDCTDenoiser` runs only where :func:`hsidenoise.device.lowrank_device` picks CUDA. It runs on any
torch device, which is how the tests check it on the CPU against the numpy path.

Shapes: images (n, h, w) in, (n, h, w) float64 out; inside, (n, 1, H, W) images and (n, 64, H - 7, W - 7)
coefficients (H, W padded to at least 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hsidenoise.subspace.eigenimages import DCT_BLOCK, _dct_matrix, _noise_per_image, _pad_to, dct_group_size


@dataclass(frozen=True)
class TorchDCTDenoiser:
    """:class:`hsidenoise.subspace.eigenimages.DCTDenoiser` in torch on ``device`` (the GPU path of ``lowrank``).

    Attributes:
        threshold: hard threshold of the first stage, in noise sigmas. device: a torch device name.
    """

    threshold: float
    device: str
    name: ClassVar[str] = "dct"

    def denoise(self, eigen_images: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
        """(k, h, w) in whitened units, noise std (one or (k,)) -> (k, h, w) float64."""
        sigma = _noise_per_image(noise, eigen_images.shape[0])
        return dct_denoise_stack_torch(eigen_images, sigma, self.threshold, self.device)


def dct_denoise_stack_torch(images: np.ndarray, sigma: np.ndarray, threshold: float, device: str) -> np.ndarray:
    """Two-stage sliding DCT denoising of each image of a stack, on a torch ``device``, in float32.

    Args:
        images: (n, h, w) eigen-images. sigma: (n,) noise std of each image. threshold: stage 1's hard
            threshold in sigmas. device: a torch device name (``cuda``, ``cuda:1``, ``cpu``).

    Returns:
        (n, h, w) float64 on the host.
    """
    import torch
    import torch.nn.functional as F

    count, height, width = images.shape
    target = torch.device(device)
    transform = _dct_matrix(DCT_BLOCK)
    atoms = torch.from_numpy(np.kron(transform, transform).reshape(DCT_BLOCK * DCT_BLOCK, 1, DCT_BLOCK, DCT_BLOCK))
    atoms = atoms.to(target, torch.float32)
    box = torch.ones(1, 1, DCT_BLOCK, DCT_BLOCK, device=target)
    group = dct_group_size(height, width)
    estimate = np.empty((count, height, width), dtype=np.float64)

    def aggregate(coded: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(coded, atoms) / F.conv_transpose2d(weights, box)

    with torch.inference_mode():
        for first in range(0, count, group):
            chunk = np.stack([_pad_to(np.asarray(image, np.float64), DCT_BLOCK) for image in images[first : first + group]])
            padded = torch.from_numpy(chunk).to(target, torch.float32)[:, None]
            level = torch.from_numpy(np.array(sigma[first : first + group], np.float64)).to(target, torch.float32)
            level = level[:, None, None, None]
            noisy = F.conv2d(padded, atoms)  # (g, 64, H - 7, W - 7)
            keep = noisy.abs() > threshold * level
            keep[:, 0] = True  # the DC
            weights = 1.0 / keep.sum(dim=1, keepdim=True).to(noisy.dtype)
            pilot = aggregate(torch.where(keep, noisy, 0.0).mul_(weights), weights)
            del keep
            shrink = F.conv2d(pilot, atoms).square_()  # the pilot's power, then the Wiener factor in its place
            shrink.div_(shrink + level.square())
            weights = 1.0 / shrink.square().sum(dim=1, keepdim=True).clamp_min(1e-12)
            result = aggregate(shrink.mul_(noisy).mul_(weights), weights)
            estimate[first : first + group] = result[:, 0, :height, :width].double().cpu().numpy()
    return estimate
