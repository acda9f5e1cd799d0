"""Runs on disk: the ``pyrovae train`` pipeline (:mod:`~pyrovae.runs.train`), run directories
(:mod:`~pyrovae.runs.rundir`, their lock :mod:`~pyrovae.runs.runlock`), atomic checkpoints
(:mod:`~pyrovae.runs.checkpoint`) and loading a saved run (:mod:`~pyrovae.runs.load`).

Nothing is imported here, so ``pyrovae.runs.rundir`` loads without torch.
"""
