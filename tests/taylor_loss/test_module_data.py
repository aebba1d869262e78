"""Lightning wrapper and the CIFAR-10 pickle loader (on tiny files written by the test)."""

import pickle

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from lightning_papers.data import DigitsDataModule
from lightning_papers.models import MLP
from lightning_papers.taylor_loss import GeneralizedCrossEntropy, TaylorLoss
from lightning_papers.taylor_loss.data import CIFAR10DataModule
from lightning_papers.taylor_loss.module import TaylorLossClassifier


def _trainer(epochs):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_classifier_trains_with_taylor_loss_and_logs_memorisation():
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=256, noise_type="symmetric", noise_rate=0.4)
    model = TaylorLossClassifier(MLP(64, 10, hidden=(64,)), optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    assert isinstance(model.criterion, TaylorLoss)
    trainer = _trainer(15)
    trainer.fit(model, dm)
    metrics = trainer.callback_metrics
    assert {"train/clean_acc", "train/memorized", "val/acc"} <= set(metrics)
    assert float(metrics["val/acc"]) > 0.7  # far above chance despite 40% wrong labels
    assert float(metrics["train/clean_acc"]) > float(metrics["train/memorized"])
    test = trainer.test(model, dm, verbose=False)[0]
    assert test["test/acc"] > 0.7


def test_classifier_accepts_any_criterion():
    model = TaylorLossClassifier(MLP(64, 10, hidden=(8,)), criterion=GeneralizedCrossEntropy(q=0.5))
    assert isinstance(model.criterion, GeneralizedCrossEntropy)
    out = model.criterion(model(torch.randn(5, 64)), torch.tensor([0, 1, 2, 3, 4]))
    assert out.ndim == 0 and torch.isfinite(out)


def _write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = (np.arange(n) % 10).tolist()
    with open(path, "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, fh)
    return data, labels


def test_cifar10_loader_reads_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    d1, _ = _write_batch(folder / "data_batch_1", 40, 0)
    _write_batch(folder / "data_batch_2", 40, 1)
    dt, lt = _write_batch(folder / "test_batch", 20, 2)
    dm = CIFAR10DataModule(
        root=str(tmp_path),
        val_fraction=0.25,
        noise_type="symmetric",
        noise_rate=0.5,
        batch_size=8,
        normalize=False,
    )
    dm.setup()
    assert len(dm.train_dataset) == 60 and len(dm.val_dataset) == 20 and len(dm.test_dataset) == 20
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == 10
    x_test, y_test = dm.test_dataset.tensors
    np.testing.assert_allclose(x_test[0].numpy(), dt[0].reshape(3, 32, 32) / 255.0, rtol=1e-6)
    assert y_test.tolist() == lt
    assert float(dm.noisy_mask.float().mean()) == pytest.approx(0.5)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    small = CIFAR10DataModule(root=str(folder), max_train_samples=30, val_fraction=0.4)
    small.setup()
    assert len(small.train_dataset) + len(small.val_dataset) == 30
    assert abs(float(small.train_dataset.tensors[0].mean())) < 2.0  # normalised


def test_cifar10_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        CIFAR10DataModule(root=str(tmp_path)).setup()
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"foo": 1}))
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        CIFAR10DataModule(root=str(tmp_path)).setup()


def test_generated_and_bundled_datamodules():
    from lightning_papers.taylor_loss import SklearnDataModule, SyntheticDataModule

    for kind in ("blobs", "hypercube", "quantiles"):
        a = SyntheticDataModule(kind, n_samples=120, n_features=6, n_classes=3, data_seed=4)
        b = SyntheticDataModule(kind, n_samples=120, n_features=6, n_classes=3, data_seed=4)
        xa, ya = a.load_arrays()
        xb, yb = b.load_arrays()
        assert xa.shape == (120, 6) and set(ya.tolist()) == {0, 1, 2}
        np.testing.assert_array_equal(xa, xb)  # generated from the seed alone
    wine = SklearnDataModule("wine", noise_type="symmetric", noise_rate=0.2)
    wine.setup()
    assert wine.num_classes == 3 and wine.input_shape == (13,)
    with pytest.raises(ValueError, match="kind must be"):
        SyntheticDataModule("spirals")
    with pytest.raises(ValueError, match="name must be one of"):
        SklearnDataModule("mnist")
    with pytest.raises(ValueError, match=r"^n_samples must be >= 2 \* n_classes = 20, got 5$"):
        SyntheticDataModule(n_samples=5)  # only the argument that failed is named
    with pytest.raises(ValueError, match=r"^difficulty must be > 0, got 0.0$"):
        SyntheticDataModule(difficulty=0.0)
