"""Measure and report (step 9): full-reference metrics, no-reference figures, the ``eval`` and ``info`` tools,
one run's ``--report`` bundle and the plots and tables it writes.

Modules: :mod:`~hsidenoise.quality.metrics` (MPSNR, SSIM, SAM, ERGAS), :mod:`~hsidenoise.quality.noreference`
(input noise, removed std and their ratio, calibrated whiteness; the MPSNR estimate where it is right),
:mod:`~hsidenoise.quality.subspace_mse` (the output's MSE estimated in the front end's whitened subspace, with its
interval), :mod:`~hsidenoise.quality.artefacts` (stripes, profile bands),
:mod:`~hsidenoise.quality.evaluate` (the ``eval`` tool), :mod:`~hsidenoise.quality.describe` (the ``info`` tool),
:mod:`~hsidenoise.quality.run_report` (one run's report from its files), :mod:`~hsidenoise.quality.plots`
(JSON/CSV/PNG writers), :mod:`~hsidenoise.quality.noreference_plots` (``no_reference.png``, ``removed.png``,
``spectra.png``), :mod:`~hsidenoise.quality.figure_io` (PNG and figure plumbing) and :mod:`~hsidenoise.quality.labels` (what the plots say).
"""
