"""DeepConcreteKMeans: phases, centroid init, temperature schedule, logging, predict, resume."""

from __future__ import annotations

import functools

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.datasets import make_blobs

from lightning_papers.concrete_kmeans import DeepConcreteKMeans, kmeans
from lightning_papers.data import ArrayDataModule


def _dm(batch_size=50):
    x, y = make_blobs(300, n_features=8, centers=3, cluster_std=1.0, random_state=1)
    return ArrayDataModule.from_arrays(x.astype(np.float32), y, batch_size=batch_size, val_fraction=0.2,
                                       test_fraction=0.2, seed=0)


def _trainer(epochs, **kw):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


def _model(**kw):
    params = dict(n_clusters=3, in_features=8, latent_dim=3, hidden=(16,), pretrain_epochs=4,
                  optimizer=functools.partial(torch.optim.Adam, lr=5e-3), tau_start=1.0, tau_end=0.05,
                  skip_dim=8, learned_weight=0.5)
    params.update(kw)
    return DeepConcreteKMeans(**params)


@pytest.mark.slow
def test_two_phases_init_logging_and_predict():
    L.seed_everything(0)
    dm = _dm()
    model = _model()
    trainer = _trainer(12)  # 4 pretraining epochs leave the AE underfit; phase 2 needs ~8 epochs on these blobs
    trainer.fit(model, dm)
    m = trainer.callback_metrics
    for key in ("val/nmi", "val/ari", "val/acc", "val/kmeans_objective", "train/cluster", "train/tau"):
        assert key in m, key
    assert float(m["val/nmi"]) > 0.9 and float(m["val/acc"]) > 0.9
    assert float(m["train/tau"]) == pytest.approx(0.05, rel=0.15)  # annealed to tau_end
    assert bool(model.clusterer.initialized)
    preds = torch.cat(trainer.predict(model, dm.predict_dataloader()))
    assert preds.dtype == torch.long and preds.shape == (len(dm.test_dataset),)
    assert set(preds.unique().tolist()) <= {0, 1, 2}


def test_centroids_initialised_by_kmeans_at_phase_two_then_trained():
    L.seed_everything(0)
    dm = _dm()
    model = _model(pretrain_epochs=2)
    seen = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 0:  # before the first phase-2 update
                seen["init"] = pl_module.clusterer.centroids.detach().clone()
                seen["z"], _ = pl_module.embed_loader(dm.train_dataloader())

    _trainer(4, callbacks=[Spy()], limit_val_batches=0).fit(model, dm)
    z = seen["z"]
    # The initial centroids are a Lloyd fixed point of the pretrained features with the best inertia.
    lloyd_step, _, inertia = kmeans(z, 3, init=seen["init"], max_iter=1)
    torch.testing.assert_close(lloyd_step, seen["init"], atol=1e-4, rtol=1e-4)
    assert inertia <= kmeans(z, 3, n_init=10, seed=1)[2] * 1.001
    assert not torch.allclose(model.clusterer.centroids.detach(), seen["init"])  # phase 2 moved them


