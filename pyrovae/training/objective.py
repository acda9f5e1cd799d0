r"""What one training step minimizes: the ELBO estimator on a minibatch, plus, for
semi-supervised models, the labelled examples' ELBO and a classification loss.

For M2 (Kingma et al. 2014, arXiv:1406.5298, eq. 9) the objective is

.. math::
    \mathcal{J}^\alpha = \sum_{(x, y) \in \text{labelled}} -\mathcal{L}(x, y)
      + \sum_{x \in \text{train}} -\mathcal{U}(x)
      + \alpha \, \mathbb{E}_{\text{labelled}}[-\log q(y | x)],

with :math:`\alpha` = ``aux_weight`` :math:`\times N`. Every training example enters
:math:`\mathcal{U}` (its label unused); each step also draws a minibatch of the labelled subset.
"""

import functools

import torch
from torch.nn import functional as F

from pyrovae.errors import ConfigError, DataError
from pyrovae.inference.elbos import loss_and_grads
from pyrovae.inference.jit import JIT_ELBOS, JitLoss

__all__ = ["make_objective", "unsupervised_loss", "labelled_subset"]


def labelled_subset(labels, num_labels, num_classes, seed):
    """A class-balanced subset: ``num_labels // num_classes`` indices of each class (the first
    ``num_labels % num_classes`` classes get one more), drawn with ``seed``.

    :param torch.Tensor labels: int64 (N,).
    :returns: sorted int64 indices (num_labels,).
    :raises DataError: if a class has too few examples, or labels fall outside ``num_classes``.
    """
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must lie in 0..{num_classes - 1} (--num-classes {num_classes}); "
                        f"got {int(labels.min())}..{int(labels.max())}")
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(num_classes):
        members = (labels == c).nonzero().squeeze(-1)
        want = num_labels // num_classes + (c < num_labels % num_classes)
        if len(members) < want:
            raise DataError(f"class {c} has {len(members)} training examples; --num-labels {num_labels} needs {want}")
        picks.append(members[torch.randperm(len(members), generator=gen)[:want]])
    return torch.cat(picks).sort().values


def unsupervised_loss(config, model, guide, elbo, report=None):
    """:returns: ``loss(x, idx, num_data) -> float``, the ELBO estimator's loss with its gradient
    accumulated: Pyro's compiled ELBO (:class:`~pyrovae.inference.jit.JitLoss`) for ``trace`` and
    ``meanfield`` unless ``config.jit`` is ``"off"``, else
    :func:`~pyrovae.inference.elbos.loss_and_grads`.

    :param report: ``report(message)`` when the loss cannot be compiled; under ``jit="auto"`` by
        default nothing (the plain ELBO runs), under ``"on"`` a ``RuntimeWarning``.
    :raises ConfigError: for ``jit="on"`` with an estimator without a JIT version.
    """
    if config.jit == "on":
        return JitLoss(elbo, model, guide, report=report)
    if config.jit == "auto" and type(elbo) in JIT_ELBOS:
        return JitLoss(elbo, model, guide, report=report or (lambda message: None))
    return functools.partial(loss_and_grads, elbo, model, guide)


def make_objective(config, model, guide, elbo, train, device, report=None):
    """:returns: ``step(x, idx) -> float``: accumulate the gradient of one minibatch's loss
    (full-data scale, nats) and return the loss.

    Unsupervised ``trace`` and ``meanfield`` losses run through Pyro's JIT ELBO where it is exact
    (:func:`unsupervised_loss`; ``config.jit``).

    :param train: the training :class:`~pyrovae.data.Split`.
    :param report: see :func:`unsupervised_loss`.
    :raises DataError: for a semi-supervised model on data without labels.
    :raises ConfigError: for ``jit="on"`` with a semi-supervised model or an estimator without a
        JIT version (only trace and meanfield have one here).
    """
    num_train = len(train)
    semi_supervised = getattr(model, "semi_supervised", False)
    if config.jit == "on" and semi_supervised:
        raise ConfigError(f"--jit compiles unsupervised losses; model {config.model!r} also fits labels: "
                          "use --jit auto or off")
    if not semi_supervised:
        loss = unsupervised_loss(config, model, guide, elbo, report)
        return lambda x, idx: loss(x, idx, num_train)
    if train.y is None:
        raise DataError(f"model {config.model!r} learns from labels, and this dataset has none; "
                        "use --data digits, mnist or fashion-mnist")
    labelled = labelled_subset(train.y, config.num_labels, model.num_classes, config.seed)
    x_lab = train.x[labelled].to(device)
    y_lab = F.one_hot(train.y[labelled], model.num_classes).float().to(device)
    batch = min(config.batch_size, len(labelled))
    alpha = config.aux_weight * num_train

    def step(x, idx):
        loss = loss_and_grads(elbo, model, guide, x, idx, num_train)  # U(x): y latent
        if not len(labelled):
            return loss
        pick = torch.randperm(len(labelled), device="cpu")[:batch].to(device)
        xl, yl = x_lab[pick], y_lab[pick]
        loss += loss_and_grads(elbo, model, guide, xl, pick, len(labelled), y=yl)  # L(x, y)
        aux = alpha * F.cross_entropy(guide.classify(xl), yl.argmax(-1))
        aux.backward()
        return loss + aux.item()

    step.labelled = labelled
    return step
