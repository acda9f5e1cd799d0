"""Datasets, each a name for ``--data``.

==================  ==========================================================================
name                source
==================  ==========================================================================
digits (default)    scikit-learn's bundled 8x8 digits (1,797 images, labels), no download
binarized-mnist     ``binarized_mnist_{train,valid,test}.amat[.gz]`` (Larochelle & Murray 2011)
mnist               IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
fashion-mnist       the same IDX file names, from Fashion-MNIST
PATH.npy / .npz     your own array, N x P (or N x H x W), values in [0, 1]
==================  ==========================================================================

Binarization for the Bernoulli likelihood (``Dataset.binarization``):

* ``threshold`` (digits): pixel intensities are scaled to [0, 1] (divided by 16) and
  thresholded at 0.5, a fixed binary dataset.
* ``static`` (binarized-mnist): the files are already binary.
* ``dynamic`` (mnist, fashion-mnist, non-binary arrays): training batches are drawn as
  x ~ Bernoulli(intensity) afresh each time (Salakhutdinov & Murray 2008); the
  validation and test splits are binarized once with a fixed seed so that evaluation
  is reproducible.

Splits: digits and user arrays are split 80/10/10 by a seeded permutation
(``split_seed``); MNIST-style data keep the last 10,000 training images as validation.
No function here downloads anything.
"""

from pyrovae.data.arrays import load_array
from pyrovae.data.files import (
    load_binarized_mnist,
    load_digits,
    load_fashion_mnist,
    load_mnist,
)
from pyrovae.data.splits import (
    BINARIZE_SEED,
    Dataset,
    Split,
    batch_indices,
    batches,
    binarize_rows,
)
from pyrovae.errors import DataError

__all__ = ["Split", "Dataset", "DATASETS", "load_dataset", "load_array", "batches", "batch_indices", "binarize_rows",
           "BINARIZE_SEED"]

# name -> loader(data_dir, binary, split_seed); a path ending in .npy/.npz is read by load_array
DATASETS = {
    "digits": load_digits,
    "binarized-mnist": load_binarized_mnist,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
}


def load_dataset(name, data_dir=None, binary=True, split_seed=0):
    """Load the dataset ``name`` (a key of :data:`DATASETS`, or a ``.npy``/``.npz`` path).

    :param bool binary: prepare binary data for a Bernoulli likelihood (see module doc);
        False keeps intensities in [0, 1] for a Gaussian likelihood.
    :param int split_seed: seed of the train/valid/test permutation where one is made.
    :raises DataError: for a missing file (the message names the files expected and where),
        a wrong shape, non-finite values, or values outside [0, 1] for a Bernoulli likelihood.
    """
    if name.endswith((".npy", ".npz")):
        return load_array(name, binary, split_seed)
    if name not in DATASETS:
        valid = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; valid names: {valid}, or a path to a .npy/.npz file")
    return DATASETS[name](data_dir, binary, split_seed)
