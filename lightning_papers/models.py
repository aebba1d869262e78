"""Small shared models and LightningModules used by several methods' configs and benchmarks.

``Classifier`` trains any ``nn.Module`` with any criterion and optimizer given by class path, and reports
memorisation of noisy labels when its datamodule carries label noise. ``CausalLM`` trains a Hugging Face
Llama-style causal LM on ``{"input_ids", "labels"}`` batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lightning_papers.optim import warmup_cosine

__all__ = ["MLP", "CausalLM", "Classifier", "ConvNet"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """A multi-layer perceptron that flattens its input.

    Args:
        in_features: flattened input size.
        num_classes: output size.
        hidden: widths of the hidden layers.
        dropout: dropout after each hidden activation.
        activation: ``"relu"``, ``"gelu"``, ``"tanh"`` or ``"silu"``.

    Example::

        >>> MLP(64, 10, hidden=(32,))(torch.zeros(5, 8, 8)).shape
        torch.Size([5, 10])
    """

    def __init__(
        self,
        in_features: int = 64,
        num_classes: int = 10,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class ConvNet(nn.Sequential):
    """A small CNN for small images: ``len(channels)`` conv-BN-ReLU-maxpool stages, then a linear head.

    Example::

        >>> ConvNet(1, 10, channels=(8, 16))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: Sequence[int] = (32, 64)) -> None:
        layers: list[nn.Module] = []
        width = in_channels
        for c in channels:
            layers += [nn.Conv2d(width, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            width = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
        super().__init__(*layers)


class Classifier(L.LightningModule):
    """Supervised classification with an injectable network, criterion and optimizer.

    Args:
        net: the network mapping inputs to logits (default: an MLP for 64-dim digits).
        criterion: a loss ``criterion(logits, target)``; default ``nn.CrossEntropyLoss()``.
        optimizer: an ``OptimizerCallable`` (class path in YAML); default Adam(lr=1e-3).
        num_classes: number of classes (for accuracy).

    When the datamodule has label noise (``noisy_mask`` with any flipped sample), each training epoch
    ends by logging ``train/clean_acc`` (accuracy against the clean training labels) and
    ``train/memorized`` (fraction of flipped samples predicted as their *noisy* label).

    Example::

        >>> from lightning_papers.data import DigitsDataModule
        >>> model = Classifier(MLP(64, 10, hidden=(32,)))
        >>> trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
        ...                     enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(model, DigitsDataModule())  # doctest: +SKIP
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        criterion: nn.Module | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "criterion", "optimizer"])
        self.net = net if net is not None else MLP(64, num_classes)
        self.criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
        self.optimizer_factory = optimizer
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = self.criterion(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", on_epoch=True, on_step=False)
        self.log(f"{stage}/acc", acc, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).argmax(-1)

    def on_train_epoch_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        mask = getattr(dm, "noisy_mask", None)
        if mask is None or not bool(mask.any()) or not hasattr(dm, "train_eval_dataloader"):
            return
        was_training = self.training
        self.eval()
        preds, noisy, clean = [], [], []
        with torch.no_grad():
            for x, y_noisy, y_clean in dm.train_eval_dataloader():
                preds.append(self(x.to(self.device)).argmax(-1).cpu())
                noisy.append(y_noisy)
                clean.append(y_clean)
        self.train(was_training)
        pred, noisy_t, clean_t = torch.cat(preds), torch.cat(noisy), torch.cat(clean)
        self.log("train/clean_acc", (pred == clean_t).float().mean())
        self.log("train/memorized", (pred[mask] == noisy_t[mask]).float().mean())

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


class CausalLM(L.LightningModule):
    """A Llama-style causal language model (Hugging Face ``LlamaForCausalLM``) as a LightningModule.

    Args:
        model_config: ``LlamaConfig`` keyword arguments; defaults give a tiny byte-level model
            (vocab 256, hidden 64, 2 layers, 4 heads).
        pretrained_path: a local Hugging Face model directory to start from instead (no downloads).
        lr: peak learning rate of AdamW.
        betas: AdamW betas.
        weight_decay: AdamW weight decay (not applied to norms and biases).
        warmup_steps: linear warmup steps.
        min_lr_ratio: cosine floor as a fraction of ``lr``.

    The model is built in :meth:`configure_model` (so strategies that shard it can wrap it first).

    Example::

        >>> lm = CausalLM()
        >>> lm.configure_model()
        >>> ids = torch.randint(0, 256, (2, 16))
        >>> float(lm.training_step({"input_ids": ids, "labels": ids}, 0)) > 0
        True
    """

    def __init__(
        self,
        model_config: dict[str, Any] | None = None,
        pretrained_path: str | None = None,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.save_hyperparameters()
        self.model: nn.Module | None = None

    def build_config(self):
        """The ``LlamaConfig`` the model is built from (subclasses override)."""
        from transformers import LlamaConfig

        defaults: dict[str, Any] = dict(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=172,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        )
        defaults.update(self.hparams.model_config or {})
        return LlamaConfig(**defaults)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        from transformers import LlamaForCausalLM

        # subclasses may re-save hyperparameters without this argument
        pretrained = self.hparams.get("pretrained_path")
        if pretrained:
            from pathlib import Path

            path = Path(pretrained).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(f"pretrained_path is not a local model directory: {path}")
            self.model = LlamaForCausalLM.from_pretrained(str(path), local_files_only=True)
        else:
            self.model = LlamaForCausalLM(self.build_config())

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        return self.model(input_ids=input_ids, labels=labels, **kwargs)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch["input_ids"], batch["labels"]).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self(batch["input_ids"], batch["labels"]).loss
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.log("val/ppl", math.exp(min(float(loss), 50.0)))

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: weight decay on matrices only, none on norms and biases."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameter_groups(), lr=self.hparams.lr, betas=tuple(self.hparams.betas), eps=1e-8)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, max(0, total - 1))
        sched = warmup_cosine(opt, warmup, total, self.hparams.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
