"""Lightning wrapper: a classifier whose criterion is a Taylor loss (or any loss given by class path).

It is the shared :class:`lightning_papers.models.Classifier` with ``TaylorLoss()`` as default criterion, so it
logs ``train/loss``, ``train/acc``, ``val/acc``, ``test/acc`` and, on noisy-label datamodules,
``train/clean_acc`` (accuracy against the clean training labels) and ``train/memorized`` (fraction of
flipped samples predicted as their noisy label).
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lightning_papers.models import Classifier
from lightning_papers.taylor_loss.loss import TaylorLoss

__all__ = ["TaylorLossClassifier"]


class TaylorLossClassifier(Classifier):
    """Classification with a configurable criterion, ``TaylorLoss()`` (the shipped robust preset) by default.

    Args:
        net: network mapping inputs to logits (default: MLP for 64-dim digits).
        criterion: any ``criterion(logits, target)`` module, e.g. ``nn.CrossEntropyLoss`` or
            ``GeneralizedCrossEntropy`` by class path in YAML; default ``TaylorLoss()``.
        optimizer: optimizer factory (default Adam, lr 1e-3).
        num_classes: number of classes.

    Example::

        >>> from lightning_papers.models import MLP
        >>> model = TaylorLossClassifier(MLP(64, 10, hidden=(32,)))
        >>> type(model.criterion).__name__
        'TaylorLoss'
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        criterion: nn.Module | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        num_classes: int = 10,
    ) -> None:
        super().__init__(
            net=net,
            criterion=criterion if criterion is not None else TaylorLoss(),
            optimizer=optimizer,
            num_classes=num_classes,
        )
