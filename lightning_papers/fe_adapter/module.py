"""``FEAdapterClassifier``: a frozen timm image ViT + FE-Adapters + a linear head, as a LightningModule.

One class, four modes, so baselines share every line of code with the method:

* ``adapter``: FE-Adapters (dynamic dilated temporal conv) + head are trained, backbone frozen;
* ``frame_adapter``: the same adapters without temporal mixing (per-frame), backbone frozen;
* ``linear_probe``: only the head is trained;
* ``full_finetune``: backbone + head are trained (per-frame image model, frames averaged).

Clip logits: per-frame pooled features (CLS or average, after the backbone's final LayerNorm) are averaged
over the T frames, then Dropout and a Linear layer (the TSN-style consensus used by ST-Adapter).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lightning_papers.fe_adapter.adapter import (
    FEAdapterConfig,
    count_parameters,
    fe_adapters,
    inject_fe_adapters,
    set_num_frames,
)
from lightning_papers.fe_adapter.adapter_io import frozen_fingerprint
from lightning_papers.optim import warmup_cosine

__all__ = ["MODES", "FEAdapterClassifier", "build_backbone"]

MODES = ("adapter", "frame_adapter", "linear_probe", "full_finetune")
Mode = Literal["adapter", "frame_adapter", "linear_probe", "full_finetune"]
_CKPT_KEY = "fe_adapter"


def build_backbone(
    name: str, pretrained: bool = False, img_size: int = 224, seed: int = 0, **kwargs: Any
) -> nn.Module:
    """A timm ViT without classifier head (``num_classes=0``).

    With ``pretrained=False`` the random initialisation is drawn from a private generator seeded with
    ``seed`` (the global RNG is left untouched), so the same frozen backbone can be rebuilt when a
    checkpoint that stores only trainable weights is loaded.

    Raises:
        ValueError: ``name`` is not a timm model name.
    """
    import timm

    if not timm.is_model(name) and not name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models('vit_*')")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=img_size, **kwargs)


class FEAdapterClassifier(L.LightningModule):
    """Video classification with a frozen image ViT adapted by FE-Adapters.

    Args:
        backbone: timm model name, e.g. ``"vit_base_patch16_clip_224.openai"`` (paper-like CLIP ViT-B/16).
        pretrained: load timm's pretrained weights (may download once into the timm/HF cache).
        backbone_kwargs: extra ``timm.create_model`` kwargs (``patch_size``, ``embed_dim``, ``depth``,
            ``num_heads``, ``global_pool``, ``pretrained_cfg_overlay=dict(file=...)`` for local weights, ...).
        img_size: input frame size.
        num_frames: frames per clip T (clips of another length are accepted at run time).
        num_classes: number of emotion classes.
        mode: ``adapter`` | ``frame_adapter`` | ``linear_probe`` | ``full_finetune`` (module docstring).
        adapter: adapter settings (ignored by ``linear_probe``/``full_finetune``).
        head_dropout: dropout before the linear head.
        optimizer: optimizer factory for the trainable parameters (AdamW by default; it receives two
            param groups, the second — biases, norms, 1-D tensors — with ``weight_decay=0``).
        warmup_fraction: fraction of the optimizer steps with linear warm-up, then cosine decay.
        min_lr_ratio: cosine floor as a fraction of the base LR.
        label_smoothing: cross-entropy label smoothing.
        backbone_seed: seed of the random backbone when ``pretrained=False``.
        class_names: names used for the per-class recall logs (default ``class_0 ...``).

    Logged: ``train/loss``, ``train/acc``, ``val/loss``, ``val/uar`` (macro recall), ``val/war``
    (micro accuracy), ``val/recall/<class>``; the same under ``test/``.

    Example::

        >>> model = FEAdapterClassifier("vit_tiny_patch16_224", img_size=32, num_frames=4, num_classes=3,
        ...     backbone_kwargs=dict(patch_size=8, embed_dim=64, depth=2, num_heads=2),
        ...     adapter=FEAdapterConfig(bottleneck=8))
        >>> model(torch.randn(2, 4, 3, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        backbone: str = "vit_base_patch16_clip_224.openai",
        pretrained: bool = False,
        backbone_kwargs: dict[str, Any] | None = None,
        img_size: int = 224,
        num_frames: int = 8,
        num_classes: int = 7,
        mode: Mode = "adapter",
        adapter: FEAdapterConfig | None = None,
        head_dropout: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_fraction: float = 0.1,
        min_lr_ratio: float = 0.0,
        label_smoothing: float = 0.0,
        backbone_seed: int = 0,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if not 0.0 <= head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names, expected num_classes={num_classes}")
        adapter = adapter if adapter is not None else FEAdapterConfig()
        if isinstance(adapter, dict):
            adapter = FEAdapterConfig(**adapter)
        self.save_hyperparameters(ignore=["optimizer"])
        self.hparams["adapter"] = dataclasses.asdict(adapter)  # plain dict: YAML-friendly, rebuilt on load
        self.optimizer_factory = optimizer
        self.mode = mode
        self.num_frames = num_frames
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]

        self.backbone = build_backbone(
            backbone, pretrained=pretrained, img_size=img_size, seed=backbone_seed, **(backbone_kwargs or {})
        )
        if mode in ("adapter", "frame_adapter"):
            cfg = adapter if mode == "adapter" else adapter.frame_only()
            inject_fe_adapters(self.backbone, num_frames, cfg)
        elif mode == "linear_probe":
            self.backbone.requires_grad_(False)
        dim = int(getattr(self.backbone, "num_features", getattr(self.backbone, "embed_dim", 0)))
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(dim, num_classes))
        nn.init.trunc_normal_(self.head[1].weight, std=0.02)
        nn.init.zeros_(self.head[1].bias)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.strict_loading = True
        self._build_metrics()

    # ----------------------------------------------------------------------------------------- model
    def _build_metrics(self) -> None:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

        def collection() -> MetricCollection:
            return MetricCollection(
                {
                    # UAR = unweighted average recall = macro recall; WAR = weighted = plain (micro) accuracy.
                    # torchmetrics' MulticlassAccuracy defaults to *macro*, which would report UAR as WAR.
                    "uar": MulticlassRecall(self.num_classes, average="macro"),
                    "war": MulticlassAccuracy(self.num_classes, average="micro"),
                    "recall": MulticlassRecall(self.num_classes, average="none"),
                }
            )

        self.val_metrics = collection()
        self.test_metrics = collection()

    def trainable_parameters(self) -> int:
        """Number of parameters the optimizer updates (adapters + head, or everything when fine-tuning)."""
        return count_parameters(self, trainable_only=True)

    def total_parameters(self) -> int:
        """All parameters (frozen and trainable)."""
        return count_parameters(self, trainable_only=False)

    def train(self, mode: bool = True) -> FEAdapterClassifier:
        """Switch train/eval mode, keeping a frozen backbone in eval mode (its dropout/droppath off)."""
        super().train(mode)
        if self.mode != "full_finetune":
            self.backbone.eval()
            for adapter in fe_adapters(self.backbone):
                adapter.train(mode)
        return self

    def clip_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Per-clip features ``(B, D)``: per-frame pooled backbone features averaged over time."""
        if clips.ndim != 5:
            raise ValueError(f"expected clips of shape (B, T, C, H, W), got {tuple(clips.shape)}")
        b, t = clips.shape[:2]
        set_num_frames(self.backbone, t)
        tokens = self.backbone.forward_features(clips.flatten(0, 1))
        feats = self.backbone.forward_head(tokens, pre_logits=True)  # pooled + the backbone's fc_norm
        return feats.view(b, t, -1).mean(dim=1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for clips ``(B, T, C, H, W)``."""
        return self.head(self.clip_features(clips))

    # ---------------------------------------------------------------------------------------- steps
    def _log_skipped(self, batch, stage: str) -> None:
        if len(batch) > 2 and isinstance(
            batch[2], (list, tuple)
        ):  # paths of undecodable clips (VideoClipDataset)
            self.log(f"{stage}/skipped_clips", float(len(batch[2])), on_step=False, on_epoch=True,
                     reduce_fx="sum", sync_dist=True, batch_size=1)  # fmt: skip

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        clips, y = batch[0], batch[1]
        if len(y) == 0:
            # returning None would desynchronise DDP ranks; VideoClipDataset substitutes undecodable training
            # clips, so an empty batch means a loader that drops them: fail loudly instead
            raise RuntimeError(
                f"training batch {batch_idx} is empty; use a loader that never yields empty batches "
                "(VideoEmotionDataModule substitutes undecodable training clips)"
            )
        self._log_skipped(batch, "train")
        logits = self(clips)
        loss = self.criterion(logits, y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        self.log(
            "train/acc",
            (logits.argmax(-1) == y).float().mean(),
            on_epoch=True,
            on_step=False,
            batch_size=len(y),
        )
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        clips, y = batch[0], batch[1]
        self._log_skipped(batch, stage)
        if len(y) == 0:  # every clip of this evaluation batch was undecodable: nothing to score
            return
        logits = self(clips)
        self.log(f"{stage}/loss", self.criterion(logits, y), prog_bar=stage == "val", batch_size=len(y))
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, y)

    def _eval_epoch_end(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        values = metrics.compute()
        metrics.reset()
        self.log(f"{stage}/uar", values["uar"], prog_bar=True)
        self.log(f"{stage}/war", values["war"], prog_bar=True)
        for name, value in zip(self.class_names, values["recall"]):
            self.log(f"{stage}/recall/{name}", value)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        clips = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(clips).softmax(-1)

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        names = getattr(dm, "class_names", None)
        if names is not None and len(names) != self.num_classes:
            raise ValueError(
                f"the datamodule has {len(names)} classes ({list(names)[:5]}...) but num_classes={self.num_classes}"
            )
        if names is not None and self.hparams.class_names is None:
            self.class_names = [str(n) for n in names]

    # ------------------------------------------------------------------------------------ optimizer
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters in two groups: matrices (weight decay) and biases/norms/1-D (no decay)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.endswith(".bias") or "norm" in name else decay).append(p)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.parameter_groups())
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        warmup = min(int(round(self.hparams.warmup_fraction * total)), max(0, total - 1))
        sched = warmup_cosine(opt, warmup, total, self.hparams.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------------------------- checkpoint
    def trainable_keys(self) -> set[str]:
        """State-dict keys of the trained weights (adapters + head, with their persistent buffers)."""
        keys = {n for n, p in self.named_parameters() if p.requires_grad}
        params = {n for n, _ in self.named_parameters()}
        for name in self.state_dict():  # persistent adapter/head buffers travel with their trainable weights
            if name not in params and (not name.startswith("backbone.") or ".fe_adapter." in name):
                keys.add(name)
        return keys

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable weights; the frozen backbone is rebuilt from its name (and seed) on load."""
        keep = self.trainable_keys()
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {
            k: v for k, v in state.items() if k in keep or not k.startswith("backbone.")
        }
        checkpoint[_CKPT_KEY] = {
            "backbone": self.hparams.backbone,
            "pretrained": self.hparams.pretrained,
            "backbone_seed": self.hparams.backbone_seed,
            "mode": self.mode,
            "frozen_fingerprint": frozen_fingerprint(self.backbone),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Fill the frozen backbone weights from the rebuilt backbone and check it is the same one.

        Raises:
            ValueError: the checkpoint was written for another backbone or mode, a trainable tensor is
                missing, or the rebuilt frozen backbone differs from the one used in training.
        """
        meta = checkpoint.get(_CKPT_KEY)
        if meta is None:
            return  # a full state dict written by something else: load it as is
        if meta["backbone"] != self.hparams.backbone or meta["mode"] != self.mode:
            raise ValueError(
                f"checkpoint is for backbone={meta['backbone']!r} mode={meta['mode']!r}, this model is "
                f"backbone={self.hparams.backbone!r} mode={self.mode!r}"
            )
        state = checkpoint["state_dict"]
        own = self.state_dict()
        missing = sorted(k for k in self.trainable_keys() if k not in state)
        if missing:
            raise ValueError(
                f"checkpoint lacks trainable tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        for key, value in own.items():
            state.setdefault(key, value)
        expected = meta.get("frozen_fingerprint")
        if expected is not None and self.mode != "full_finetune":
            got = frozen_fingerprint(self.backbone)
            if got != expected:
                raise ValueError(
                    f"the rebuilt frozen backbone {meta['backbone']!r} differs from the one this checkpoint was "
                    f"trained with (weight fingerprint {got[:12]} vs {str(expected)[:12]}); pretrained weights or "
                    "backbone_seed changed"
                )
