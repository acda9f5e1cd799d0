"""Label metrics of discrete-latent models: classification accuracy of q(y | x), clustering
accuracy of mixture components, and the supervised baseline M2 is compared with."""

import torch
from torch.nn import functional as F

from pyrovae.nets import mlp

__all__ = ["classification_accuracy", "clustering_scores", "supervised_baseline", "labelled_only_baseline"]


@torch.no_grad()
def classification_accuracy(classify, x, labels, batch_size=1000):
    """Share of rows whose most probable class under ``classify(x) -> logits (B, C)`` is the label.

    :param x: (N, P). :param labels: int64 (N,). :returns: a float in [0, 1].
    """
    hits = sum(int((classify(x[i : i + batch_size]).argmax(-1).cpu() == labels[i : i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / len(x)


def clustering_scores(assignments, labels):
    """Clustering accuracy under the best one-to-one matching of clusters to labels (the
    Hungarian algorithm; Xie, Girshick & Farhadi 2016, arXiv:1511.06335, eq. 10), and the
    normalized mutual information.

    :param assignments, labels: int64 (N,). :returns: ``{"clustering_accuracy", "nmi"}``.
    """
    a, y = assignments.cpu().numpy(), labels.cpu().numpy()
    k = int(max(a.max(), y.max())) + 1
    counts = torch.zeros(k, k, dtype=torch.int64)
    counts.index_put_((torch.as_tensor(a), torch.as_tensor(y)), torch.ones(len(a), dtype=torch.int64), accumulate=True)
    from scipy.optimize import (
        linear_sum_assignment,  # SciPy and scikit-learn load when labels are scored
    )
    from sklearn.metrics import normalized_mutual_info_score

    rows, cols = linear_sum_assignment(-counts.numpy())
    return {"clustering_accuracy": float(counts[rows, cols].sum()) / len(a),
            "nmi": float(normalized_mutual_info_score(y, a))}


def supervised_baseline(x, labels, num_classes, hidden, activation, steps=1000, lr=1e-3, seed=0):
    """The classifier architecture of the M2 guide, q(y | x), trained on ``(x, labels)`` alone
    by full-batch Adam on the cross-entropy: what the labels give without the unlabelled data.

    :param x: (L, P) labelled images. :param labels: int64 (L,).
    :returns: the trained network, (B, P) -> logits (B, C).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = mlp([x.shape[1], *hidden, num_classes], activation)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(net(x), labels).backward()
        optimizer.step()
    return net.eval()


def labelled_only_baseline(config, data, num_classes, split="test"):
    """The test accuracy of :func:`supervised_baseline` trained on the semi-supervised run's
    labelled subset (the same ``config.num_labels`` examples, drawn with ``config.seed``): the
    yardstick for M2's accuracy. Not an evaluation of the model; ``pyrovae train`` reports it
    beside the evaluation of a semi-supervised run.

    :returns: ``{"num_labels", "accuracy_labelled_only", "split"}``.
    """
    from pyrovae.training.objective import labelled_subset

    labelled = labelled_subset(data.train.y, config.num_labels, num_classes, config.seed)
    alone = supervised_baseline(data.train.x[labelled], data.train.y[labelled], num_classes, config.hidden,
                                config.activation, seed=config.seed)
    part = data.split(split)
    return {"split": split, "num_labels": len(labelled),
            "accuracy_labelled_only": classification_accuracy(alone, part.x, part.y)}
