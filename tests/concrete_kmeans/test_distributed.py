"""Distributed correctness: identical skip path and centroids on every rank, validation scores over all ranks."""

from __future__ import annotations

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch.utils.data import DataLoader, TensorDataset

from lightning_papers.concrete_kmeans import DeepConcreteKMeans
from lightning_papers.concrete_kmeans.distributed import ContingencyARI, ContingencyNMI, gather_rows


def test_contingency_metrics_match_sklearn_over_several_updates():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 6, 500), rng.integers(0, 4, 500)
    target = np.where(rng.random(500) < 0.6, pred % 4, target)
    nmi, ari = ContingencyNMI(6, 4), ContingencyARI(6, 4)
    for chunk in np.array_split(np.arange(500), 7):
        nmi.update(torch.from_numpy(pred[chunk]), torch.from_numpy(target[chunk]))
        ari.update(torch.from_numpy(pred[chunk]), torch.from_numpy(target[chunk]))
    assert float(nmi.compute()) == pytest.approx(normalized_mutual_info_score(target, pred), abs=1e-6)
    assert float(ari.compute()) == pytest.approx(adjusted_rand_score(target, pred), abs=1e-6)


def test_gather_rows_single_process_caps_rows():
    rows = torch.arange(20.0).reshape(10, 2)
    torch.testing.assert_close(gather_rows(None, rows, 4), rows[:4])


class _Record(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def setup(self, trainer, pl_module, stage):
        torch.set_num_threads(1)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 0:  # first phase-2 step: centroids just initialised
            torch.save({"centroids": pl_module.clusterer.centroids.detach().clone(),
                        "skip": pl_module.embedding.skip_components.clone(),
                        "first_batch": batch[0].clone()}, self.out_dir / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_same_init_and_gathered_validation(tmp_path):
    x, y = make_blobs(260, n_features=8, centers=3, cluster_std=3.0, random_state=3)
    x, y = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    train = DataLoader(TensorDataset(x[:200]), batch_size=20, shuffle=True)
    val_x, val_y = x[200:], y[200:]
    val = DataLoader(TensorDataset(val_x, val_y), batch_size=10)
    L.seed_everything(0)
    model = DeepConcreteKMeans(n_clusters=3, in_features=8, latent_dim=3, hidden=(16,), skip_dim=8,
                               learned_weight=0.5, pretrain_epochs=1, init_n_init=2)
    trainer = L.Trainer(strategy="ddp_spawn", accelerator="cpu", devices=2, max_epochs=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[_Record(tmp_path)])
    trainer.fit(model, train, val)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert not torch.equal(r0["first_batch"], r1["first_batch"])  # the ranks saw different data ...
    assert torch.equal(r0["skip"], r1["skip"]) and r0["skip"].abs().sum() > 0  # ... yet the same skip path
    assert torch.equal(r0["centroids"], r1["centroids"])  # ... and the same initial centroids

    # val/nmi, val/ari were computed over both ranks' halves of the validation set: equal to the scores of
    # the final (rank-0) model on all of it, not to those on rank 0's half
    model.eval()
    with torch.no_grad():
        pred = model(val_x).numpy()
    full_nmi = normalized_mutual_info_score(val_y.numpy(), pred)
    half_nmi = normalized_mutual_info_score(val_y.numpy()[0::2], pred[0::2])
    assert abs(full_nmi - half_nmi) > 1e-3  # the check below can tell the two apart
    assert float(trainer.callback_metrics["val/nmi"]) == pytest.approx(full_nmi, abs=1e-5)
    assert float(trainer.callback_metrics["val/ari"]) == pytest.approx(adjusted_rand_score(val_y.numpy(), pred),
                                                                       abs=1e-5)
