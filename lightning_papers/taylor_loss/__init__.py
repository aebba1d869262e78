"""Evolved Taylor loss (Gao, Gouk & Hospedales, ICCV 2021): a label-noise-robust polynomial loss and its search.

``TaylorLoss()`` is a drop-in replacement for ``nn.CrossEntropyLoss`` (same call and options) whose default
coefficients come from our CMA-ES search over randomised tasks (``presets/robust.yaml``); the hand-designed
robust baselines and PolyLoss share its interface. ``LossSearch`` searches a loss on your own tasks.
"""

from lightning_papers.taylor_loss.baselines import (
    GeneralizedCrossEntropy,
    MeanAbsoluteError,
    NCEandRCE,
    PolyLoss,
    SymmetricCrossEntropy,
)
from lightning_papers.taylor_loss.criterion import LabelLoss
from lightning_papers.taylor_loss.data import CIFAR10DataModule, SklearnDataModule, SyntheticDataModule
from lightning_papers.taylor_loss.loss import (
    TaylorLoss,
    available_presets,
    ce_taylor_coefficients,
    coefficients_from_gradient_weights,
    gradient_weights_from_coefficients,
    load_preset,
    taylor_loss,
)
from lightning_papers.taylor_loss.module import TaylorLossClassifier
from lightning_papers.taylor_loss.pools import heldout_tasks, search_tasks
from lightning_papers.taylor_loss.search import LossSearch, SearchResult, search_taylor_loss
from lightning_papers.taylor_loss.tasks import LossTask, TaskData, load_task_data, train_and_evaluate

__all__ = [
    "CIFAR10DataModule",
    "GeneralizedCrossEntropy",
    "LabelLoss",
    "LossSearch",
    "LossTask",
    "MeanAbsoluteError",
    "NCEandRCE",
    "PolyLoss",
    "SearchResult",
    "SklearnDataModule",
    "SymmetricCrossEntropy",
    "SyntheticDataModule",
    "TaskData",
    "TaylorLoss",
    "TaylorLossClassifier",
    "available_presets",
    "ce_taylor_coefficients",
    "coefficients_from_gradient_weights",
    "gradient_weights_from_coefficients",
    "heldout_tasks",
    "load_preset",
    "load_task_data",
    "search_taylor_loss",
    "search_tasks",
    "taylor_loss",
    "train_and_evaluate",
]
