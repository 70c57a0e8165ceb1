"""The subspace pipeline: noise estimate, whitening, signal subspace, eigen-image denoising, back-projection.

This is ``hsidenoise run --method lowrank`` (fast, needs no weights) and, with the subspace DECSC as its
eigen-image denoiser, ``hsidenoise run --method decsc``; the band-window DECSC takes its initial point from it
too. One module per step:

1. :mod:`~hsidenoise.subspace.noise_estimate`: HySime's band regression (Bioucas-Dias and Nascimento, 2008),
   made robust, gives each band's noise sigma (:func:`estimate_band_noise`; the effective sigma whitens).
2. :mod:`~hsidenoise.subspace.signal_subspace`: whiten by sigma, keep the components above the
   Marchenko-Pastur edge (:func:`fit_subspace`), refit the synthesis rows by least absolute deviations
   (:func:`fit_loadings`); :func:`fit_lowrank` is steps 1-2 in one call.
3. :mod:`~hsidenoise.subspace.outliers` (per tile): dead lines, stripes and impulses removed
   (:func:`remove_outliers`), the stripes found by :mod:`~hsidenoise.subspace.stripes` (which also destripes the
   fit's pixel sample in step 2) and the missing entries filled from the band's own neighbourhood where that
   checks out better (:mod:`~hsidenoise.subspace.spatial_fill`).
4. :mod:`~hsidenoise.subspace.projection`: the cleaned tile whitened and projected: k eigen-images with unit
   noise (:func:`project`).
5. :mod:`~hsidenoise.subspace.eigenimages`: the eigen-images denoised by an :class:`EigenImageDenoiser`
   (:class:`DCTDenoiser`, :class:`BM3DDenoiser`, :class:`ProjectionOnly`, or the subspace DECSC of
   :mod:`hsidenoise.methods.decsc`).
6. :mod:`~hsidenoise.subspace.projection`: back to bands (:func:`back_project`), the components nearest the
   Marchenko-Pastur edge weighed per band by SURE (:mod:`~hsidenoise.subspace.component_blend`).

:mod:`~hsidenoise.subspace.pipeline` runs steps 1-6 as one method (:class:`LowRankDenoiser`); the settings
are one :class:`LowRankConfig` (:mod:`~hsidenoise.subspace.config`).

Shapes: spectra are (n, B) pixel samples; tiles and cubes are (B, h, w); eigen-images (k, h, w); per-band
vectors are (B,). Every sigma is a standard deviation in the units of the data it describes.
"""

from hsidenoise.subspace.config import SPATIAL_DENOISERS, LowRankConfig
from hsidenoise.subspace.eigenimages import (
    BM3DDenoiser,
    DCTDenoiser,
    EigenImageDenoiser,
    ProjectionOnly,
    bm3d_available,
    bm3d_denoise,
    dct_denoise,
    dct_denoise_stack,
    resolve_spatial,
    spatial_denoiser,
)
from hsidenoise.subspace.noise_estimate import (
    BandRegression,
    band_noise,
    clean_entries,
    estimate_band_noise,
    fit_band_regression,
)
from hsidenoise.subspace.outliers import remove_outliers
from hsidenoise.subspace.pipeline import (
    LowRankDenoiser,
    LowRankInfo,
    denoise_with_subspace,
    lowrank_denoise,
    sample_pixels,
)
from hsidenoise.subspace.projection import back_project, project, synthesis
from hsidenoise.subspace.signal_subspace import Subspace, fit_loadings, fit_lowrank, fit_subspace

__all__ = [
    "SPATIAL_DENOISERS",
    "BM3DDenoiser",
    "BandRegression",
    "DCTDenoiser",
    "EigenImageDenoiser",
    "LowRankConfig",
    "LowRankDenoiser",
    "LowRankInfo",
    "ProjectionOnly",
    "Subspace",
    "back_project",
    "band_noise",
    "bm3d_available",
    "bm3d_denoise",
    "clean_entries",
    "dct_denoise",
    "dct_denoise_stack",
    "denoise_with_subspace",
    "estimate_band_noise",
    "fit_band_regression",
    "fit_loadings",
    "fit_lowrank",
    "fit_subspace",
    "lowrank_denoise",
    "project",
    "remove_outliers",
    "resolve_spatial",
    "sample_pixels",
    "spatial_denoiser",
    "synthesis",
]
