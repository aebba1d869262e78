"""Deep concrete k-means as a LightningModule: autoencoder pretraining, k-means init, joint training.

Phase 1 (``pretrain_epochs``): the autoencoder learns to reconstruct (MSE). At the start of phase 2 the
centroids are initialised by k-means (k-means++ seeding, best of ``init_n_init``) on the embedded training
set, or (``centroid_init="input_kmeans"``) as the mean embedding of each cluster of scikit-learn's ``KMeans``
on the input, so joint training starts at the input's k-means partition. Phase 2 trains encoder, decoder and centroids jointly on
``recon_weight * MSE(x, dec(h)) + cluster_weight * L_cluster`` (the paper's Algorithm 1, no alternation),
where ``L_cluster`` is

* ``variant="concrete"``: the concrete k-means loss (Gumbel-softmax assignment, straight-through hard
  samples, annealed temperature, centroids learned by SGD);
* ``variant="dec"``: DEC's KL(P || Q) on Student-t soft assignments (IDEC with ``recon_weight > 0``);
* ``variant="dcn"``: DCN's ``||z - mu_{s(z)}||^2`` with hard nearest-centroid assignments and DCN's
  count-based centroid updates (Yang et al. 2017), the alternating method the paper argues against.

All variants share the embedding code (:class:`~lightning_papers.concrete_kmeans.ClusterEmbedding`: a
fixed-scale learned code, optionally beside a skip path of the input). With
``pretrain_epochs >= max_epochs`` it is the two-step baseline: k-means on the final features at ``fit`` end.

Under DDP the skip path and the centroids are computed from a sample gathered from every rank and
broadcast from rank 0 (identical on every rank); validation NMI / ARI / ACC accumulate a contingency
matrix synced across ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_papers.concrete_kmeans.autoencoders import make_conv_autoencoder, make_mlp_autoencoder
from lightning_papers.concrete_kmeans.core import (
    ConcreteKMeans,
    Objective,
    Schedule,
    dec_soft_assignment,
    dec_target_distribution,
    kmeans,
    temperature_at,
)
from lightning_papers.concrete_kmeans.distributed import (
    ContingencyARI,
    ContingencyNMI,
    _world_size,
    broadcast_from_rank_zero,
    gather_rows,
)
from lightning_papers.concrete_kmeans.embedding import ClusterEmbedding, EmbeddingNorm
from lightning_papers.metrics import ClusteringAccuracy

__all__ = ["DeepConcreteKMeans", "make_conv_autoencoder", "make_mlp_autoencoder"]

Variant = Literal["concrete", "dec", "dcn"]
CentroidInit = Literal["embedding", "input_kmeans"]


def _inputs(batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, dict):
        return batch["x"], batch.get("y")
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise TypeError(f"batches must be a tensor, (x, y) or {{'x', 'y'}}, got {type(batch).__name__}")


class DeepConcreteKMeans(L.LightningModule):
    """End-to-end deep k-means with the concrete (Gumbel-Softmax) estimator, plus DEC / DCN / two-step baselines.

    Args:
        n_clusters: number of clusters ``K`` (>= 2).
        in_features: flattened input size (default MLP autoencoder and the skip path).
        latent_dim: width of the learned code.
        hidden: hidden widths of the default MLP autoencoder (the paper's: ``(500, 500, 2000)``).
        architecture: ``"mlp"`` or ``"conv"`` (default autoencoders; conv needs ``input_shape``).
        input_shape: ``(C, H, W)`` for ``architecture="conv"``.
        encoder: your encoder ``x -> (B, latent_dim)`` (then also give ``decoder`` or set ``recon_weight=0``).
        decoder: your decoder ``h -> x`` (output reshaped to the input's shape).
        variant: ``"concrete"`` (the paper), ``"dec"`` (DEC / IDEC) or ``"dcn"`` (DCN-style), same code path.
        hard: straight-through one-hot assignments (True, the paper) or relaxed ones (False).
        objective: ``"quantization"`` ``||z - a^T mu||^2`` (the paper) or ``"distortion"``
            ``sum_k a_k ||z - mu_k||^2``.
        logit_scale: multiplies the logits ``-||z - mu||^2`` (1: the paper).
        normalize: scale-invariant concrete loss (within / total scatter of the batch; our earlier variant).
        embedding_norm: ``"scalar"`` (centre, one scale), ``"batch"`` (batch norm) or ``"none"``: a fixed-scale
            code cannot lower the k-means loss by shrinking (the literal loss's collapse).
        skip_dim: principal axes of the input kept in the embedding's skip path (0: none, the paper).
        learned_weight: share of the embedding's variance given to the learned code (1 without skip path).
        skip_trainable: let the clustering loss train the skip path's linear map (a learned metric).
        pretrain_epochs: autoencoder-only epochs before the centroids are initialised.
        recon_weight: weight of the reconstruction MSE in phase 2 (keeps features from collapsing).
        cluster_weight: weight of the clustering loss in phase 2.
        tau_start: temperature at the start of phase 2.
        tau_end: temperature at the end of the annealing.
        tau_schedule: ``"constant"``, ``"exponential"``, ``"linear"`` or ``"cosine"``.
        tau_anneal_epochs: epochs of annealing (default: all of phase 2; needs ``trainer.max_epochs``).
        optimizer: optimizer factory (``class_path`` in YAML); default Adam (lr 1e-3).
        lr_scheduler: optional LR scheduler factory (``class_path`` in YAML), stepped per epoch.
        centroid_lr: learning rate of the centroids (default: the optimizer's).
        init_n_init: k-means restarts for the centroid initialisation.
        centroid_init: ``"embedding"``: k-means++ and Lloyd on the embedded rows (the paper); ``"input_kmeans"``:
            scikit-learn's ``KMeans`` (``init_n_init`` restarts, ``seed``) on the flattened input rows, centroids =
            the mean embedding of each of its clusters (joint training starts at the input's k-means partition).
        init_max_samples: rows (over all ranks) used to fit the skip path and initialise the centroids.
        num_classes: label range of the validation data (default ``n_clusters``) for val/acc, val/nmi, val/ari.
        seed: seed of the centroid initialisation.

    Example::

        >>> model = DeepConcreteKMeans(n_clusters=3, in_features=4, latent_dim=2, hidden=(8,))
        >>> model.clusterer.centroids.shape  # skip path (4 input axes) + learned code (2)
        torch.Size([3, 6])
    """

    def __init__(
        self,
        n_clusters: int = 10,
        in_features: int | None = 64,
        latent_dim: int = 10,
        hidden: Sequence[int] = (256, 128),
        architecture: Literal["mlp", "conv"] = "mlp",
        input_shape: Sequence[int] | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        variant: Variant = "concrete",
        hard: bool = True,
        objective: Objective = "distortion",
        logit_scale: float = 1.0,
        normalize: bool = False,
        embedding_norm: EmbeddingNorm = "scalar",
        skip_dim: int = 64,
        learned_weight: float = 0.2,
        skip_trainable: bool = False,
        pretrain_epochs: int = 50,
        recon_weight: float = 1.0,
        cluster_weight: float = 1.0,
        tau_start: float = 1.0,
        tau_end: float = 0.1,
        tau_schedule: Schedule = "exponential",
        tau_anneal_epochs: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        centroid_lr: float | None = None,
        init_n_init: int = 10,
        centroid_init: CentroidInit = "embedding",
        init_max_samples: int = 20000,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder", "optimizer", "lr_scheduler"])
        if not isinstance(n_clusters, int) or n_clusters < 2:
            raise ValueError(f"n_clusters must be an integer >= 2, got {n_clusters!r}")
        if variant not in ("concrete", "dec", "dcn"):
            raise ValueError(f"variant must be 'concrete', 'dec' or 'dcn', got {variant!r}")
        if pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be >= 0, got {pretrain_epochs}")
        for name, value in (("recon_weight", recon_weight), ("cluster_weight", cluster_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if centroid_lr is not None and not centroid_lr > 0:
            raise ValueError(f"centroid_lr must be > 0, got {centroid_lr}")
        temperature_at(0.0, tau_start, tau_end, tau_schedule)  # validates the schedule arguments
        if centroid_init not in ("embedding", "input_kmeans"):
            raise ValueError(f"centroid_init must be 'embedding' or 'input_kmeans', got {centroid_init!r}")
        if encoder is None:
            if architecture == "mlp":
                if in_features is None:
                    raise ValueError("the default MLP autoencoder needs in_features")
                encoder, default_decoder = make_mlp_autoencoder(in_features, latent_dim, hidden)
            elif architecture == "conv":
                if input_shape is None or len(input_shape) != 3:
                    raise ValueError(f"architecture='conv' needs input_shape=(C, H, W), got {input_shape!r}")
                encoder, default_decoder = make_conv_autoencoder(input_shape, latent_dim)
                in_features = int(torch.tensor(input_shape).prod())
            else:
                raise ValueError(f"architecture must be 'mlp' or 'conv', got {architecture!r}")
            decoder = decoder if decoder is not None else default_decoder
        if decoder is None and recon_weight > 0:
            raise ValueError("a custom encoder needs a decoder too (or recon_weight=0 and pretrain_epochs=0)")
        self.embedding = ClusterEmbedding(encoder, latent_dim, in_features, skip_dim, learned_weight, embedding_norm,
                                          skip_trainable)
        self.decoder = decoder
        self.clusterer = ConcreteKMeans(n_clusters, self.embedding.dim, hard=hard, objective=objective,
                                        logit_scale=logit_scale, normalize=normalize)
        self.register_buffer("dcn_counts", torch.full((n_clusters,), 100.0))  # DCN's initial counts
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.tau = float(tau_start)
        classes = num_classes or n_clusters
        self.val_acc = ClusteringAccuracy(n_clusters, classes)
        self.val_nmi = ContingencyNMI(n_clusters, classes)
        self.val_ari = ContingencyARI(n_clusters, classes)
        self.val_objective = MeanMetric()
        # rows to initialise the skip path and centroids from instead of the train loader (the estimator sets
        # its whole input here, so the input k-means sees the rows in their order); not saved in checkpoints
        self.init_data: Tensor | None = None

    # -- model -------------------------------------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        """The wrapped encoder ``x -> h`` (before normalisation and the skip path)."""
        return self.embedding.encoder

    def encode(self, x: Tensor) -> Tensor:
        """The embedding ``z (B, embedding dim)`` the clusters live in."""
        return self.embedding(x)

    def forward(self, x: Tensor) -> Tensor:
        """Cluster ids ``(B,)`` of ``x`` (nearest centroid in the embedding)."""
        return self.clusterer.predict(self.encode(x))

    @property
    def in_phase_two(self) -> bool:
        return self.current_epoch >= self.hparams.pretrain_epochs

    @torch.no_grad()
    def embed_loader(self, loader, max_rows: int | None = None, raw: bool = False) -> tuple[Tensor, Tensor | None]:
        """Embed (or with ``raw`` just collect) the batches of ``loader`` up to ``max_rows``; ``(Z, y or None)`` on CPU."""
        was_training = self.training
        self.eval()
        zs, ys, seen = [], [], 0
        for batch in loader:
            x, y = _inputs(batch)
            zs.append(x.flatten(1).float().cpu() if raw else self.encode(x.to(self.device)).cpu())
            if y is not None:
                ys.append(torch.as_tensor(y).cpu())
            seen += len(x)
            if max_rows is not None and seen >= max_rows:
                break
        self.train(was_training)
        return torch.cat(zs), (torch.cat(ys) if ys else None)

    def _strategy(self):
        return self._trainer.strategy if self._trainer is not None else None

    def _sample(self, data, raw: bool) -> Tensor:
        """Rows for initialisation: from a tensor, or gathered equally from every rank's loader."""
        cap = int(self.hparams.init_max_samples)
        if isinstance(data, Tensor):
            if raw:
                return data[:cap].flatten(1).float().cpu()
            was_training = self.training
            self.eval()
            with torch.no_grad():
                z = torch.cat([self.encode(c.to(self.device)).cpu() for c in data[:cap].split(4096)])
            self.train(was_training)
            return z
        rows, _ = self.embed_loader(data, max_rows=cap, raw=raw)
        return gather_rows(self._strategy(), rows, cap)

    @torch.no_grad()
    def fit_skip(self, data) -> None:
        """Fit the embedding's skip path (PCA of the inputs) on ``data`` (tensor or loader); same on every rank."""
        if bool(self.embedding.skip_fitted):
            return
        self.embedding.fit_skip(self._sample(data, raw=True))
        strategy = self._strategy()
        for name in ("skip_mean", "skip_components", "skip_scale"):
            getattr(self.embedding, name).copy_(broadcast_from_rank_zero(strategy, getattr(self.embedding, name)))

    @torch.no_grad()
    def sync_norm_statistics(self) -> None:
        """Rank 0's running statistics of the code normalisation on every rank (evaluation embeds alike)."""
        strategy = self._strategy()
        if _world_size(strategy) == 1:
            return
        for name, buf in self.embedding.named_buffers():
            if name.startswith(("norm.", "skip_norm.")) and buf.is_floating_point():
                buf.copy_(broadcast_from_rank_zero(strategy, buf))

    def _sample_pair(self, data) -> tuple[Tensor, Tensor]:
        """The same rows flattened and embedded ``(X, Z)``; from a loader gathered equally from every rank."""
        cap = int(self.hparams.init_max_samples)
        if isinstance(data, Tensor):
            return data[:cap].flatten(1).float().cpu(), self._sample(data[:cap], raw=False)
        was_training = self.training
        self.eval()
        xs, zs, seen = [], [], 0
        with torch.no_grad():
            for batch in data:
                x, _ = _inputs(batch)
                xs.append(x.flatten(1).float().cpu())
                zs.append(self.encode(x.to(self.device)).cpu())
                seen += len(x)
                if seen >= cap:
                    break
        self.train(was_training)
        strategy = self._strategy()
        return gather_rows(strategy, torch.cat(xs), cap), gather_rows(strategy, torch.cat(zs), cap)

    @torch.no_grad()
    def init_centroids(self, data) -> None:
        """Initial centroids from ``data`` (tensor or loader), identical on every rank: k-means (k-means++
        seeding) on the embedded rows, or with ``centroid_init="input_kmeans"`` the mean embedding of each
        cluster of scikit-learn's ``KMeans`` on the input rows."""
        self.fit_skip(data)
        self.sync_norm_statistics()
        k = self.clusterer.n_clusters
        if self.hparams.centroid_init == "input_kmeans":
            from sklearn.cluster import KMeans

            x, z = self._sample_pair(data)
            if z.shape[0] < k:
                raise ValueError(f"need at least n_clusters={k} samples, got {z.shape[0]}")
            km = KMeans(k, n_init=int(self.hparams.init_n_init), random_state=int(self.hparams.seed)).fit(x.numpy())
            labels = torch.from_numpy(km.labels_.astype("int64"))
            sums = torch.zeros(k, z.shape[1], dtype=torch.float64).index_add_(0, labels, z.double())
            centroids = (sums / torch.bincount(labels, minlength=k).clamp_min(1)[:, None]).float()
        else:
            z = self._sample(data, raw=False)
            if z.shape[0] < k:
                raise ValueError(f"need at least n_clusters={k} samples, got {z.shape[0]}")
            centroids, _, _ = kmeans(z, k, self.hparams.init_n_init, seed=self.hparams.seed)
        centroids = broadcast_from_rank_zero(self._strategy(), centroids.to(self.clusterer.centroids))
        self.clusterer.set_centroids(centroids)
        self.dcn_counts.fill_(100.0)

    def _init_source(self):
        if self.init_data is not None:
            return self.init_data
        loader = self.trainer.train_dataloader
        if loader is None and self.trainer.datamodule is not None:
            loader = self.trainer.datamodule.train_dataloader()
        return loader

    # -- temperature -------------------------------------------------------------------------------
    def temperature(self, epoch_progress: float) -> float:
        """Temperature after ``epoch_progress`` epochs of phase 2."""
        hp = self.hparams
        span = hp.tau_anneal_epochs
        if span is None:
            max_epochs = self.trainer.max_epochs if self._trainer is not None else None
            span = (max_epochs - hp.pretrain_epochs) if max_epochs and max_epochs > 0 else 1
        return temperature_at(epoch_progress / max(span, 1), hp.tau_start, hp.tau_end, hp.tau_schedule)

    # -- Lightning hooks ---------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.fit_skip(self._init_source())

    def on_train_epoch_start(self) -> None:
        if self.in_phase_two and not bool(self.clusterer.initialized):
            self.init_centroids(self._init_source())

    def on_validation_epoch_start(self) -> None:
        self.sync_norm_statistics()

    def on_fit_end(self) -> None:
        self.sync_norm_statistics()
        # Two-step baseline (pretrain_epochs >= max_epochs): k-means on the final features.
        if not bool(self.clusterer.initialized):
            self.init_centroids(self._init_source())

    def _recon_loss(self, x: Tensor, z: Tensor) -> Tensor:
        if self.decoder is None:
            return x.new_zeros(())
        return nn.functional.mse_loss(self.decoder(self.embedding.learned(z)).reshape(x.shape), x)

    def _cluster_loss(self, z: Tensor) -> Tensor:
        variant = self.hparams.variant
        if variant == "dec":
            q = dec_soft_assignment(z, self.clusterer.centroids)
            p = dec_target_distribution(q)
            return nn.functional.kl_div(q.clamp_min(1e-12).log(), p, reduction="batchmean")
        if variant == "dcn":
            return self._dcn_loss(z)
        return self.clusterer(z, tau=self.tau).loss

    def _dcn_loss(self, z: Tensor) -> Tensor:
        """DCN (Yang et al. 2017): pull ``z`` to its nearest centroid, then move centroids by running means.

        DCN's per-sample step ``mu_k -= (mu_k - z_i) / c_k`` (``c_k`` counts, starting at 100) summed over a
        batch is the running mean ``(c_k mu_k + sum_i z_i) / (c_k + m_k)``; rows are gathered from every
        rank first, so the centroids stay identical under DDP.
        """
        mu = self.clusterer.centroids
        labels = self.clusterer.predict(z.detach())
        loss = 0.5 * (z - mu.detach()[labels].clone()).pow(2).sum(1).mean()
        with torch.no_grad():
            zs, ls = z.detach(), labels
            if _world_size(self._strategy()) > 1:
                zs = self.all_gather(zs).reshape(-1, zs.shape[1])
                ls = self.all_gather(ls).reshape(-1)
            k = self.clusterer.n_clusters
            sums = torch.zeros_like(mu).index_add_(0, ls, zs.to(mu.dtype))
            m = torch.bincount(ls, minlength=k).to(mu.dtype)
            mu.data.copy_((self.dcn_counts[:, None] * mu.data + sums) / (self.dcn_counts + m)[:, None])
            self.dcn_counts += m
        return loss

    def _idle(self) -> Tensor:
        """Zero times the parameters a step may not use (centroids while pretraining or under DCN, a trainable
        skip path while pretraining), so DDP needs no ``find_unused_parameters``."""
        idle = self.clusterer.centroids.sum()
        if self.embedding.skip_trainable:
            idle = idle + self.embedding.skip_weight.sum()
        return 0.0 * idle

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, _ = _inputs(batch)
        z = self.encode(x)
        recon = self._recon_loss(x, z)
        if not (self.in_phase_two and bool(self.clusterer.initialized)):
            self.log_dict({"train/recon": recon, "train/loss": recon})
            return recon + self._idle()
        if self.hparams.variant == "concrete":
            n_batches = max(int(self.trainer.num_training_batches), 1) if self._trainer is not None else 1
            progress = self.current_epoch - self.hparams.pretrain_epochs + (batch_idx + 1) / n_batches
            self.tau = self.temperature(progress)
            self.log("train/tau", self.tau)
        cluster = self._cluster_loss(z)
        loss = self.hparams.recon_weight * recon + self.hparams.cluster_weight * cluster
        self.log_dict({"train/recon": recon, "train/cluster": cluster, "train/loss": loss})
        return loss + self._idle()

    def validation_step(self, batch, batch_idx: int) -> None:
        if not bool(self.embedding.skip_fitted):  # sanity check before fit start: nothing to score yet
            return
        x, y = _inputs(batch)
        z = self.encode(x)
        self.log("val/recon", self._recon_loss(x, z), sync_dist=True)
        if not bool(self.clusterer.initialized):
            return
        dist = self.clusterer.distances(z)
        self.val_objective.update(dist.min(1).values)
        self.log("val/kmeans_objective", self.val_objective)
        if y is not None:
            pred = dist.argmin(1)
            for name in ("acc", "nmi", "ari"):
                metric = getattr(self, f"val_{name}")
                metric.update(pred, y)
                self.log(f"val/{name}", metric, prog_bar=True)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x, _ = _inputs(batch)
        return self(x)

    def configure_optimizers(self):
        hp = self.hparams
        network = [p for n, p in self.named_parameters() if not n.startswith("clusterer.")]
        groups: list[dict] = [{"params": network}]
        if hp.variant != "dcn":  # DCN moves its centroids by running means, not by gradients
            centroid_group: dict = {"params": [self.clusterer.centroids], "weight_decay": 0.0}
            if hp.centroid_lr is not None:
                centroid_group["lr"] = hp.centroid_lr
            groups.append(centroid_group)
        optimizer = self.optimizer_factory(groups)
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler_factory(optimizer),
                                                         "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["concrete_kmeans_tau"] = self.tau

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tau = float(checkpoint.get("concrete_kmeans_tau", self.hparams.tau_start))
