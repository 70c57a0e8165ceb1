"""Measure and report (step 9): full-reference metrics, no-reference figures, the ``eval`` and ``info`` tools,
one run's ``--report`` bundle and the plots and tables it writes.

Modules: :mod:`~hsidenoise.quality.metrics` (MPSNR, SSIM, SAM, ERGAS), :mod:`~hsidenoise.quality.noreference`
(noise before / after, whiteness, SURE), :mod:`~hsidenoise.quality.artefacts` (stripes, profile bands),
:mod:`~hsidenoise.quality.evaluate` (the ``eval`` tool), :mod:`~hsidenoise.quality.describe` (the ``info`` tool),
:mod:`~hsidenoise.quality.run_report` (one run's report from its files), :mod:`~hsidenoise.quality.plots`
(JSON/CSV/PNG writers) and :mod:`~hsidenoise.quality.labels` (what the plots say).
"""
