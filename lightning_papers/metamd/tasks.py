"""Task families for meta-training and evaluating mirror maps, and the interface for a user's own family.

A task is a differentiable training loss of a list of parameter tensors (a *functional* model), its
initial parameters ``θ_1`` and, optionally, an evaluation function on held-out data. A
:class:`TaskSampler` draws tasks from a family by integer seed, so meta-training is reproducible and
resumable. Embedded families (no downloads): least squares with badly scaled features, multinomial
logistic regression and small ReLU MLPs on subsets of scikit-learn's digits or MNIST-1D.

``split_seed`` decides which half of a dataset the training subsets come from (the rest is the test pool):
meta-training uses one split, the benchmark a different one, so held-out tasks see different data.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_papers.validation import check_each

__all__ = [
    "FunctionalTask",
    "LeastSquaresSampler",
    "LogisticRegressionSampler",
    "MLPSampler",
    "TaskMixtureSampler",
    "TaskSampler",
    "make_sampler",
]


@dataclass
class FunctionalTask:
    """One optimisation problem: ``loss(params)`` from initial ``params``.

    Args:
        params: initial parameters ``θ_1`` (order matters for role/tensor slot assignment: weights in
            layer order, each followed by its bias, like ``nn.Module.parameters()``).
        loss: the full training loss as a function of a list of tensors shaped like ``params``.
        name: a readable description.
        evaluate: optional metrics on held-out data, ``evaluate(params) -> {"test_acc": ...}``.
        reference: optional reference solution ``θ*`` (training data only); ``meta_train`` computes one
            with Adam when missing.
    """

    params: list[Tensor]
    loss: Callable[[Sequence[Tensor]], Tensor]
    name: str = ""
    evaluate: Callable[[Sequence[Tensor]], dict[str, float]] | None = None
    reference: list[Tensor] | None = None
    info: dict = field(default_factory=dict)


class TaskSampler(ABC):
    """A family of tasks. Subclass and implement :meth:`sample` for your own family.

    Example::

        >>> class Quadratics(TaskSampler):
        ...     def sample(self, seed):
        ...         g = torch.Generator().manual_seed(seed)
        ...         a = torch.rand(5, generator=g) + 0.1
        ...         return FunctionalTask([torch.ones(5)], lambda p: 0.5 * (a * p[0] ** 2).sum())
        >>> Quadratics().sample(0).loss([torch.zeros(5)]).item()
        0.0
    """

    @abstractmethod
    def sample(self, seed: int) -> FunctionalTask:
        """Return the task with this seed (same seed, same task)."""


# ---------------------------------------------------------------------------------------------- data
@lru_cache(maxsize=4)
def _dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    if name == "mnist1d":
        from lightning_papers.data import make_mnist1d

        x, y = make_mnist1d(n_samples=4000, seed=0)
        x = x.reshape(len(x), -1).astype(np.float32)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)  # standardised signals
        return x, y.astype(np.int64)
    raise ValueError(f"dataset must be 'digits' or 'mnist1d', got {name!r}")


def _split(name: str, split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = _dataset(name)
    perm = np.random.default_rng(10_000 + split_seed).permutation(len(x))
    cut = len(x) // 2
    tr, te = perm[:cut], perm[cut:]
    return x[tr], y[tr], x[te], y[te]


def _linear_init(fan_out: int, fan_in: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    # the default init of nn.Linear: U(±1/sqrt(fan_in)) for weight and bias
    bound = 1.0 / math.sqrt(fan_in)
    w = (torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=g) * 2 - 1) * bound
    return w, b


def mlp_forward(params: Sequence[Tensor], x: Tensor) -> Tensor:
    """Logits of a ReLU MLP given ``[W1, b1, W2, b2, ...]``."""
    n = len(params) // 2
    for i in range(n):
        x = F.linear(x, params[2 * i], params[2 * i + 1])
        if i < n - 1:
            x = torch.relu(x)
    return x


def _classification_task(
    name: str, dataset: str, split_seed: int, n_train: int, seed: int, hidden: Sequence[int], n_test: int
) -> FunctionalTask:
    xtr, ytr, xte, yte = _split(dataset, split_seed)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(xtr), size=min(n_train, len(xtr)), replace=False)
    tidx = rng.choice(len(xte), size=min(n_test, len(xte)), replace=False)
    x, y = torch.from_numpy(xtr[idx]), torch.from_numpy(ytr[idx])
    xt, yt = torch.from_numpy(xte[tidx]), torch.from_numpy(yte[tidx])
    g = torch.Generator().manual_seed(seed)
    widths = [x.shape[1], *hidden, 10]
    params: list[Tensor] = []
    for fin, fout in zip(widths[:-1], widths[1:]):
        params.extend(_linear_init(fout, fin, g))

    def loss(p: Sequence[Tensor]) -> Tensor:
        return F.cross_entropy(mlp_forward(p, x), y)

    def evaluate(p: Sequence[Tensor]) -> dict[str, float]:
        with torch.no_grad():
            logits = mlp_forward(p, xt)
            return {
                "test_acc": float((logits.argmax(1) == yt).float().mean()),
                "test_loss": float(F.cross_entropy(logits, yt)),
            }

    return FunctionalTask(
        params,
        loss,
        name=name,
        evaluate=evaluate,
        info={"dataset": dataset, "hidden": list(hidden), "n_train": len(idx), "seed": seed},
    )


class MLPSampler(TaskSampler):
    """ReLU MLPs trained full-batch with cross-entropy on a random subset of digits or MNIST-1D.

    Args:
        dataset: ``"digits"`` (64 features) or ``"mnist1d"`` (40 features, standardised).
        hidden_choices: hidden-layer widths to draw from per task.
        n_train: training examples per task.
        n_test: test examples per task (from the other half of the split).
        split_seed: which train/test split of the dataset.
    """

    def __init__(
        self,
        dataset: str = "digits",
        hidden_choices: Sequence[Sequence[int]] = ((32,), (64,), (32, 32)),
        n_train: int = 256,
        n_test: int = 512,
        split_seed: int = 0,
    ) -> None:
        _dataset(dataset)  # validates the name early
        if n_train < 2:
            raise ValueError(f"n_train must be >= 2, got {n_train}")
        if not hidden_choices:
            raise ValueError("hidden_choices must not be empty")
        self.dataset, self.n_train, self.n_test, self.split_seed = dataset, n_train, n_test, split_seed
        self.hidden_choices = [tuple(int(w) for w in h) for h in hidden_choices]

    def sample(self, seed: int) -> FunctionalTask:  # noqa: D102
        hidden = self.hidden_choices[np.random.default_rng(seed + 7).integers(len(self.hidden_choices))]
        name = f"mlp_{self.dataset}{list(hidden)}_s{seed}"
        return _classification_task(
            name, self.dataset, self.split_seed, self.n_train, seed, hidden, self.n_test
        )


class LogisticRegressionSampler(TaskSampler):
    """Multinomial logistic regression (convex) on a random subset of digits or MNIST-1D."""

    def __init__(
        self, dataset: str = "digits", n_train: int = 256, n_test: int = 512, split_seed: int = 0
    ) -> None:
        _dataset(dataset)
        self.dataset, self.n_train, self.n_test, self.split_seed = dataset, n_train, n_test, split_seed

    def sample(self, seed: int) -> FunctionalTask:  # noqa: D102
        return _classification_task(
            f"logreg_{self.dataset}_s{seed}",
            self.dataset,
            self.split_seed,
            self.n_train,
            seed,
            (),
            self.n_test,
        )


class LeastSquaresSampler(TaskSampler):
    """Linear least squares ``½·mean((Xw + b − y)²)`` with features of very different scales.

    Args:
        dim: number of features.
        n: number of examples.
        scale_range: feature scales are log-uniform in this range (ill-conditioning diagonal scaling can fix).
        noise: label noise standard deviation.
    """

    def __init__(
        self, dim: int = 20, n: int = 100, scale_range: tuple[float, float] = (0.1, 3.0), noise: float = 0.1
    ) -> None:
        check_each((dim >= 1, f"dim must be >= 1, got {dim}"), (n >= 1, f"n must be >= 1, got {n}"))
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.dim, self.n, self.scale_range, self.noise = dim, n, (lo, hi), noise

    def sample(self, seed: int) -> FunctionalTask:  # noqa: D102
        g = torch.Generator().manual_seed(seed)
        lo, hi = self.scale_range
        scales = torch.exp(torch.empty(self.dim).uniform_(math.log(lo), math.log(hi), generator=g))
        x = torch.randn(self.n, self.dim, generator=g) * scales
        w_true = torch.randn(self.dim, 1, generator=g)
        y = x @ w_true + self.noise * torch.randn(self.n, 1, generator=g)
        params = [torch.zeros(1, self.dim), torch.zeros(1)]

        def loss(p: Sequence[Tensor]) -> Tensor:
            return 0.5 * ((x @ p[0].T + p[1] - y) ** 2).mean()

        return FunctionalTask(params, loss, name=f"lsq_d{self.dim}_s{seed}", info={"seed": seed})


class TaskMixtureSampler(TaskSampler):
    """Draws from several families with given weights (the family is chosen by the seed)."""

    def __init__(self, samplers: Sequence[TaskSampler], weights: Sequence[float] | None = None) -> None:
        if not samplers:
            raise ValueError("TaskMixtureSampler needs at least one sampler")
        w = np.asarray(weights if weights is not None else [1.0] * len(samplers), dtype=float)
        if len(w) != len(samplers) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"weights must be {len(samplers)} non-negative numbers with a positive sum, got {weights}"
            )
        self.samplers, self.p = list(samplers), w / w.sum()

    def sample(self, seed: int) -> FunctionalTask:  # noqa: D102
        k = int(np.random.default_rng(seed + 99).choice(len(self.samplers), p=self.p))
        return self.samplers[k].sample(seed)


_FAMILIES: dict[str, Callable[..., TaskSampler]] = {
    "least_squares": LeastSquaresSampler,
    "logistic_digits": lambda **kw: LogisticRegressionSampler("digits", **kw),
    "logistic_mnist1d": lambda **kw: LogisticRegressionSampler("mnist1d", **kw),
    "mlp_digits": lambda **kw: MLPSampler("digits", **kw),
    "mlp_mnist1d": lambda **kw: MLPSampler("mnist1d", **kw),
}


#: Adam's best full-batch learning rate per family on development tasks (split 0 / first text half; grid
#: 1e-3..1e-1, 2 tasks, scored by mean log training loss over 150 steps): the base lr of meta-training tasks.
FAMILY_LR: dict[str, float] = {
    "least_squares": 1e-1,
    "logistic_digits": 1e-1,
    "logistic_mnist1d": 1e-1,
    "mlp_digits": 3e-2,
    "mlp_mnist1d": 3e-2,
    "cnn_digits": 1e-1,
    "cnn_mnist1d": 3e-2,
    "cnn_deep_digits": 3e-2,
    "lm_pydoc": 3e-2,
    "lm_stdlib": 1e-2,
}
_MODULE_FAMILIES = ("cnn_digits", "cnn_mnist1d", "cnn_deep_digits", "lm_pydoc", "lm_stdlib")


class _WithLR(TaskSampler):
    """Stores the family's base learning rate in each task's ``info["lr"]``."""

    def __init__(self, sampler: TaskSampler, lr: float) -> None:
        self.sampler, self.lr = sampler, lr

    def sample(self, seed: int) -> FunctionalTask:  # noqa: D102
        task = self.sampler.sample(seed)
        task.info["lr"] = self.lr
        return task


def make_sampler(families: str | Sequence[str], **kwargs) -> TaskSampler:
    """A sampler for one family name or a uniform mixture of several.

    Names: ``least_squares``, ``logistic_digits``, ``logistic_mnist1d``, ``mlp_digits``, ``mlp_mnist1d``,
    ``cnn_digits``, ``cnn_mnist1d``, ``cnn_deep_digits``, ``lm_pydoc``, ``lm_stdlib``. ``kwargs`` (e.g.
    ``split_seed``, ``n_train``) go to every family that accepts them. Tasks carry the family's base
    learning rate (:data:`FAMILY_LR`) in ``info["lr"]``.

    Raises:
        ValueError: an unknown family name.
    """
    import inspect

    names = [families] if isinstance(families, str) else list(families)
    out = []
    known = sorted([*_FAMILIES, *_MODULE_FAMILIES])
    for name in names:
        if name in _MODULE_FAMILIES:
            from lightning_papers.metamd.module_tasks import module_family

            out.append(
                _WithLR(
                    module_family(name, kwargs.get("split_seed", 0), kwargs.get("n_train", 256)),
                    FAMILY_LR[name],
                )
            )
            continue
        if name not in _FAMILIES:
            raise ValueError(f"unknown task family {name!r}; expected one of {known}")
        factory = _FAMILIES[name]
        target = {
            "least_squares": LeastSquaresSampler,
            "mlp_digits": MLPSampler,
            "mlp_mnist1d": MLPSampler,
        }.get(name, LogisticRegressionSampler)
        ok = set(inspect.signature(target.__init__).parameters)
        out.append(_WithLR(factory(**{k: v for k, v in kwargs.items() if k in ok}), FAMILY_LR[name]))
    return out[0] if len(out) == 1 else TaskMixtureSampler(out)
