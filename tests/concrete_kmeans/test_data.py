"""MNIST (IDX, .gz) and USPS (.npz, LIBSVM, .h5) loaders on tiny files written here."""

from __future__ import annotations

import bz2
import gzip
import struct

import numpy as np
import pytest

from lightning_papers.concrete_kmeans.data import MNISTDataModule, USPSDataModule, read_idx


def _write_idx(path, array, compress=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_pool_train_and_test(tmp_path, compress):
    rng = np.random.default_rng(0)
    sfx = ".gz" if compress else ""
    tr_x, te_x = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (8, 28, 28))
    tr_y, te_y = np.arange(12) % 10, np.arange(8) % 10
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", tr_x, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", tr_y, compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", te_x, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", te_y, compress)
    x, y = MNISTDataModule(root=str(tmp_path)).load_arrays()
    assert x.shape == (20, 784) and x.dtype == np.float32
    np.testing.assert_allclose(x[12], te_x[0].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, np.concatenate([tr_y, te_y]))
    dm = MNISTDataModule(root=str(tmp_path), split="train", flatten=False, val_fraction=0.25, batch_size=4)
    dm.setup()
    assert dm.input_shape == (1, 28, 28) and len(dm.train_dataset) + len(dm.val_dataset) == 12


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="promises shape"):
        read_idx(short)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        MNISTDataModule(root=str(tmp_path)).load_arrays()


def test_usps_npz_and_libsvm(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((10, 256)).astype(np.float32)
    y = np.arange(10)
    np.savez(tmp_path / "usps.npz", x=x, y=y)
    gx, gy = USPSDataModule(path=str(tmp_path / "usps.npz")).load_arrays()
    np.testing.assert_allclose(gx, x)
    np.testing.assert_array_equal(gy, y)
    # LIBSVM text as distributed (pixels in [-1, 1], labels 1..10), bz2-compressed, pooled with a second file
    lines = [f"{label + 1} " + " ".join(f"{j + 1}:{2 * v - 1:.6f}" for j, v in enumerate(row))
             for row, label in zip(x, y)]
    with bz2.open(tmp_path / "usps.bz2", "wt") as fh:
        fh.write("\n".join(lines[:6]) + "\n")
    (tmp_path / "usps.t").write_text("\n".join(lines[6:]) + "\n")
    dm = USPSDataModule(path=str(tmp_path / "usps.bz2"), extra_paths=[str(tmp_path / "usps.t")], flatten=False)
    lx, ly = dm.load_arrays()
    assert lx.shape == (10, 1, 16, 16)
    np.testing.assert_allclose(lx.reshape(10, -1), x, atol=1e-5)
    np.testing.assert_array_equal(ly, y)


def test_usps_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    x = np.random.default_rng(0).random((6, 256)).astype(np.float32)
    with h5py.File(tmp_path / "usps.h5", "w") as fh:
        for name, sl in (("train", slice(0, 4)), ("test", slice(4, 6))):
            g = fh.create_group(name)
            g.create_dataset("data", data=x[sl])
            g.create_dataset("target", data=np.arange(6)[sl])
    gx, gy = USPSDataModule(path=str(tmp_path / "usps.h5")).load_arrays()
    np.testing.assert_allclose(gx, x)
    np.testing.assert_array_equal(gy, np.arange(6))


def test_usps_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="USPS file not found"):
        USPSDataModule(path=str(tmp_path / "missing.npz")).load_arrays()
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 100)), y=np.zeros(3))
    with pytest.raises(ValueError, match="256 pixels"):
        USPSDataModule(path=str(tmp_path / "wrong.npz")).load_arrays()


def _write_news(folder, posts):
    for group, texts in posts.items():
        (folder / group).mkdir(parents=True)
        for i, text in enumerate(texts):
            (folder / group / f"{i}.txt").write_text(text, encoding="latin-1")


def test_newsgroups_bydate_folders_pool_splits_and_tfidf(tmp_path):
    from lightning_papers.concrete_kmeans import NewsgroupsDataModule

    _write_news(tmp_path / "20news-bydate-train", {"sci.space": ["orbit rocket launch", "rocket orbit moon"],
                                                   "rec.autos": ["engine car wheel"]})
    _write_news(tmp_path / "20news-bydate-test", {"rec.autos": ["car engine oil"], "sci.space": ["moon launch"]})
    x, y = NewsgroupsDataModule(root=str(tmp_path), max_features=5).load_arrays()
    assert x.shape == (5, 5) and x.dtype == np.float32
    # classes sorted by name in both splits: rec.autos = 0, sci.space = 1
    np.testing.assert_array_equal(y, [0, 1, 1, 0, 1])
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)  # TF-IDF rows are L2-normalised
    xt, yt = NewsgroupsDataModule(root=str(tmp_path), split="test").load_arrays()
    assert len(yt) == 2
    with pytest.raises(FileNotFoundError, match="not found"):
        NewsgroupsDataModule(root=str(tmp_path / "missing")).load_arrays()
    with pytest.raises(ValueError, match="split"):
        NewsgroupsDataModule(root=str(tmp_path), split="dev")
