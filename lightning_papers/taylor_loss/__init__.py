"""Evolved Taylor loss (Gao, Gouk & Hospedales, ICCV 2021): a label-noise-robust polynomial loss and its search.

``TaylorLoss()`` is a drop-in replacement for ``nn.CrossEntropyLoss`` whose default coefficients come from
our CMA-ES search (``presets/robust.yaml``); the hand-designed robust baselines share its call signature.
"""

from lightning_papers.taylor_loss.data import CIFAR10DataModule
from lightning_papers.taylor_loss.loss import (
    GeneralizedCrossEntropy,
    MeanAbsoluteError,
    NCEandRCE,
    SymmetricCrossEntropy,
    TaylorLoss,
    available_presets,
    ce_taylor_coefficients,
    load_preset,
    taylor_loss,
)
from lightning_papers.taylor_loss.module import TaylorLossClassifier
from lightning_papers.taylor_loss.search import (
    LossSearch,
    SearchResult,
    SearchTask,
    load_task_data,
    search_taylor_loss,
    train_and_evaluate,
)

__all__ = [
    "CIFAR10DataModule",
    "GeneralizedCrossEntropy",
    "LossSearch",
    "MeanAbsoluteError",
    "NCEandRCE",
    "SearchResult",
    "SearchTask",
    "SymmetricCrossEntropy",
    "TaylorLoss",
    "TaylorLossClassifier",
    "available_presets",
    "ce_taylor_coefficients",
    "load_preset",
    "load_task_data",
    "search_taylor_loss",
    "taylor_loss",
    "train_and_evaluate",
]
