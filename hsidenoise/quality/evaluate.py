"""The ``eval`` tool: score a denoised cube against a clean reference, or without one against its noisy input.

:func:`evaluate_with_reference` reads the cubes, checks their shapes, chooses the PSNR peak (:func:`peak_of`)
and computes MPSNR, SSIM, SAM and ERGAS (:func:`hsidenoise.quality.metrics.evaluate`); :func:`evaluate_without_reference`
measures the input noise, what was removed, their ratio and the calibrated whiteness of the removed part
(:func:`hsidenoise.quality.noreference.no_reference_quality`). Both write their report files when given a
folder and return what they found; :func:`evaluate` chooses between them (``hsidenoise eval`` prints what it
returns, :mod:`hsidenoise.cli.evaluate`; the notebook API exports it as :func:`hsidenoise.api.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError

if TYPE_CHECKING:
    from hsidenoise.cube import Cube
    from hsidenoise.quality.metrics import MetricsReport
    from hsidenoise.quality.noreference import NoReferenceReport

UNIT_RANGE_SLACK = 0.01
"""A reference within [-0.01, 1.01] is taken as [0, 1] data (peak 1)."""


@dataclass(frozen=True)
class Peak:
    """The PSNR peak of a full-reference score and where it came from.

    Attributes:
        peak: the value; source: ``"--peak"``, ``"0..1 data"`` or ``"reference"`` (its maximum, or its range
        when it has negative values); data_range: (min, max) of the reference's valid values; note: the
        sentence for the report; warning: one line for stderr, or "" when there is nothing to warn about.
    """

    peak: float
    source: str
    data_range: tuple[float, float]
    note: str
    warning: str = ""


def _valid_values(cube: Cube, step: int = 1) -> np.ndarray:
    """The cube's finite values other than its no-data value, flattened (every ``step``-th value before that)."""
    flat = np.asarray(cube.data).reshape(-1)[::step]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if cube.meta.nodata is not None:
        flat = flat[flat != cube.meta.nodata]
    return flat


def peak_of(reference: Cube, peak: float | None) -> Peak:
    """The peak for ``reference``: ``peak`` (``--peak``) when given (with a warning if it is 1 on data clearly
    not in 0..1), else 1 for 0..1 data, else the reference's maximum (its max - min when it has negative values),
    so raw sensor units score sensibly."""
    values = _valid_values(reference)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    span = f"{low:.6g}..{high:.6g}"
    if peak is not None:
        clearly_not_unit = high > 2.0 or low < -1.0
        warning = (
            f"warning: --peak 1 but the reference spans {span}, not 0..1: PSNR assumes a peak of 1; "
            "leave --peak out to use the reference's maximum"
            if peak == 1 and clearly_not_unit
            else ""
        )
        return Peak(peak, "--peak", (low, high), f"peak {peak:g} from --peak (reference spans {span})", warning)
    if low >= -UNIT_RANGE_SLACK and high <= 1 + UNIT_RANGE_SLACK:
        return Peak(1.0, "0..1 data", (low, high), f"peak 1: the reference spans {span}, 0..1 data")
    value = high if low >= 0 else high - low
    if value <= 0:
        return Peak(1.0, "0..1 data", (low, high), f"peak 1: the reference spans {span}")
    what = "maximum" if low >= 0 else "range (max - min)"
    return Peak(
        value,
        "reference",
        (low, high),
        f"peak {value:.6g} is the reference's {what} (it spans {span}, not 0..1; --peak sets another); "
        f"SSIM computed on the cubes divided by {value:.6g}",
    )


SCALE_MISMATCH = 20.0
"""The denoised cube and the reference are flagged as on different scales when their value spans (0.1 to 99.9th
percentile) differ by more than this factor either way."""


