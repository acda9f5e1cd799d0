"""Data loading: bundled digits, the standard file formats, and clear errors for bad input."""

import gzip
import struct

import numpy as np
import pytest
import torch

from pyrovae.data import batches, load_dataset
from pyrovae.errors import DataError


def _sorted_rows(x, y=None):
    """The rows of ``x`` (each with its label appended) in lexicographic order: equal for two
    arrays holding the same examples in any order."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    rows = x if y is None else np.concatenate([x, np.asarray(y, dtype=np.float64)[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def _splits_hold(d, x, y=None):
    """The three splits of ``d`` together hold exactly the examples of ``x`` (and ``y``), each once."""
    parts = (d.train, d.valid, d.test)
    got_x = np.concatenate([s.x.numpy() for s in parts])
    got_y = None if y is None else np.concatenate([s.y.numpy() for s in parts])
    return got_x.shape == np.asarray(x).reshape(len(x), -1).shape and np.array_equal(
        _sorted_rows(got_x, got_y), _sorted_rows(x, y))


def test_digits_threshold_binarized_and_seeded_split():
    from sklearn.datasets import load_digits

    d = load_dataset("digits")
    assert d.num_pixels == 64 and d.image_shape == (8, 8) and d.binarization == "threshold"
    assert len(d.train) + len(d.valid) + len(d.test) == 1797
    for split in (d.train, d.valid, d.test):
        assert split.y.shape == (len(split),)
    # every image of scikit-learn's copy, thresholded at 8 of 16 grey levels, with its label
    bunch = load_digits()
    assert _splits_hold(d, (bunch.data > 8).astype(np.float32), bunch.target)
    again, other = load_dataset("digits"), load_dataset("digits", split_seed=1)
    assert torch.equal(d.test.x, again.test.x)
    assert not torch.equal(d.test.y, other.test.y)


def test_digits_continuous_for_gaussian_likelihood():
    from sklearn.datasets import load_digits

    d = load_dataset("digits", binary=False)
    assert d.binarization == "none"
    bunch = load_digits()
    assert _splits_hold(d, (bunch.data / 16).astype(np.float32), bunch.target)


def _write_amat(folder, rows, gz):
    """Write the three .amat splits; returns the 0/1 arrays written, by split."""
    written = {}
    for seed, (part, n) in enumerate((("train", rows), ("valid", 3), ("test", 4))):
        x = (np.random.default_rng(seed).random((n, 784)) > 0.8).astype(int)
        text = "\n".join(" ".join(map(str, r)) for r in x) + "\n"
        name = folder / f"binarized_mnist_{part}.amat"
        if gz:
            with gzip.open(str(name) + ".gz", "wt") as f:
                f.write(text)
        else:
            name.write_text(text)
        written[part] = x
    return written


@pytest.mark.parametrize("gz", [False, True])
def test_binarized_mnist_plain_and_gzipped(tmp_path, gz):
    written = _write_amat(tmp_path, 5, gz)
    d = load_dataset("binarized-mnist", str(tmp_path))
    assert (len(d.train), len(d.valid), len(d.test)) == (5, 3, 4)
    assert d.num_pixels == 784 and d.binarization == "static"
    for part in ("train", "valid", "test"):  # every pixel, in the file's order
        assert np.array_equal(d.split(part).x.numpy(), written[part]), part


@pytest.mark.parametrize("text", [
    "0 1 1\n1 0 0\n",  # the usual layout
    "0 1 1\r\n1 0 0\r\n",  # Windows line ends
    "0 1 1\n\n1 0 0",  # a blank line, no final newline
    "0\t1  1\n 1 0 0 \n",  # tabs and extra blanks
    "0.0 1.0 1\n1 0 0.0\n",  # numbers written with decimals (read by np.loadtxt)
])
def test_amat_rows_read_as_numpy_reads_them(tmp_path, text):
    from pyrovae.data.files import _read_amat

    path = tmp_path / "x.amat"
    path.write_text(text, newline="")
    assert np.array_equal(_read_amat(str(path)), np.array([[0, 1, 1], [1, 0, 0]], dtype=np.float32))


def test_ragged_amat_rows_named(tmp_path):
    from pyrovae.data.files import _read_amat

    path = tmp_path / "x.amat"
    path.write_text("0 1 1\n1 0\n")
    with pytest.raises(DataError, match=f"could not read {path} as .amat"):
        _read_amat(str(path))


def test_missing_files_named_with_folder(tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset("binarized-mnist", str(tmp_path))
    assert str(caught.value) == (f"--data binarized-mnist: expected binarized_mnist_train.amat or "
                                 f"binarized_mnist_train.amat.gz in {tmp_path.resolve()}; not found")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist", None)


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_dynamic_binarization(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for prefix, n in (("train", 60), ("t10k", 10)):
        written[prefix] = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", written[prefix][0])
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", written[prefix][1])
    d = load_dataset("fashion-mnist", str(tmp_path))
    assert d.binarization == "dynamic" and d.num_pixels == 784
    assert (len(d.train), len(d.valid), len(d.test)) == (50, 10, 10)
    # every pixel (intensity / 255) and label; the last 10 training images are validation
    (images, labels), (test_images, test_labels) = written["train"], written["t10k"]
    flat = images.reshape(60, 784).astype(np.float32) / np.float32(255)
    assert np.array_equal(d.train.x.numpy(), flat[:50]) and np.array_equal(d.train.y.numpy(), labels[:50])
    assert np.array_equal(d.valid.y.numpy(), labels[50:]) and np.array_equal(d.test.y.numpy(), test_labels)
    continuous = load_dataset("fashion-mnist", str(tmp_path), binary=False)
    assert np.array_equal(continuous.valid.x.numpy(), flat[50:])
    assert np.array_equal(continuous.test.x.numpy(), test_images.reshape(10, 784).astype(np.float32) / np.float32(255))
    assert set(d.test.x.unique().tolist()) <= {0.0, 1.0}  # binarized once, with a fixed seed
    assert torch.equal(d.test.x, load_dataset("fashion-mnist", str(tmp_path)).test.x)
    x, _ = next(batches(d.train, 8, torch.Generator().manual_seed(0), binarize=True))
    assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_corrupted_idx_file(tmp_path):
    for prefix in ("train", "t10k"):
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(b"not an idx file")
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(b"nope")
    with pytest.raises(DataError, match="IDX"):
        load_dataset("mnist", str(tmp_path))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros(50), r"shape \(N, P\)"),
        (np.zeros((50, 2, 2, 2)), r"shape \(N, P\)"),
        (np.zeros((5, 4)), "at least 10"),
        (np.zeros((0, 4)), "at least 10"),
        (np.full((20, 4), np.nan), "non-finite value nan at row 0, column 0"),
        (np.where(np.arange(80).reshape(20, 4) == 13, np.inf, 0.5), "non-finite value inf at row 3, column 1"),
        (np.where(np.arange(80).reshape(20, 4) == 6, -np.inf, 0.5), "non-finite value -inf at row 1, column 2"),
        (np.full((20, 4), 1.5), r"\[0, 1\] for the Bernoulli likelihood, found min 1.5, max 1.5; rescale the data, "
                                r"or use --likelihood gaussian"),
        (-np.ones((20, 4)), r"\[0, 1\]"),
    ],
)
def test_bad_user_arrays(tmp_path, array, message):
    path = tmp_path / "x.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_user_array_outside_unit_interval_fine_for_gaussian(tmp_path):
    path = tmp_path / "x.npy"
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    np.save(path, x)
    d = load_dataset(str(path), binary=False)
    assert len(d.train) == 24 and d.binarization == "none"
    assert _splits_hold(d, x)  # 80/10/10 of the rows written, each once, values unchanged


def test_user_npz_splits_and_images(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    arrays = {"x_train": rng.random((12, 3, 3)), "x_valid": rng.random((11, 3, 3)), "x_test": rng.random((10, 3, 3))}
    np.savez(path, **arrays, y_train=np.arange(12))
    d = load_dataset(str(path), binary=False)
    assert d.image_shape == (3, 3) and d.num_pixels == 9
    for part in ("train", "valid", "test"):  # every pixel, in order, as float32
        assert np.array_equal(d.split(part).x.numpy(), arrays[f"x_{part}"].reshape(-1, 9).astype(np.float32))
    assert d.train.y.tolist() == list(range(12)) and d.test.y is None
    assert load_dataset(str(path)).binarization == "dynamic"


def test_user_npz_labels_stay_with_their_images(tmp_path):
    rng = np.random.default_rng(1)
    x, y = (rng.random((40, 5)) > 0.5).astype(np.float32), rng.integers(0, 3, 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(str(tmp_path / "d.npz"), split_seed=3)
    assert d.binarization == "static" and _splits_hold(d, x, y)


def test_pickled_array_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([{"a": 1}] * 12, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled"):
        load_dataset(str(path))


def test_unknown_dataset_lists_names():
    with pytest.raises(DataError, match="binarized-mnist, digits, fashion-mnist, mnist"):
        load_dataset("cifar")


def test_batches_cover_each_example_once():
    d = load_dataset("digits")
    seen = torch.cat([idx for _, idx in batches(d.train, 100, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(len(d.train)))


def test_bernoulli_pixels_log_prob_equals_pyros_independent_bernoulli():
    from pyro import distributions as dist

    from pyrovae.models.likelihoods import BernoulliLikelihood, BernoulliPixels

    logits = torch.randn(3, 1, 5, 7, generator=torch.Generator().manual_seed(0)) * 4
    x = torch.bernoulli(torch.full((5, 7), 0.4))
    ours = BernoulliLikelihood(7)(logits)
    assert isinstance(ours, BernoulliPixels) and ours.event_shape == (7,) and ours.batch_shape == (3, 1, 5)
    expected = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    torch.testing.assert_close(ours.log_prob(x), expected)
    assert isinstance(ours.expand((3, 2, 5)), BernoulliPixels)
    torch.testing.assert_close(ours.expand((3, 2, 5)).log_prob(x), expected.expand(3, 2, 5))
    torch.testing.assert_close(ours.mean, torch.sigmoid(logits))
