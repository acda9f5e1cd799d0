"""Analyses of trained runs: evaluation (:mod:`~pyrovae.analysis.evaluate`), figures
(:mod:`~pyrovae.analysis.plots`), the amortization gap (:mod:`~pyrovae.analysis.compare_inference`),
gradient estimators (:mod:`~pyrovae.analysis.compare_estimators`), NUTS reference posteriors
(:mod:`~pyrovae.analysis.posterior_check`), missing pixels (:mod:`~pyrovae.analysis.impute`)
and the benchmark against hand-written PyTorch (:mod:`~pyrovae.analysis.bench`).
"""