def _span(cube: Cube) -> tuple[float, float]:
    """(low, high): the 0.1 and 99.9th percentiles of the cube's finite values other than its no-data value (a
    strided subset of at most 2**20)."""
    flat = _valid_values(cube, max(1, np.asarray(cube.data).size // (1 << 20)))
    if flat.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(flat.astype(np.float64), [0.1, 99.9])
    return float(low), float(high)


def scale_mismatch(denoised: Cube, reference: Cube, name: str) -> str:
    """One warning line when ``denoised`` and ``reference`` are clearly on different scales (e.g. a cube that
    ``hsidenoise noise`` normalised to 0..1, scored against the raw scene), else "". Their scores would be
    meaningless: MPSNR near the reference's own dynamic range, not the denoiser's error. No-data values (each
    cube's own) are left out, as in :func:`peak_of`."""
    low, high = _span(denoised)
    ref_low, ref_high = _span(reference)
    width, ref_width = high - low, ref_high - ref_low
    if not (width > 0 and ref_width > 0) or 1 / SCALE_MISMATCH <= width / ref_width <= SCALE_MISMATCH:
        return ""
    return (
        f"warning: {name} spans about {low:.4g}..{high:.4g} but the reference {ref_low:.4g}..{ref_high:.4g}: "
        "different scales, so these scores say little (hsidenoise noise normalises to 0..1; its --write-clean "
        "writes the reference that matches)"
    )


def scored(x: np.ndarray, ref: np.ndarray, ssim_mode: str, scale: Peak) -> MetricsReport:
    """:func:`hsidenoise.quality.metrics.evaluate` with ``scale``: a detected peak divides both cubes by it
    (SSIM's constants are for a 0..1 range; PSNR, SAM and ERGAS do not change) and puts RMSE back in data
    units; a peak from ``--peak`` is passed as before."""
    from hsidenoise.quality.metrics import evaluate

    if scale.source != "reference":
        return evaluate(x, ref, ssim_mode=ssim_mode, peak=scale.peak)
    factor = 1.0 / scale.peak
    report = evaluate(
        np.asarray(x, dtype=np.float64) * factor, np.asarray(ref, dtype=np.float64) * factor, ssim_mode=ssim_mode
    )
    return replace(report, peak=scale.peak, rmse=report.rmse * scale.peak, notes=(*report.notes, scale.note))


@dataclass(frozen=True)
class ReferenceEvaluation:
    """What :func:`evaluate_with_reference` found.

    Attributes:
        denoised: the denoised cube's scores; noisy: the noisy input's, when it was given; peak: the PSNR peak
        and its source; files: the report files written (name -> path).
    """

    denoised: MetricsReport
    noisy: MetricsReport | None
    peak: Peak
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``eval --json`` document."""
        document = {
            "denoised": self.denoised.to_dict(),
            "peak": {"value": self.peak.peak, "source": self.peak.source, "data_range": list(self.peak.data_range)},
            "files": {k: str(v) for k, v in self.files.items()},
        }
        if self.noisy is not None:
            document["noisy"] = self.noisy.to_dict()
        return document


def _read_pair(scored: Path, other: Path, var: str | None, what: str, hint: str) -> tuple[Cube, Cube]:
    """Read ``scored`` and ``other``; refuse cubes of different shapes, naming ``other`` as ``what``."""
    from hsidenoise.io import read_cube

    first, second = read_cube(scored, var=var), read_cube(other, var=var)
    if first.shape != second.shape:
        raise CubeShapeError(
            f"{scored} has shape {first.shape} (bands, rows, cols) but {what} {other} has {second.shape}; {hint}"
        )
    return first, second


def evaluate_with_reference(
    denoised: Path,
    reference: Path,
    *,
    noisy: Path | None = None,
    out_dir: Path | None = None,
    ssim: str = "wang",
    peak: float | None = None,
    var: str | None = None,
) -> ReferenceEvaluation:
    """Score ``denoised`` (and ``noisy``, when given) against ``reference``; write ``metrics.json/.csv`` and
    ``per_band.png`` to ``out_dir`` when given.

    Args:
        ssim: ``"wang"`` (skimage) or ``"matlab"`` (the DECSC authors').
        peak: the PSNR peak; None chooses it from the reference (:func:`peak_of`).
        var: the MAT variable or HDF5 dataset of every cube.

    Raises:
        CubeShapeError: cubes of different shapes.
        CubeReadError: a cube that cannot be read.
    """
    from hsidenoise.io import read_cube
    from hsidenoise.quality.plots import write_metrics_report

    scored_cube, clean = _read_pair(denoised, reference, var, "the reference", "score cubes of the same scene")
    scale = peak_of(clean, peak)
    mismatch = scale_mismatch(scored_cube, clean, denoised.name)
    if mismatch:
        scale = replace(scale, warning="; ".join(w for w in (scale.warning, mismatch) if w))
    report = scored(scored_cube.data, clean.data, ssim, scale)
    noisy_report = None
    if noisy is not None:
        noisy_cube = read_cube(noisy, var=var)
        if noisy_cube.shape != clean.shape:
            raise CubeShapeError(f"{noisy} has shape {noisy_cube.shape}, the reference has {clean.shape}")
        noisy_report = scored(noisy_cube.data, clean.data, ssim, scale)
    files = {}
    if out_dir is not None:
        files = write_metrics_report(report, out_dir, noisy_report=noisy_report, wavelengths=clean.meta.wavelengths)
    return ReferenceEvaluation(report, noisy_report, scale, files)


@dataclass(frozen=True)
class NoReferenceEvaluation:
    """What :func:`evaluate_without_reference` found.

    Attributes:
        result: the no-reference figures; denoised, noisy: the two cubes; method: the method named by the caller
        (not re-run), or None; files: the report files written (name -> path).
    """

    result: NoReferenceReport
    denoised: Path
    noisy: Path
    method: str | None
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``eval --json`` document of the no-reference mode (JSON-safe: non-finite values are None)."""
        from hsidenoise.quality.plots import json_safe

        return json_safe(
            {
                "denoised": str(self.denoised),
                "noisy": str(self.noisy),
                "method": self.method,
                "no_reference": self.result.to_dict(),
                "files": {k: str(v) for k, v in self.files.items()},
            }
        )


def evaluate_without_reference(
    denoised: Path, noisy: Path, *, out_dir: Path | None = None, peak: float | None = None, method: str | None = None,
    model: str | None = None, spatial: str = "auto", crop: int = 128, seed: int = 0, var: str | None = None,
) -> NoReferenceEvaluation:
    """The no-reference figures of ``denoised`` against its noisy input ``noisy``
    (:func:`hsidenoise.quality.noreference.no_reference_quality`); ``no_reference.json/.csv/.png`` in
    ``out_dir`` when given.

    Args:
        method: the method that denoised (a name of :data:`hsidenoise.methods.METHODS`) or None; it is not
            re-run, it only names the reason why no MPSNR is estimated.
        model, spatial: checked as for :func:`hsidenoise.methods.build_method` (``model``: ``decsc`` only).
        crop: side of the central window for the correlations; seed: of the pixel sample.
        peak: unused (the MPSNR estimate is withheld; its peak would be the output's value range).

    Raises:
        ConfigError: ``model`` without ``method="decsc"``.
        CubeShapeError: cubes of different shapes, or a noisy cube with no valid band.
    """
    if model is not None and method != "decsc":
        raise ConfigError("--model needs --method decsc")
    from hsidenoise.quality.noreference import no_reference_quality
    from hsidenoise.quality.plots import write_no_reference_report

    scored_cube, source = _read_pair(denoised, noisy, var, "the noisy input", "compare a result with its own input")
    # Nothing is re-run: the figures compare the two cubes; ``method`` only names why no MPSNR is estimated.
    result = no_reference_quality(
        np.asarray(source.data, dtype=np.float32),
        np.asarray(scored_cube.data, dtype=np.float32),
        method=method,
        crop=crop,
        seed=seed,
        nodata=source.meta.nodata,
    )
    files = {}
    if out_dir is not None:
        extra = {"denoised": str(denoised), "noisy": str(noisy), "method": method}
        files = write_no_reference_report(result, out_dir, wavelengths=source.meta.wavelengths, extra=extra)
    return NoReferenceEvaluation(result, denoised, noisy, method, files)


def evaluate(
    denoised: str | Path,
    *,
    ref: str | Path | None = None,
    noisy: str | Path | None = None,
    out_dir: str | Path | None = None,
    ssim: str = "wang",
    peak: float | None = None,
    method: str | None = None,
    model: str | None = None,
    spatial: str = "auto",
    crop: int = 128,
    seed: int = 0,
    var: str | None = None,
) -> ReferenceEvaluation | NoReferenceEvaluation:
    """Score a denoised cube file, as ``hsidenoise eval`` does (:func:`hsidenoise.api.evaluate`).

    With ``ref``: MPSNR, SSIM, SAM and ERGAS against the clean reference (and of ``noisy`` too, when given)
    (:func:`hsidenoise.quality.evaluate.evaluate_with_reference`). Without it: the no-reference figures against
    the noisy input ``noisy`` (``method`` names the method that denoised; nothing is re-run)
    (:func:`hsidenoise.quality.evaluate.evaluate_without_reference`). The report files go to ``out_dir`` when
    given. ``ssim`` is for the reference mode; ``method``, ``model``, ``spatial``, ``crop`` and ``seed`` for the
    other.

    Raises:
        ConfigError: neither ``ref`` nor ``noisy``, or options of the other mode.
        CubeShapeError: cubes of different shapes.
    """
    folder = None if out_dir is None else Path(out_dir)
    if ref is not None:
        if method is not None or model is not None:
            raise ConfigError("method and model are for the no-reference mode (noisy= without ref=)")
        return evaluate_with_reference(
            Path(denoised), Path(ref), noisy=None if noisy is None else Path(noisy), out_dir=folder, ssim=ssim,
            peak=peak, var=var,
        )  # fmt: skip
    if noisy is None:
        raise ConfigError("eval needs --ref REFERENCE (full-reference scores) or --noisy NOISY (no-reference figures)")
    return evaluate_without_reference(
        Path(denoised), Path(noisy), out_dir=folder, peak=peak, method=method, model=model, spatial=spatial,
        crop=crop, seed=seed, var=var,
    )  # fmt: skip
