import numpy as np
import pytest
import torch

from lightning_papers.data import (
    DIGITS_ASYMMETRIC_MAP,
    ArrayDataModule,
    DigitsDataModule,
    MNIST1DDataModule,
    make_label_noise,
    make_mnist1d,
)


def test_digits_shapes_and_split_sizes():
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    sizes = [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)]
    assert sum(sizes) == 1797
    assert sizes[1] == pytest.approx(0.15 * 1797, abs=2) and sizes[2] == pytest.approx(0.15 * 1797, abs=2)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    img = DigitsDataModule(flatten=False)
    img.setup()
    assert img.train_dataset.tensors[0].shape[1:] == (1, 8, 8) and img.input_shape == (1, 8, 8)


def test_split_is_seeded_and_disjoint():
    a, b, c = DigitsDataModule(seed=1), DigitsDataModule(seed=1), DigitsDataModule(seed=2)
    for dm in (a, b, c):
        dm.setup()
    assert all(np.array_equal(a.split_indices[s], b.split_indices[s]) for s in ("train", "val", "test"))
    assert not np.array_equal(a.split_indices["val"], c.split_indices["val"])
    together = np.concatenate([a.split_indices[s] for s in ("train", "val", "test")])
    assert len(np.unique(together)) == 1797


@pytest.mark.parametrize("noise_type", ["symmetric", "pairflip", "asymmetric"])
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_label_noise_rate_and_only_on_train(noise_type, rate):
    dm = DigitsDataModule(noise_type=noise_type, noise_rate=rate, seed=3)
    dm.setup()
    clean, noisy, mask = dm.clean_train_labels, dm.noisy_train_labels, dm.noisy_mask
    assert torch.equal(mask, noisy != clean)  # the mask marks exactly the wrong labels
    assert torch.equal(dm.train_dataset.tensors[1], noisy)
    if noise_type == "asymmetric":
        eligible = torch.isin(clean, torch.tensor(list(DIGITS_ASYMMETRIC_MAP)))
        assert float(mask[eligible].float().mean()) == pytest.approx(rate, abs=0.01)
        assert not mask[~eligible].any()
        for src, dst in DIGITS_ASYMMETRIC_MAP.items():
            assert (noisy[mask & (clean == src)] == dst).all()
    else:
        assert float(mask.float().mean()) == pytest.approx(rate, abs=0.01)
    if noise_type == "pairflip":
        assert torch.equal(noisy[mask], (clean[mask] + 1) % 10)
    # validation and test labels stay clean: they equal the original dataset labels
    from sklearn.datasets import load_digits

    y_all = torch.from_numpy(load_digits().target)
    assert torch.equal(dm.val_dataset.tensors[1], y_all[dm.split_indices["val"]])
    assert torch.equal(dm.test_dataset.tensors[1], y_all[dm.split_indices["test"]])
    x, y_noisy, y_clean = next(iter(dm.train_eval_dataloader()))
    assert torch.equal(y_clean, clean[: len(y_clean)]) and torch.equal(y_noisy, noisy[: len(y_noisy)])


def test_symmetric_noise_is_uniform_over_other_classes():
    y = np.repeat(np.arange(10), 2000)
    noisy, mask = make_label_noise(y, 10, "symmetric", 0.5, seed=0)
    offsets = (noisy[mask] - y[mask]) % 10
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0
    assert counts[1:].min() / counts[1:].max() > 0.85


def test_noise_is_reproducible_by_seed():
    y = np.arange(500) % 10
    a = make_label_noise(y, 10, "symmetric", 0.3, seed=5)[0]
    b = make_label_noise(y, 10, "symmetric", 0.3, seed=5)[0]
    c = make_label_noise(y, 10, "symmetric", 0.3, seed=6)[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise_type="symmetric", noise_rate=1.0), r"noise_rate must be in \[0, 1\), got 1.0"),
        (dict(noise_type="symmetric", noise_rate=-0.1), r"got -0.1"),
        (dict(noise_type="gaussian", noise_rate=0.1), r"'gaussian'"),
        (dict(noise_rate=0.2), r"needs a noise_type"),
        (dict(val_fraction=0.6, test_fraction=0.5), r"val_fraction=0.6"),
        (dict(batch_size=0), r"batch_size must be >= 1, got 0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_array_datamodule_reads_npz_and_rejects_bad_files(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    y = np.arange(60) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    dm = ArrayDataModule(path=str(tmp_path / "d.npz"), batch_size=8)
    dm.setup()
    assert dm.num_classes == 3 and dm.input_shape == (3,)
    assert len(dm.train_dataset) + len(dm.val_dataset) + len(dm.test_dataset) == 60
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        ArrayDataModule(path=str(tmp_path / "missing.npz")).setup()
    with pytest.raises(KeyError, match="'features'"):
        ArrayDataModule(path=str(tmp_path / "d.npz"), x_key="features").setup()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ArrayDataModule.from_arrays(x, y).setup()


def test_mnist1d_generation():
    x, y = make_mnist1d(300, seed=0)
    x2, y2 = make_mnist1d(300, seed=0)
    assert x.shape == (300, 40) and np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.bincount(y).tolist() == [30] * 10
    assert not np.array_equal(x, make_mnist1d(300, seed=1)[0])
    dm = MNIST1DDataModule(n_samples=500)
    dm.setup()
    assert dm.input_shape == (40,) and dm.num_classes == 10
    # class templates differ: a nearest-class-mean classifier beats chance clearly on held-out data
    xt, yt = dm.arrays("train")
    xv, yv = dm.arrays("test")
    means = torch.stack([xt[yt == c].mean(0) for c in range(10)])
    acc = (torch.cdist(xv, means).argmin(1) == yv).float().mean()
    assert acc > 0.2


def test_corrupt_or_truncated_npz_names_the_file(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((10, 2)), y=np.arange(10) % 2)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:40])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=rf"{bad.name} is not a readable \.npz file.*'x'.*'y'"):
            ArrayDataModule(path=str(bad)).setup()


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0.0, 1.5, 1.0, 0.0]), r"whole class numbers, got 1\.5 at index 1"),
        (np.array([0, -1, 1, 0]), r"must be >= 0 \(class indices\), got -1 at index 1"),
        (np.array(["a", "b", "a", "b"]), "integer class indices, got dtype <U1"),
        (np.zeros((4, 2), dtype=int), r"1-D array of class indices, got shape \(4, 2\)"),
    ],
)
def test_bad_labels_are_refused_not_truncated(labels, match, tmp_path):
    x = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        ArrayDataModule.from_arrays(x, labels)
    np.savez(tmp_path / "d.npz", x=x, y=labels)
    with pytest.raises(ValueError, match=match):
        ArrayDataModule(path=str(tmp_path / "d.npz")).setup()


def test_whole_float_labels_are_accepted_as_integers():
    dm = ArrayDataModule.from_arrays(np.random.rand(40, 2), (np.arange(40) % 2).astype(float), batch_size=4)
    dm.setup()
    assert dm.num_classes == 2 and dm.train_dataset.tensors[1].dtype == torch.int64
