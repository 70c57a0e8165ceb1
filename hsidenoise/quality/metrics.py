"""Full-reference quality metrics for hyperspectral cubes, per band and averaged, plus a no-reference noise estimate.

Conventions (the peers disagree; ``shared/reference/peers-and-conventions.md`` section 5):

- PSNR: per band, 10 log10(peak^2 / MSE_b) with peak 1 for [0, 1] data; MPSNR is the mean over bands.
  Identical bands give +inf (kept as inf in arrays; :meth:`MetricsReport.to_dict` writes None). The means of
  :func:`evaluate` and :func:`mpsnr` are over the bands that differ from the reference: a band passed through
  unchanged (a dead band, a band the method left alone) is listed apart (``identical_bands``, with a note)
  instead of making MPSNR infinite; only when every band is identical is MPSNR +inf, and a note says so.
- SSIM ``wang``: Wang et al. 2004 as scikit-image computes it with ``gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1``: an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
  K1 0.01, K2 0.03, population covariance, reflect padding, then the 5-pixel border cropped before averaging.
- SSIM ``matlab``: the DECSC / SSUMamba port of Wang's ``ssim_index.m``: the same window applied to data
  multiplied by 255 with L = 255 and 'valid' filtering (FFT convolution, as in their code).
  Both modes average the SSIM map over the same (H-10) x (W-10) interior, where reflect padding never
  reaches, so they agree to rounding (~1e-12); the switch names the convention a number was computed with.
  (The numbers that really differ are QRNN3D's, which used scikit-image's defaults: a 7x7 uniform window.)
- SAM: the angle between the two spectra of each pixel, in radians, averaged over pixels; pixels where both
  spectra are zero are skipped, a pixel where exactly one is zero counts as pi/2.
- ERGAS: Wald's 100 * ratio * sqrt(mean_b (RMSE_b / mean(ref_b))^2) with ``ratio`` = h / l, the ratio of
  pixel sizes (1 for denoising); bands whose reference mean is 0 are left out.

Non-finite values: every function ignores pixels where either input is NaN or inf (per band for PSNR and
ERGAS; any SSIM window that touches one; any pixel with one in its spectrum for SAM). A band without a
single finite pixel gets NaN and :func:`evaluate` lists it as excluded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError

SsimMode = Literal["wang", "matlab"]
SSIM_MODES: tuple[str, ...] = get_args(SsimMode)

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_WINDOW = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1  # 11, as scikit-image and ssim_index.m
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(x: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both cubes as float64 (B, H, W) of one shape, or CubeShapeError."""
    x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if x.ndim != 3 or x.shape != ref.shape:
        raise CubeShapeError(
            f"metrics need two (bands, rows, cols) cubes of one shape, got {x.shape} and {ref.shape}; "
            "compare the denoised cube with its own reference"
        )
    return x, ref


def _band_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B,) mean of ``values`` over the ``valid`` pixels of each band; NaN where a band has none."""
    count = valid.sum(axis=(1, 2))
    total = np.where(valid, values, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mse_per_band(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean squared error of each band over the pixels finite in both.

    Args:
        x, ref: (B, H, W) arrays of one shape.

    Returns:
        (B,) float64; NaN for a band without a finite pixel.
    """
    x, ref = _pair(x, ref)
    valid = np.isfinite(x) & np.isfinite(ref)
    return _band_mean((x - ref) ** 2, valid)