def test_input_kmeans_init_starts_at_the_input_kmeans_partition():
    """``centroid_init="input_kmeans"``: the centroids are the mean embedding of each cluster of scikit-learn's
    KMeans on the input (independent reference), so the first joint step sees that partition; a loader gives
    the same centroids."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from lightning_papers.concrete_kmeans.datasets import noisy_blobs

    x, _ = noisy_blobs(300, n_informative=4, n_noise=4, centers=4, cluster_std=3.0, seed=0)  # overlapping
    x = torch.from_numpy(x)
    model = _model(n_clusters=4, centroid_init="input_kmeans", seed=3, learned_weight=0.2).eval()
    model.init_centroids(x)
    ref = torch.from_numpy(KMeans(4, n_init=10, random_state=3).fit_predict(x.numpy()))
    with torch.no_grad():
        z = model.encode(x)
    expected = torch.stack([z[ref == c].mean(0) for c in range(4)])
    torch.testing.assert_close(model.clusterer.centroids.detach(), expected, atol=1e-5, rtol=1e-5)
    start = model.clusterer.predict(z)
    assert adjusted_rand_score(ref, start) > 0.95
    # the paper's initialisation (k-means on the embedding) is another start on these overlapping clusters
    paper = _model(n_clusters=4, seed=3, learned_weight=0.2).eval()
    paper.init_centroids(x)
    assert adjusted_rand_score(ref, paper.clusterer.predict(z)) < adjusted_rand_score(ref, start)
    # a loader (batches of the same rows in the same order) gives the same centroids
    from_loader = _model(n_clusters=4, centroid_init="input_kmeans", seed=3, learned_weight=0.2).eval()
    from_loader.load_state_dict(model.state_dict())
    from_loader.clusterer.centroids.data.zero_()
    from_loader.init_centroids(torch.utils.data.DataLoader(x, batch_size=64))
    torch.testing.assert_close(from_loader.clusterer.centroids, model.clusterer.centroids, atol=1e-5, rtol=1e-5)


def test_recon_improves_during_pretraining_and_two_step_inits_at_fit_end():
    L.seed_everything(0)
    dm = _dm()
    model = _model(pretrain_epochs=20)
    dm.setup()
    x = dm.train_dataset.tensors[0]
    model.fit_skip(x)
    model.eval()
    with torch.no_grad():
        before = model._recon_loss(x, model.encode(x))
    model.train()
    _trainer(15, limit_val_batches=0).fit(model, dm)  # pretrain_epochs > max_epochs: two-step
    model.eval()
    with torch.no_grad():
        after = model._recon_loss(x, model.encode(x))
    assert after < 0.5 * before
    assert bool(model.clusterer.initialized)  # k-means on the final features at fit end


@pytest.mark.slow
def test_dec_variant_and_checkpoint_resume(tmp_path):
    L.seed_everything(0)
    model = _model(variant="dec", pretrain_epochs=1)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(model, _dm())
    restored = DeepConcreteKMeans.load_from_checkpoint(tmp_path / "last.ckpt")
    assert bool(restored.clusterer.initialized)
    torch.testing.assert_close(restored.clusterer.centroids, model.clusterer.centroids)


def test_conv_autoencoder_and_bad_arguments():
    model = DeepConcreteKMeans(n_clusters=2, architecture="conv", input_shape=(1, 8, 8), latent_dim=4)
    model.fit_skip(torch.randn(20, 1, 8, 8))  # skip path: the 64 flattened pixels (20 principal axes, zero-padded)
    z = model.encode(torch.zeros(3, 1, 8, 8))
    assert z.shape == (3, 64 + 4) and model.embedding.learned(z).shape == (3, 4)
    with pytest.raises(ValueError, match="variant"):
        DeepConcreteKMeans(variant="bogus")
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 2"):
        DeepConcreteKMeans(n_clusters=1)
    with pytest.raises(ValueError, match="input_shape"):
        DeepConcreteKMeans(architecture="conv")
    with pytest.raises(ValueError, match="decoder"):
        DeepConcreteKMeans(encoder=torch.nn.Linear(64, 10))
    with pytest.raises(ValueError, match="schedule"):
        DeepConcreteKMeans(tau_schedule="nope")


def test_dcn_step_pulls_features_and_moves_centroids_by_running_means():
    model = _model(variant="dcn", skip_dim=0, learned_weight=1.0)
    model.clusterer.set_centroids(torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]))
    model.dcn_counts.fill_(2.0)
    z = torch.tensor([[0.5, 0.0, 0.0], [3.0, 0.0, 0.0], [5.0, 0.0, 0.0]], requires_grad=True)
    loss = model._dcn_loss(z)
    # nearest centroids 0, 1, 1; loss = mean of half squared distances to them (before the update)
    assert float(loss.detach()) == pytest.approx(0.5 * (0.25 + 1.0 + 1.0) / 3)
    loss.backward()
    torch.testing.assert_close(z.grad, torch.tensor([[0.5, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]]) / 3)
    # DCN's per-sample rule mu -= (mu - z) / count, count from 2: centroid 0 -> 0.5 / 3, centroid 1 stays at 4
    expected = torch.tensor([[0.5 / 3, 0, 0], [4.0, 0, 0], [0.0, 4.0, 0]])
    torch.testing.assert_close(model.clusterer.centroids.detach(), expected)
    torch.testing.assert_close(model.dcn_counts, torch.tensor([3.0, 4.0, 2.0]))


def test_optimizer_and_scheduler_come_from_factories():
    model = _model(optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), centroid_lr=0.01,
                   lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5, gamma=0.5))
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD) and isinstance(sched, torch.optim.lr_scheduler.StepLR)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert opt.param_groups[1]["params"] == [model.clusterer.centroids]
    assert isinstance(_model().configure_optimizers(), torch.optim.Adam)
    # DCN updates its centroids by running means: they are not in the optimizer
    dcn = _model(variant="dcn")
    groups = dcn.configure_optimizers().param_groups
    assert len(groups) == 1 and not any(p is dcn.clusterer.centroids for p in groups[0]["params"])
