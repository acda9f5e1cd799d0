"""Peak memory of a block of work: resident memory on Linux, allocated memory on CUDA."""

import torch

__all__ = ["peak_memory"]


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


class peak_memory:
    """Peak memory (bytes) the block added to this process. On CPU: Linux's VmHWM, reset on entry,
    minus the resident memory on entry; ``peak`` is None where /proc does not allow it. With a CUDA
    ``device``: the peak of ``torch.cuda.max_memory_allocated`` above the allocation on entry."""

    def __init__(self, device="cpu"):
        self.cuda = torch.device(device).type == "cuda"

    def __enter__(self):
        self.peak = None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._start = _status("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak = max(torch.cuda.max_memory_allocated() - self._start, 0)
        elif self._start is not None:
            self.peak = max(_status("VmHWM") - self._start, 0)
        return False
