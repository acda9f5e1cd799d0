"""Optimizers: Adam for dense parameters, SparseAdam for per-example tables.

Parameters of ``nn.Embedding(sparse=True)`` modules receive sparse gradients (only the rows a
minibatch read), and ``torch.optim.SparseAdam`` updates exactly those rows. Everything else
goes to ``torch.optim.Adam``. :class:`Optimizers` steps both and checkpoints both.
"""

import torch
from torch import nn

__all__ = ["Optimizers", "make_optimizers"]


class Optimizers:
    """A dense and an optional sparse optimizer stepped together; ``state_dict`` holds both.

    ``step(local=..., shared=...)`` selects which part moves, for coordinate ascent.
    """

    def __init__(self, shared, local=None):
        self.shared, self.local = shared, local

    def zero_grad(self, set_to_none=True):
        for opt in (self.shared, self.local):
            if opt is not None:
                opt.zero_grad(set_to_none=set_to_none)

    def step(self, shared=True, local=True):
        if shared and self.shared is not None:
            self.shared.step()
        if local and self.local is not None:
            self.local.step()

    def local_updates(self, loss_fn, steps):
        """Coordinate ascent (``--local-steps``): ``steps`` updates of the per-example rows
        alone, each from a fresh gradient of ``loss_fn()``; gradients are cleared afterwards, so
        the caller's next loss starts from zero."""
        for _ in range(steps):
            self.zero_grad(set_to_none=True)
            loss_fn()
            self.step(shared=False)
        self.zero_grad(set_to_none=True)

    def state_dict(self):
        return {"shared": self.shared.state_dict() if self.shared else None,
                "local": self.local.state_dict() if self.local else None}

    def load_state_dict(self, state):
        for name in ("shared", "local"):
            opt = getattr(self, name)
            if opt is not None:
                opt.load_state_dict(state[name])


def make_optimizers(modules, lr, local_lr=None):
    """Adam(lr) over the dense parameters of ``modules``; SparseAdam(local_lr or lr) over the
    weights of their sparse embeddings (per-example tables)."""
    sparse, dense, seen = [], [], set()
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.Embedding) and sub.sparse:
                sparse.append(sub.weight)
                seen.add(id(sub.weight))
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                dense.append(p)
    shared = torch.optim.Adam(dense, lr=lr) if dense else None
    local = torch.optim.SparseAdam(sparse, lr=local_lr or lr) if sparse else None
    return Optimizers(shared, local)
