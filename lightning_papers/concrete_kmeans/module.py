"""Deep concrete k-means as a LightningModule: autoencoder pretraining, k-means init, joint training.

Phase 1 (``pretrain_epochs``): the autoencoder learns to reconstruct (MSE). At the start of phase 2 the
centroids are initialised by k-means (k-means++ seeding, best of ``init_n_init``) on the encoded training
set. Phase 2 trains encoder, decoder and centroids jointly on
``recon_weight * MSE(x, dec(enc(x))) + cluster_weight * L_cluster`` where ``L_cluster`` is the concrete
k-means loss (``variant="concrete"``) with an annealed temperature, or DEC's KL(P||Q) on Student-t soft
assignments (``variant="dec"``, the baseline of the benchmark; with ``recon_weight > 0`` it is IDEC).
With ``pretrain_epochs >= max_epochs`` it is the two-step baseline: the centroids come from k-means on
the final features (at the end of ``fit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning.pytorch as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_papers.concrete_kmeans.core import (
    ConcreteKMeans,
    Objective,
    Schedule,
    dec_soft_assignment,
    dec_target_distribution,
    temperature_at,
)

__all__ = ["DeepConcreteKMeans", "make_conv_autoencoder", "make_mlp_autoencoder"]


def make_mlp_autoencoder(
    in_features: int, latent_dim: int = 10, hidden: Sequence[int] = (256, 128)
) -> tuple[nn.Module, nn.Module]:
    """A fully-connected autoencoder ``in -> hidden... -> latent -> reversed(hidden)... -> in`` (ReLU).

    The embedding and the reconstruction layers are linear, as in DEC's ``d-500-500-2000-10`` autoencoder
    (pass ``hidden=(500, 500, 2000)`` for that one).

    Example::

        >>> enc, dec = make_mlp_autoencoder(64, 10, (32,))
        >>> dec(enc(torch.zeros(3, 64))).shape
        torch.Size([3, 64])
    """
    if in_features < 1 or latent_dim < 1:
        raise ValueError(f"in_features and latent_dim must be >= 1, got {in_features} and {latent_dim}")
    widths = [int(in_features), *map(int, hidden), int(latent_dim)]
    enc: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        enc.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            enc.append(nn.ReLU())
    back = widths[::-1]
    dec: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(back[:-1], back[1:])):
        dec.append(nn.Linear(a, b))
        if i < len(back) - 2:
            dec.append(nn.ReLU())
    return nn.Sequential(*enc), nn.Sequential(*dec)


def make_conv_autoencoder(
    input_shape: Sequence[int], latent_dim: int = 10, channels: Sequence[int] = (32, 64)
) -> tuple[nn.Module, nn.Module]:
    """A small convolutional autoencoder for ``(C, H, W)`` images (stride-2 convs, H and W divisible by 2^depth).

    Example::

        >>> enc, dec = make_conv_autoencoder((1, 8, 8), 10, (8, 16))
        >>> dec(enc(torch.zeros(2, 1, 8, 8))).shape
        torch.Size([2, 1, 8, 8])
    """
    c, h, w = (int(v) for v in input_shape)
    scale = 2 ** len(channels)
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} must be divisible by 2^len(channels) = {scale}")
    enc: list[nn.Module] = []
    width = c
    for ch in channels:
        enc += [nn.Conv2d(width, ch, 3, stride=2, padding=1), nn.ReLU()]
        width = ch
    flat = width * (h // scale) * (w // scale)
    enc += [nn.Flatten(), nn.Linear(flat, latent_dim)]
    dec: list[nn.Module] = [nn.Linear(latent_dim, flat), nn.ReLU(), nn.Unflatten(1, (width, h // scale, w // scale))]
    rev = [*channels[::-1][1:], c]
    for i, ch in enumerate(rev):
        dec.append(nn.ConvTranspose2d(width, ch, 3, stride=2, padding=1, output_padding=1))
        if i < len(rev) - 1:
            dec.append(nn.ReLU())
        width = ch
    return nn.Sequential(*enc), nn.Sequential(*dec)


def _inputs(batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, dict):
        return batch["x"], batch.get("y")
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise TypeError(f"batches must be a tensor, (x, y) or {{'x', 'y'}}, got {type(batch).__name__}")


class DeepConcreteKMeans(L.LightningModule):
    """End-to-end deep k-means with the concrete (Gumbel-Softmax) estimator, plus DEC / two-step baselines.

    Args:
        n_clusters: number of clusters ``K``.
        in_features: input size of the default MLP autoencoder (ignored when ``encoder`` is given).
        latent_dim: embedding size of the default autoencoders.
        hidden: hidden widths of the default MLP autoencoder.
        architecture: ``"mlp"`` or ``"conv"`` (default autoencoders; conv needs ``input_shape``).
        input_shape: ``(C, H, W)`` for ``architecture="conv"``.
        encoder: your encoder ``x -> (B, latent_dim)`` (then also give ``decoder`` or set ``recon_weight=0``).
        decoder: your decoder ``z -> x`` (output reshaped to the input's shape).
        variant: ``"concrete"`` (the paper) or ``"dec"`` (DEC / IDEC baseline, same code path).
        hard: straight-through one-hot assignments (True) or relaxed ones (False).
        objective: ``"quantization"`` ``||z - a^T mu||^2`` or ``"distortion"`` ``sum_k a_k ||z - mu_k||^2``.
        logit_scale: multiplies the logits ``-||z - mu||^2`` (inverse Gumbel-noise scale).
        normalize: scale-invariant concrete loss (within / total scatter; see ``concrete_kmeans_loss``).
        pretrain_epochs: autoencoder-only epochs before the centroids are initialised.
        recon_weight: weight of the reconstruction MSE in phase 2 (keeps features from collapsing).
        cluster_weight: weight of the clustering loss in phase 2.
        tau_start: temperature at the start of phase 2.
        tau_end: temperature at the end of the annealing.
        tau_schedule: ``"constant"``, ``"exponential"``, ``"linear"`` or ``"cosine"``.
        tau_anneal_epochs: epochs of annealing (default: all of phase 2; needs ``trainer.max_epochs``).
        lr: Adam learning rate of the autoencoder.
        centroid_lr: Adam learning rate of the centroids (default ``lr``).
        weight_decay: Adam weight decay of the autoencoder.
        init_n_init: k-means restarts for the centroid initialisation.
        seed: seed of the centroid initialisation.

    Example::

        >>> model = DeepConcreteKMeans(n_clusters=3, in_features=4, latent_dim=2, hidden=(8,))
        >>> model.clusterer.centroids.shape
        torch.Size([3, 2])
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
        variant: Literal["concrete", "dec"] = "concrete",
        hard: bool = True,
        objective: Objective = "distortion",
        logit_scale: float = 10.0,
        normalize: bool = True,
        pretrain_epochs: int = 50,
        recon_weight: float = 1.0,
        cluster_weight: float = 0.1,
        tau_start: float = 1.0,
        tau_end: float = 0.1,
        tau_schedule: Schedule = "exponential",
        tau_anneal_epochs: int | None = None,
        lr: float = 1e-3,
        centroid_lr: float | None = None,
        weight_decay: float = 0.0,
        init_n_init: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder"])
        if variant not in ("concrete", "dec"):
            raise ValueError(f"variant must be 'concrete' or 'dec', got {variant!r}")
        if pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be >= 0, got {pretrain_epochs}")
        for name, value in (("recon_weight", recon_weight), ("cluster_weight", cluster_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if lr <= 0 or (centroid_lr is not None and centroid_lr <= 0):
            raise ValueError(f"learning rates must be > 0, got lr={lr}, centroid_lr={centroid_lr}")
        temperature_at(0.0, tau_start, tau_end, tau_schedule)  # validates the schedule arguments
        if encoder is None:
            if architecture == "mlp":
                if in_features is None:
                    raise ValueError("the default MLP autoencoder needs in_features")
                encoder, default_decoder = make_mlp_autoencoder(in_features, latent_dim, hidden)
            elif architecture == "conv":
                if input_shape is None or len(input_shape) != 3:
                    raise ValueError(f"architecture='conv' needs input_shape=(C, H, W), got {input_shape!r}")
                encoder, default_decoder = make_conv_autoencoder(input_shape, latent_dim)
            else:
                raise ValueError(f"architecture must be 'mlp' or 'conv', got {architecture!r}")
            decoder = decoder if decoder is not None else default_decoder
        if decoder is None and recon_weight > 0:
            raise ValueError("a custom encoder needs a decoder too (or recon_weight=0 and pretrain_epochs=0)")
        self.encoder, self.decoder = encoder, decoder
        self.clusterer = ConcreteKMeans(n_clusters, latent_dim, hard=hard, objective=objective,
                                        logit_scale=logit_scale, normalize=normalize)
        self.tau = float(tau_start)
        self._val_z: list[Tensor] = []
        self._val_y: list[Tensor] = []

    # -- model -------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Features ``(B, latent_dim)``."""
        z = self.encoder(x)
        if z.dim() != 2 or z.shape[1] != self.clusterer.dim:
            raise ValueError(f"encoder must return (B, {self.clusterer.dim}) features, got {tuple(z.shape)}")
        return z

    def forward(self, x: Tensor) -> Tensor:
        """Cluster ids ``(B,)`` of ``x`` (nearest centroid in feature space)."""
        return self.clusterer.predict(self.encode(x))

    @property
    def in_phase_two(self) -> bool:
        return self.current_epoch >= self.hparams.pretrain_epochs

    @torch.no_grad()
    def embed_loader(self, loader) -> tuple[Tensor, Tensor | None]:
        """Encode every batch of ``loader``; returns ``(Z, y or None)`` on the CPU."""
        was_training = self.training
        self.eval()
        zs, ys = [], []
        for batch in loader:
            x, y = _inputs(batch)
            zs.append(self.encode(x.to(self.device)).cpu())
            if y is not None:
                ys.append(torch.as_tensor(y).cpu())
        self.train(was_training)
        return torch.cat(zs), (torch.cat(ys) if ys else None)

    @torch.no_grad()
    def init_centroids(self, data: Tensor | DataLoader) -> None:
        """k-means (k-means++ seeding) on the encoded ``data`` (tensor of inputs or a DataLoader)."""
        if isinstance(data, Tensor):
            was_training = self.training
            self.eval()
            z = self.encode(data.to(self.device)).cpu()
            self.train(was_training)
        else:
            z, _ = self.embed_loader(data)
        self.clusterer.init_centroids(z, n_init=self.hparams.init_n_init, seed=self.hparams.seed)

    def _train_loader(self):
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
    def on_train_epoch_start(self) -> None:
        if self.in_phase_two and not bool(self.clusterer.initialized):
            self.init_centroids(self._train_loader())

    def on_fit_end(self) -> None:
        # Two-step baseline (pretrain_epochs >= max_epochs): k-means on the final features.
        if not bool(self.clusterer.initialized):
            self.init_centroids(self._train_loader())

    def _recon_loss(self, x: Tensor, z: Tensor) -> Tensor:
        if self.decoder is None:
            return x.new_zeros(())
        return nn.functional.mse_loss(self.decoder(z).reshape(x.shape), x)

    def _cluster_loss(self, z: Tensor) -> Tensor:
        if self.hparams.variant == "dec":
            q = dec_soft_assignment(z, self.clusterer.centroids)
            p = dec_target_distribution(q)
            return nn.functional.kl_div(q.clamp_min(1e-12).log(), p, reduction="batchmean")
        return self.clusterer(z, tau=self.tau).loss

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, _ = _inputs(batch)
        z = self.encode(x)
        recon = self._recon_loss(x, z)
        if not (self.in_phase_two and bool(self.clusterer.initialized)):
            self.log_dict({"train/recon": recon, "train/loss": recon})
            return recon
        if self.hparams.variant == "concrete":
            n_batches = max(int(self.trainer.num_training_batches), 1) if self._trainer is not None else 1
            progress = self.current_epoch - self.hparams.pretrain_epochs + (batch_idx + 1) / n_batches
            self.tau = self.temperature(progress)
            self.log("train/tau", self.tau)
        cluster = self._cluster_loss(z)
        loss = self.hparams.recon_weight * recon + self.hparams.cluster_weight * cluster
        self.log_dict({"train/recon": recon, "train/cluster": cluster, "train/loss": loss})
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = _inputs(batch)
        z = self.encode(x)
        self.log("val/recon", self._recon_loss(x, z))
        self._val_z.append(z.detach())
        if y is not None:
            self._val_y.append(torch.as_tensor(y).detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val_z:
            return
        z = torch.cat(self._val_z)
        y = torch.cat(self._val_y) if len(self._val_y) == len(self._val_z) else None
        self._val_z, self._val_y = [], []
        if not bool(self.clusterer.initialized):
            return
        from lightning_papers.metrics import adjusted_rand_index, clustering_accuracy, normalized_mutual_info

        self.log("val/kmeans_objective", self.clusterer.kmeans_objective(z))
        if y is not None:
            pred = self.clusterer.predict(z).cpu()
            y = y.cpu()
            self.log_dict(
                {
                    "val/nmi": normalized_mutual_info(pred, y),
                    "val/ari": adjusted_rand_index(pred, y),
                    "val/acc": clustering_accuracy(pred, y),
                },
                prog_bar=True,
            )

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x, _ = _inputs(batch)
        return self(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        groups = [{"params": [p for n, p in self.named_parameters() if not n.startswith("clusterer.")],
                   "weight_decay": hp.weight_decay}]
        groups.append({"params": [self.clusterer.centroids], "lr": hp.centroid_lr or hp.lr, "weight_decay": 0.0})
        return torch.optim.Adam(groups, lr=hp.lr)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["concrete_kmeans_tau"] = self.tau

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tau = float(checkpoint.get("concrete_kmeans_tau", self.hparams.tau_start))
