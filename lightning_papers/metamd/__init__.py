"""Meta Mirror Descent (MetaMD): mirror descent whose Bregman divergence is meta-learned (Gao et al., 2022).

* :class:`AdaptiveMirrorMap` — the default family: a time-varying quadratic potential, Adam's metric × a
  bounded learned factor of scale-free features (a fresh one is exactly Adam).
* :class:`MirrorMap` — the static, paper-literal family: a learnable strictly monotone elementwise map
  ``h = ∇ψ`` (``h``, ``h_inverse``, ``psi``, ``bregman``, save/load, ``identity()``, presets).
* :class:`MetaMirrorDescent` — the optimizer (exact ``torch.optim`` semantics; identity map == SGD,
  neutral adaptive map == Adam).
* :func:`meta_train` — meta-learns a map by minimising the regret bound, on task families or your own model.
* :class:`TaskSampler`, :class:`ModuleTaskSampler` and the embedded task families.

Example::

    >>> import torch
    >>> from lightning_papers.metamd import MetaMirrorDescent, MirrorMap
    >>> net = torch.nn.Linear(3, 1)
    >>> opt = MetaMirrorDescent(net.parameters(), lr=0.1, mirror_map=MirrorMap.identity())
"""

from lightning_papers.metamd.adaptive import AdaptiveMirrorMap
from lightning_papers.metamd.meta_training import (
    MetaTrainResult,
    meta_train,
    regret_bound,
    unrolled_regret_bound,
)
from lightning_papers.metamd.mirror_map import MirrorMap, available_presets
from lightning_papers.metamd.module_tasks import ModuleTaskSampler
from lightning_papers.metamd.optimizer import DEFAULT_PRESET, MetaMirrorDescent, resolve_mirror_map
from lightning_papers.metamd.tasks import (
    FunctionalTask,
    LeastSquaresSampler,
    LogisticRegressionSampler,
    MLPSampler,
    TaskMixtureSampler,
    TaskSampler,
    make_sampler,
)

__all__ = [
    "DEFAULT_PRESET",
    "AdaptiveMirrorMap",
    "FunctionalTask",
    "LeastSquaresSampler",
    "LogisticRegressionSampler",
    "MLPSampler",
    "MetaMirrorDescent",
    "MetaTrainResult",
    "MirrorMap",
    "TaskMixtureSampler",
    "ModuleTaskSampler",
    "TaskSampler",
    "available_presets",
    "make_sampler",
    "meta_train",
    "regret_bound",
    "resolve_mirror_map",
    "unrolled_regret_bound",
]
