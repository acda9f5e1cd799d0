"""Data-parallel training on ``torch.distributed``: one process per device, started by ``torchrun``.

``torchrun --nproc-per-node N -m pyrovae train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` joins the process group (gloo on CPU, NCCL on CUDA, one GPU
per process: ``cuda:LOCAL_RANK``). Without those variables, or with one process, nothing
changes: :data:`SINGLE` describes the single-process run.

How a step is split (so N processes with global batch B take exactly the step one process
takes with batch B):

* every rank draws the same global minibatch (the data-order generator has the same seed
  everywhere); example ``i`` is owned by rank ``i % N``, which alone reads it (its shard) and
  holds its row of any per-example parameter table, at local row ``i // N``;
* the ELBO runs through :class:`torch.nn.parallel.DistributedDataParallel` wrapped around
  Pyro's ``ELBOModule`` (``elbo(model, guide)``); a rank with ``b`` of the ``B`` examples scales
  its loss by ``N b / B``, so DDP's mean over ranks is the gradient of the global-batch loss;
* per-example tables are left out of DDP (their sparse rows are local); checkpoints hold the
  whole table, gathered on every save and split again on resume.
"""

import inspect
import os
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pyrovae.data import batch_indices, binarize_rows
from pyrovae.errors import ConfigError

_DDP_OPTIONS = inspect.signature(DistributedDataParallel).parameters

__all__ = ["Context", "SINGLE", "setup", "teardown", "check_data_parallel", "DataParallelObjective",
           "shard_batches", "whole_state", "shard_state"]