def psnr_per_band(x: np.ndarray, ref: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio of each band, 10 log10(peak^2 / MSE_b) in dB.

    Args:
        x: (B, H, W) estimate. ref: (B, H, W) reference. peak: the data's peak value (1 for [0, 1] data).

    Returns:
        (B,) float64; +inf for a band identical to the reference, NaN for a band without a finite pixel.
    """
    mse = mse_per_band(x, ref)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(peak**2 / mse)


def mpsnr(x: np.ndarray, ref: np.ndarray, peak: float = 1.0) -> float:
    """Mean over the bands that differ of :func:`psnr_per_band` (NaN bands and identical bands left out; +inf
    when every band is identical)."""
    psnr = psnr_per_band(x, ref, peak)
    differ = ~np.isnan(psnr) & ~np.isposinf(psnr)
    return _nanmean(psnr[differ]) if differ.any() else _nanmean(psnr)


def _nanmean(values: np.ndarray) -> float:
    finite_or_inf = values[~np.isnan(values)]
    return float(finite_or_inf.mean()) if finite_or_inf.size else math.nan


def _gaussian_window() -> np.ndarray:
    """(11, 11) normalised Gaussian window, MATLAB's fspecial('gaussian', 11, 1.5)."""
    radius = SSIM_WINDOW // 2
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    profile = np.exp(-(offsets**2) / (2.0 * SSIM_SIGMA**2))
    window = np.outer(profile, profile)
    return window / window.sum()


def _ssim_map(x: np.ndarray, ref: np.ndarray, mode: str) -> np.ndarray:
    """(B, H - 10, W - 10) SSIM map over the interior, where the whole window lies inside the image."""
    pad = SSIM_WINDOW // 2
    if mode == "wang":
        scale, data_range = 1.0, 1.0

        from scipy import ndimage  # a third of a second to import: only SSIM needs it, not the run report

        def local_mean(image: np.ndarray) -> np.ndarray:
            filtered = ndimage.gaussian_filter(
                image, sigma=(0.0, SSIM_SIGMA, SSIM_SIGMA), truncate=SSIM_TRUNCATE, mode="reflect"
            )
            return filtered[:, pad:-pad, pad:-pad]

    else:
        from scipy import signal  # 0.5 s to import; only this mode needs it

        scale, data_range = 255.0, 255.0
        window = _gaussian_window()[None]

        def local_mean(image: np.ndarray) -> np.ndarray:
            return signal.fftconvolve(window, image, mode="valid", axes=(1, 2))

    a, b = x * scale, ref * scale
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim_per_band(x: np.ndarray, ref: np.ndarray, mode: SsimMode = "wang") -> np.ndarray:
    """Structural similarity of each band, averaged over the window positions inside the image.

    Args:
        x: (B, H, W) estimate in [0, 1]. ref: (B, H, W) reference in [0, 1].
        mode: ``"wang"`` (scikit-image, data_range 1) or ``"matlab"`` (DECSC's ssim_index port); see the
            module docstring.

    Returns:
        (B,) float64; NaN for a band in which every window touches a non-finite pixel.

    Raises:
        ConfigError: unknown ``mode``.
        CubeShapeError: shapes differ, or a band is smaller than the 11 x 11 window.
    """
    if mode not in SSIM_MODES:
        raise ConfigError(f"unknown SSIM mode {mode!r}; choose one of: {', '.join(SSIM_MODES)}")
    x, ref = _pair(x, ref)
    if min(x.shape[1:]) < SSIM_WINDOW:
        raise CubeShapeError(
            f"SSIM needs bands of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {x.shape[1]}x{x.shape[2]}; "
            "evaluate a larger region"
        )
    invalid = ~(np.isfinite(x) & np.isfinite(ref))
    if not invalid.any():
        return _ssim_map(x, ref, mode).mean(axis=(1, 2))
    ssim_map = _ssim_map(np.where(invalid, 0.0, x), np.where(invalid, 0.0, ref), mode)
    from scipy import ndimage

    box = np.ones((1, SSIM_WINDOW, SSIM_WINDOW))
    touched = ndimage.correlate(invalid.astype(np.float64), box, mode="constant")
    pad = SSIM_WINDOW // 2
    clean_window = touched[:, pad:-pad, pad:-pad] < 0.5
    return _band_mean(ssim_map, clean_window)


def sam(x: np.ndarray, ref: np.ndarray) -> float:
    """Spectral angle mapper: the mean angle between estimated and reference spectra, in radians.

    Args:
        x, ref: (B, H, W) arrays of one shape.

    Returns:
        Mean over pixels of arccos(<x, ref> / (|x| |ref|)), clipped to [0, pi]. Pixels where both spectra
        are zero, or where either has a non-finite value, are skipped; a pixel where exactly one spectrum
        is zero counts as pi/2. NaN when no pixel is left.
    """
    x, ref = _pair(x, ref)
    finite = (np.isfinite(x) & np.isfinite(ref)).all(axis=0)
    xs, rs = x[:, finite], ref[:, finite]
    norm_x, norm_r = np.linalg.norm(xs, axis=0), np.linalg.norm(rs, axis=0)
    keep = (norm_x > 0) | (norm_r > 0)
    if not keep.any():
        return math.nan
    xs, rs, norm_x, norm_r = xs[:, keep], rs[:, keep], norm_x[keep], norm_r[keep]
    both = (norm_x > 0) & (norm_r > 0)
    cosine = np.zeros(norm_x.shape)
    cosine[both] = (xs[:, both] * rs[:, both]).sum(axis=0) / (norm_x[both] * norm_r[both])
    return float(np.arccos(np.clip(cosine, -1.0, 1.0)).mean())


def ergas(x: np.ndarray, ref: np.ndarray, ratio: float = 1.0) -> float:
    """Relative dimensionless global error in synthesis (Wald 2000).

    ERGAS = 100 * ratio * sqrt(mean_b (RMSE_b / mean(ref_b))^2), where ``ratio`` is h / l, the ratio of the
    pixel sizes of the two images (1 when they share a grid, as in denoising). Lower is better, 0 is perfect.
    This is SERT's convention; T3SC divides MSE_b by mean(ref_b) instead of its square.

    Args:
        x, ref: (B, H, W) arrays of one shape. ratio: h / l.

    Returns:
        float; bands whose reference mean is 0 (or undefined) are left out; NaN when no band is left.
    """
    x, ref = _pair(x, ref)
    valid = np.isfinite(x) & np.isfinite(ref)
    mse = _band_mean((x - ref) ** 2, valid)
    mean_ref = _band_mean(ref, valid)
    usable = np.isfinite(mse) & np.isfinite(mean_ref) & (mean_ref != 0)
    if not usable.any():
        return math.nan
    return float(100.0 * ratio * np.sqrt(np.mean(mse[usable] / mean_ref[usable] ** 2)))


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True, eq=False)
class MetricsReport:
    """Full-reference metrics of one cube against its reference.

    Attributes:
        psnr: (B,) dB per band (inf = identical band, NaN = excluded band).
        ssim: (B,) per band (NaN = excluded, or SSIM undefined; see ``notes``).
        rmse: (B,) root mean squared error per band.
        mpsnr: mean of ``psnr`` over the bands that differ from the reference (not excluded, not
            identical); +inf when every band is identical.
        mssim: mean of ``ssim`` over the same bands (over all kept bands when every one is identical).
        sam: mean spectral angle in radians, over the same bands.
        ergas: Wald's ERGAS with ratio 1, over the same bands.
        ssim_mode: ``"wang"`` or ``"matlab"``.
        peak: the PSNR peak.
        excluded_bands: indices of bands without a finite pixel (in either cube).
        notes: human-readable remarks (e.g. why SSIM is missing).
    """

    psnr: np.ndarray
    ssim: np.ndarray
    rmse: np.ndarray
    mpsnr: float
    mssim: float
    sam: float
    ergas: float
    ssim_mode: str
    peak: float = 1.0
    excluded_bands: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def band_count(self) -> int:
        return int(self.psnr.size)

    @property
    def identical_bands(self) -> tuple[int, ...]:
        """Bands equal to the reference (PSNR = +inf), left out of the means."""
        return tuple(int(i) for i in np.flatnonzero(np.isposinf(self.psnr)))

    @property
    def all_identical(self) -> bool:
        """Whether every band not excluded equals the reference (the cubes are the same)."""
        kept = ~np.isnan(self.psnr)
        return bool(kept.any() and np.isposinf(self.psnr[kept]).all())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: every non-finite number becomes None.

        None in ``per_band`` or a mean means either "identical" (see ``identical_bands``, PSNR = +inf) or
        "undefined" (see ``excluded_bands`` and ``notes``).
        """
        return {
            "mpsnr": _json_number(self.mpsnr),
            "mssim": _json_number(self.mssim),
            "sam_rad": _json_number(self.sam),
            "sam_deg": _json_number(math.degrees(self.sam)),
            "ergas": _json_number(self.ergas),
            "band_count": self.band_count,
            "excluded_bands": list(self.excluded_bands),
            "identical_bands": list(self.identical_bands),
            "all_identical": self.all_identical,
            "notes": list(self.notes),
            "conventions": {
                "psnr": f"per band, peak {self.peak:g}, averaged over the bands that differ from the reference",
                "ssim": f"{self.ssim_mode}: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, border excluded",
                "sam": "radians, mean over pixels, all-zero pixels skipped",
                "ergas": "100 * sqrt(mean_b (RMSE_b / mean ref_b)^2), ratio 1",
            },
            "per_band": {
                "psnr": [_json_number(v) for v in self.psnr],
                "ssim": [_json_number(v) for v in self.ssim],
                "rmse": [_json_number(v) for v in self.rmse],
            },
        }


def evaluate(x: np.ndarray, ref: np.ndarray, *, ssim_mode: SsimMode = "wang", peak: float = 1.0) -> MetricsReport:
    """All metrics of ``x`` against ``ref``.

    Args:
        x: (B, H, W) estimate (denoised or noisy) in [0, 1].
        ref: (B, H, W) clean reference in [0, 1].
        ssim_mode: ``"wang"`` or ``"matlab"``.
        peak: PSNR peak (1 for [0, 1] data).

    Returns:
        MetricsReport. Bands without a finite pixel are excluded from every mean and listed; bands identical
        to the reference (PSNR +inf: dead bands passed through unchanged) are listed apart and left out of
        every mean, with a note, unless every band is identical (then MPSNR is +inf and a note says the
        cubes are equal); on bands smaller than 11 x 11 pixels SSIM is NaN and a note says why.

    Raises:
        CubeShapeError: the cubes are not 3-D or differ in shape.
        ConfigError: unknown ``ssim_mode``.
    """
    if ssim_mode not in SSIM_MODES:
        raise ConfigError(f"unknown SSIM mode {ssim_mode!r}; choose one of: {', '.join(SSIM_MODES)}")
    x, ref = _pair(x, ref)
    mse = mse_per_band(x, ref)
    excluded = np.isnan(mse)
    kept = ~excluded
    notes: list[str] = []
    if excluded.any():
        notes.append(f"{int(excluded.sum())} band(s) without a finite pixel are excluded from the means")
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(peak**2 / mse)
    identical = kept & (mse == 0)
    if identical.any() and identical.sum() == kept.sum():
        notes.append("every band is identical to the reference: the cubes are equal (MPSNR is infinite)")
    elif identical.any():
        listed = ", ".join(str(int(i)) for i in np.flatnonzero(identical)[:20])
        more = " ..." if identical.sum() > 20 else ""
        notes.append(
            f"{int(identical.sum())} band(s) identical to the reference (e.g. dead bands passed through "
            f"unchanged; 0-based: {listed}{more}) are left out of the means, which are over the "
            f"{int(kept.sum() - identical.sum())} band(s) that differ"
        )
        kept = kept & ~identical
    if min(x.shape[1:]) >= SSIM_WINDOW:
        ssim = ssim_per_band(x, ref, ssim_mode)
    else:
        ssim = np.full(x.shape[0], np.nan)
        notes.append(
            f"SSIM undefined: bands of {x.shape[1]}x{x.shape[2]} pixels are smaller than "
            f"the {SSIM_WINDOW}x{SSIM_WINDOW} window"
        )
    return MetricsReport(
        psnr=psnr,
        ssim=ssim,
        rmse=np.sqrt(mse),
        mpsnr=_nanmean(psnr[kept]),
        mssim=_nanmean(ssim[kept]),
        sam=sam(x[kept], ref[kept]) if kept.any() else math.nan,
        ergas=ergas(x[kept], ref[kept]) if kept.any() else math.nan,
        ssim_mode=ssim_mode,
        peak=peak,
        excluded_bands=tuple(int(i) for i in np.flatnonzero(excluded)),
        notes=tuple(notes),
    )


def estimate_noise_mad(cube: np.ndarray) -> np.ndarray:
    """Robust no-reference estimate of the Gaussian noise standard deviation of each band.

    Each band is filtered with Immerkaer's (1996) noise-estimation kernel
    [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] / 6, the product of two second differences: it removes constant,
    linear and column- or row-constant structure (so stripes do not count as noise) and maps white noise of
    std sigma to a residual of std sigma. The residual's spread is then measured Donoho-style, robust to edges
    and outliers: sigma = 1.4826 * median(|r - median(r)|).

    Args:
        cube: (B, H, W) any real dtype, in the units the estimate should come back in.

    Returns:
        (B,) float64 in the cube's units; residuals touching a non-finite pixel are ignored; NaN for a band
        smaller than 3 x 3 or without enough finite pixels.
    """
    data = np.asarray(cube)
    if data.ndim != 3:
        raise CubeShapeError(f"estimate_noise_mad expects a (bands, rows, cols) cube, got shape {data.shape}")
    sigma = np.full(data.shape[0], np.nan)
    if min(data.shape[1:]) < 3:
        return sigma
    for index, band in enumerate(data):
        band = band.astype(np.float64)
        across = band[:, :-2] - 2.0 * band[:, 1:-1] + band[:, 2:]
        residual = (across[:-2] - 2.0 * across[1:-1] + across[2:]) / 6.0
        residual = residual[np.isfinite(residual)]
        if residual.size:
            sigma[index] = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    return sigma
