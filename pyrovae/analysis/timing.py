"""What ``pyrovae bench``'s groups share: device synchronisation around a timed block, and rows
of median times with their median ratio to a reference timed in the same rounds."""

import statistics

import torch

__all__ = ["synchronize", "median_ratios"]


def synchronize(device):
    """Wait for ``device``'s queued work (CUDA kernels run asynchronously: time them, not their
    launches); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ratios(seconds):
    """``{label: [seconds per round]}``, the first label the reference, to rows: ``row``,
    ``seconds_median`` and ``ratio``, the median over rounds of the row's time over the
    reference's in the same round (drift on a shared machine hits both alike)."""
    reference = next(iter(seconds.values()))
    return [{"row": label, "seconds_median": statistics.median(times),
             "ratio": statistics.median(t / r for t, r in zip(times, reference))} for label, times in seconds.items()]