class Context(NamedTuple):
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self):
        """Rank 0 writes the run directory (checkpoints, metrics, figures, logs)."""
        return self.rank == 0

    @property
    def parallel(self):
        return self.world_size > 1

    def shard_size(self, n):
        """Examples (and per-example table rows) this rank owns out of ``n``: those with i % N == rank."""
        return len(range(self.rank, n, self.world_size))

    def shard(self, t):
        """This rank's rows ``t[rank::N]`` of a per-example tensor (N_global, ...)."""
        return t[self.rank :: self.world_size] if self.parallel else t

    def all_sum(self, *values):
        """Sum floats over ranks (float64); a tuple of the sums."""
        if not self.parallel:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return tuple(t.tolist())

    def gather_rows(self, local, n):
        """The whole per-example tensor (n, ...) from every rank's shard ``local`` (rows rank::N)."""
        if not self.parallel:
            return local
        rows = -(-n // self.world_size)
        padded = local.new_zeros((rows,) + tuple(local.shape[1:]))
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        full = local.new_empty((n,) + tuple(local.shape[1:]))
        for r, part in enumerate(parts):
            full[r :: self.world_size] = part[: self._replace(rank=r).shard_size(n)]
        return full

    def gather_objects(self, obj):
        """A list of every rank's ``obj`` (picklable), in rank order."""
        if not self.parallel:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.parallel:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        if self.parallel:
            dist.barrier()


SINGLE = Context(0, 1, torch.device("cpu"))


def setup(device):
    """Join the process group that ``torchrun`` describes in the environment, once.

    :param torch.device device: the requested device, already checked (see
        :func:`pyrovae.runs.train.resolve_device`); under ``torchrun`` a CUDA device is read as
        "CUDA": each process takes the GPU ``LOCAL_RANK``.
    :returns: a :class:`Context`; ``world_size`` 1 when not launched by ``torchrun``.
    :raises ConfigError: if a process has no GPU of its own.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE._replace(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"process {rank} needs GPU {local_rank}, and this node has "
                              f"{torch.cuda.device_count()}; start at most that many processes per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return Context(rank, world_size, device)


def check_data_parallel(model, elbo):
    """:raises ConfigError: if one step of ``model`` with ``elbo`` cannot be split across processes."""
    if not hasattr(elbo, "differentiable_loss"):
        raise ConfigError(f"{type(elbo).__name__} has no differentiable loss (Pyro runs its backward pass "
                          "itself), so DistributedDataParallel cannot average its gradients; train it in one "
                          "process, or use --elbo trace, meanfield, enum or relaxed with torchrun")
    if getattr(model, "semi_supervised", False):
        raise ConfigError("a semi-supervised model adds a labelled term and a classifier loss to each step, "
                          "which data-parallel training does not split yet; train it in one process")


def teardown(synchronize=False):
    """Leave the process group that :func:`setup` joined, if any.

    :param bool synchronize: wait at a barrier first, so every process leaves together (after
        a run that ended normally on every rank). Leaving while another rank is still inside
        gloo can abort that rank's process ("terminate called without an active exception").
        Not after an error: the other ranks may never reach the barrier.
    """
    if dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


class DataParallelObjective:
    """One rank's share of a training step: ``step(x, idx, batch_size) -> float``.

    Accumulates into ``.grad`` the gradient of the global minibatch's loss (nats, full-data
    scale, as one process computes it with that batch), and returns this rank's share of that
    loss: the shares sum over ranks to the loss (the caller reduces them, with whatever else it
    needs from every rank, in one collective).

    :param model, guide: the rank's model and guide (per-example tables hold the rank's rows).
    :param elbo: a Pyro ELBO with ``differentiable_loss`` (trace, meanfield, enum, relaxed).
    :param int num_data: the global number of training examples.
    :param context: the rank's :class:`Context`.
    :param probe: a small batch ``(x, idx)`` used once to find parameters the loss does not use.
    :raises ConfigError: for an estimator without a differentiable loss (``tracegraph`` and
        ``iwae``: Pyro runs their backward pass itself, which DDP cannot reduce).
    """

    def __init__(self, model, guide, elbo, num_data, context, probe):
        check_data_parallel(model, elbo)
        self.context, self.num_data, self.probe = context, num_data, probe
        module = elbo(model, guide)
        self.tables = [t.weight for t in _tables(guide)]
        table_ids = {id(p) for p in self.tables}
        ignore = [name for name, p in module.named_parameters() if id(p) in table_ids]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignore)
        unused = _unused_parameters(module, probe, num_data, table_ids)
        # buffers (prior constants) are equal on every rank: no broadcast before each forward
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_OPTIONS
                   else {"broadcast_buffers": False})
        self.module = DistributedDataParallel(module, find_unused_parameters=bool(unused), **no_sync)

    def __call__(self, x, idx, batch_size):
        weight = self.context.world_size * len(idx) / batch_size
        empty = len(idx) == 0
        if empty:  # this rank owns none of the batch: a zero-weighted pass keeps DDP's collectives in step
            x, idx = self.probe
        loss = self.module(x, idx, self.num_data)
        (loss * weight).backward()
        if empty:
            for p in self.tables:
                p.grad = None
            return 0.0
        return loss.item() * len(idx) / batch_size


def _tables(guide):
    return [getattr(guide, name) for name in getattr(guide, "local_tables", ())]


def _unused_parameters(module, probe, num_data, skip):
    """Names of trainable parameters that get no gradient from one loss on ``probe``."""
    x, idx = probe
    loss = module(x, idx, num_data)
    loss.backward()
    names = [name for name, p in module.named_parameters()
             if p.requires_grad and id(p) not in skip and p.grad is None]
    module.zero_grad(set_to_none=True)
    return names


def shard_batches(context, x_shard, num_data, batch_size, generator, binarize=False, drop_last=False):
    """Yield ``(x, idx, B)`` per global minibatch: this rank's examples of it (B_r, P), their
    local rows (B_r,) in ``x_shard`` (the rank's rows of the training data) and the global size B.
    Every rank advances ``generator`` exactly as one process reading the whole batch does."""
    for idx in batch_indices(num_data, batch_size, generator, drop_last=drop_last):
        mine = idx % context.world_size == context.rank
        local = idx[mine] // context.world_size
        x = x_shard[local]
        yield (binarize_rows(x, generator, keep=mine) if binarize else x), local, len(idx)


def whole_state(context, guide, optimizer, num_data):
    """``(guide_state, optimizer_state)`` with every per-example table and its SparseAdam moments
    gathered to all ``num_data`` rows (collective: every rank calls it; rank 0 saves)."""
    guide_state, optim_state = guide.state_dict(), optimizer.state_dict()
    if not context.parallel:
        return guide_state, optim_state
    for name in _table_names(guide):
        guide_state[name] = context.gather_rows(guide_state[name], num_data)
    _map_moments(optim_state, lambda t: context.gather_rows(t, num_data))
    return guide_state, optim_state


def shard_state(context, guide, guide_state, optim_state):
    """The inverse of :func:`whole_state`: this rank's rows of the tables and their moments."""
    if not context.parallel:
        return guide_state, optim_state
    for name in _table_names(guide):
        guide_state[name] = context.shard(guide_state[name])
    _map_moments(optim_state, context.shard)
    return guide_state, optim_state


def _table_names(guide):
    return [f"{name}.weight" for name in getattr(guide, "local_tables", ())]


def _map_moments(optim_state, fn):
    """Apply ``fn`` to the per-row moments of the sparse optimizer's state, in copies (the state
    dict shares its tensors with the live optimizer)."""
    local = optim_state.get("local")
    if not local:
        return
    local["state"] = {i: {**m, **{k: fn(m[k]) for k in ("exp_avg", "exp_avg_sq") if k in m}}
                      for i, m in local["state"].items()}
