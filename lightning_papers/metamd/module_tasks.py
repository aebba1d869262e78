"""Tasks from a user's own ``nn.Module`` / ``LightningModule`` and data, run with ``torch.func.functional_call``.

A task is (fresh init of the model, a random subset of the data) trained full-batch on that subset, so a
map can be meta-learned on small versions of the user's own problem. Also the embedded CNN and tiny
causal-LM families used by the shipped map and the benchmark.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lightning_papers.metamd.tasks import FunctionalTask, TaskSampler, _split

__all__ = ["ModuleTaskSampler", "TinyCausalLM", "make_cnn", "module_family"]

_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
}


def _resolve_loss(loss: str | Callable | None) -> Callable | None:
    if loss is None or callable(loss):
        return loss
    if loss in _LOSSES:
        return _LOSSES[loss]
    if "." in loss:
        import importlib

        mod, _, attr = loss.rpartition(".")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"could not import loss {loss!r}: {err}") from None
    raise ValueError(f"loss must be a callable, one of {sorted(_LOSSES)} or a dotted path, got {loss!r}")


def _dataset_of(data: Any):
    """A map-style dataset (or a tuple of tensors) from a DataLoader, LightningDataModule, Dataset or tensors."""
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        return torch.utils.data.TensorDataset(*data), None
    if hasattr(data, "train_dataloader") and not isinstance(data, torch.utils.data.DataLoader):
        data.prepare_data()
        data.setup("fit")
        data = data.train_dataloader()
    if isinstance(data, torch.utils.data.DataLoader):
        return data.dataset, data.collate_fn
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return data, None
    raise TypeError(
        "data must be a DataLoader, a LightningDataModule, a map-style Dataset or a tuple of tensors, "
        f"got {type(data).__name__}"
    )


class ModuleTaskSampler(TaskSampler):
    """Tasks = (fresh init of ``model``, a random subset of ``data``) trained full-batch.

    Args:
        model: an ``nn.Module`` or ``LightningModule`` (copied; re-initialised per task with every submodule's
            ``reset_parameters`` under a forked RNG seeded by the task seed — the global RNG is untouched).
        data: a DataLoader, LightningDataModule (its ``train_dataloader``), map-style Dataset or tensors.
        loss: ``loss(output, target)`` for ``(input, target)`` batches: a callable, ``"cross_entropy"``,
            ``"mse"`` or a dotted path. None with a ``LightningModule``: its ``training_step(batch, 0)``.
        n_examples: size of each task's data subset.
        n_test: size of a disjoint subset for ``evaluate`` (accuracy for class targets; 0 disables).
        lr: base learning rate stored in each task (``meta_train`` unrolls at it; use your Adam lr).
        name: task name prefix.

    Raises:
        TypeError / ValueError: unsupported data or loss, or no trainable parameters.

    Example::

        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> data = (torch.randn(64, 4), torch.randint(0, 3, (64,)))
        >>> task = ModuleTaskSampler(net, data, "cross_entropy", n_examples=32).sample(0)
        >>> float(task.loss(task.params)) > 0
        True
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        loss: str | Callable | None = None,
        n_examples: int = 256,
        n_test: int = 0,
        lr: float = 1e-3,
        name: str = "module",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or LightningModule, got {type(model).__name__}")
        self.model = copy.deepcopy(model)
        self.loss_fn = _resolve_loss(loss)
        is_lightning = hasattr(self.model, "training_step") and hasattr(self.model, "configure_optimizers")
        if self.loss_fn is None and not is_lightning:
            raise ValueError(
                "loss is required for a plain nn.Module (only a LightningModule has a training_step)"
            )
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        if not self.names:
            raise ValueError("the model has no trainable parameters")
        self.dataset, self.collate = _dataset_of(data)
        if n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {n_examples}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.n_examples, self.n_test, self.lr, self.name = int(n_examples), int(n_test), float(lr), name

    def _batch(self, idx: np.ndarray):
        items = [self.dataset[int(i)] for i in idx]
        collate = self.collate or torch.utils.data.default_collate
        return collate(items)

    def _fresh(self, seed: int) -> nn.Module:
        m = copy.deepcopy(self.model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for mod in m.modules():
                if hasattr(mod, "reset_parameters") and callable(mod.reset_parameters):
                    mod.reset_parameters()
        return m

    def sample(self, seed: int) -> FunctionalTask:  # noqa: D102
        n = len(self.dataset)
        perm = np.random.default_rng(seed).permutation(n)
        k = min(self.n_examples, n)
        batch = self._batch(perm[:k])
        test = self._batch(perm[k : k + self.n_test]) if self.n_test > 0 and n > k else None
        module = self._fresh(seed)
        module.train()
        named = dict(module.named_parameters())
        params = [named[n].detach().clone() for n in self.names]
        loss_fn, names = self.loss_fn, self.names
        step = _TrainingStep(module)

        def run(p: Sequence[Tensor], b) -> Tensor:
            mapping = dict(zip(names, p))
            if loss_fn is not None:
                return loss_fn(functional_call(module, mapping, (b[0],), strict=False), b[1])
            # a LightningModule without a loss: its own training_step, with our tensors as its parameters
            with warnings.catch_warnings():  # self.log() outside a Trainer warns; nothing is logged
                warnings.simplefilter("ignore")
                out = functional_call(step, {f"module.{k}": v for k, v in mapping.items()}, (b,), strict=False)
            return out["loss"] if isinstance(out, dict) else out

        def evaluate(p: Sequence[Tensor]) -> dict[str, float]:
            if test is None or loss_fn is None:
                return {}
            with torch.no_grad():
                out = functional_call(module, dict(zip(names, p)), (test[0],), strict=False)
                res = {"test_loss": float(loss_fn(out, test[1]))}
                if out.dim() == 2 and not test[1].is_floating_point():
                    res["test_acc"] = float((out.argmax(1) == test[1]).float().mean())
                return res

        return FunctionalTask(
            params,
            lambda p: run(p, batch),
            name=f"{self.name}_s{seed}",
            evaluate=evaluate,
            info={"seed": seed, "lr": self.lr, "n_examples": k},
        )


class _TrainingStep(nn.Module):
    """``forward(batch)`` = the wrapped LightningModule's ``training_step(batch, 0)`` (for ``functional_call``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch):  # noqa: D102
        return self.module.training_step(batch, 0)


# ---------------------------------------------------------------------------------------- embedded models
def make_cnn(kind: str) -> nn.Module:
    """Small CNNs: ``digits`` (2-D, 8×8 inputs), ``mnist1d`` (1-D, 40 samples), ``digits_deep`` (unseen: 3 convs + pooling)."""
    if kind == "digits":
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
        )  # fmt: skip
    if kind == "mnist1d":
        return nn.Sequential(
            nn.Unflatten(1, (1, 40)),
            nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(),
            nn.Conv1d(8, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(16 * 20, 10),
        )  # fmt: skip
    if kind == "digits_deep":
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(32, 10),
        )  # fmt: skip
    raise ValueError(f"cnn kind must be 'digits', 'mnist1d' or 'digits_deep', got {kind!r}")


class _Block(nn.Module):
    """Pre-norm transformer block with explicit attention (twice differentiable, unlike fused SDPA on CPU)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:  # noqa: D102
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / (d // self.heads) ** 0.5 + mask
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        h = h + self.proj(y)
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class TinyCausalLM(nn.Module):
    """A byte-level causal transformer LM: embedding + positions, ``layers`` pre-norm blocks, untied head.

    Example::

        >>> lm = TinyCausalLM(d_model=16, layers=1, heads=2, seq_len=8)
        >>> lm(torch.zeros(2, 8, dtype=torch.long)).shape
        torch.Size([2, 8, 256])
    """

    def __init__(self, d_model: int = 32, layers: int = 1, heads: int = 2, seq_len: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, d_model)
        self.pos = nn.Parameter(torch.zeros(seq_len, d_model))
        self.blocks = nn.ModuleList(_Block(d_model, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 256)
        mask = torch.full((seq_len, seq_len), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:  # the position table (Embedding/Linear/LayerNorm reset themselves)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:  # noqa: D102
        t = ids.shape[1]
        h = self.emb(ids) + self.pos[:t]
        for blk in self.blocks:
            h = blk(h, self.mask[:t, :t])
        return self.head(self.ln(h))


def _lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _text_windows(corpus: str, half: int, seq_len: int) -> tuple[Tensor, Tensor]:
    from lightning_papers.data import bundled_text, encode_bytes

    ids = encode_bytes(bundled_text(corpus, max_chars=200_000))
    cut = len(ids) // 2
    ids = ids[:cut] if half == 0 else ids[cut:]
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1 : n * seq_len + 1].reshape(n, seq_len)
    return x, y


def module_family(name: str, split_seed: int = 0, n_train: int = 256) -> ModuleTaskSampler:
    """Embedded module families: ``cnn_digits``, ``cnn_mnist1d``, ``cnn_deep_digits`` (unseen architecture),
    ``lm_pydoc`` (1-block LM on CPython's docs) and ``lm_stdlib`` (unseen: 2 blocks, standard-library source).

    ``split_seed`` picks the data half (classification: the train/test split; text: first or second half).
    """
    from lightning_papers.metamd.tasks import FAMILY_LR

    lr = FAMILY_LR.get(name, 1e-3)
    if name in ("cnn_digits", "cnn_mnist1d", "cnn_deep_digits"):
        dataset = "mnist1d" if name == "cnn_mnist1d" else "digits"
        xtr, ytr, xte, yte = _split(dataset, split_seed)
        x = torch.from_numpy(np.concatenate([xtr, xte]))
        y = torch.from_numpy(np.concatenate([ytr, yte]))
        kind = {"cnn_digits": "digits", "cnn_mnist1d": "mnist1d", "cnn_deep_digits": "digits_deep"}[name]
        return _SplitSampler(make_cnn(kind), (x, y), len(xtr), n_train, lr, name)
    if name in ("lm_pydoc", "lm_stdlib"):
        corpus = "pydoc" if name == "lm_pydoc" else "stdlib_source"
        model = TinyCausalLM(32, 1, 2, 32) if name == "lm_pydoc" else TinyCausalLM(48, 2, 4, 32)
        x, y = _text_windows(corpus, split_seed % 2, 32)
        return ModuleTaskSampler(model, (x, y), _lm_loss, n_examples=32, n_test=64, lr=lr, name=name)
    raise ValueError(f"unknown module family {name!r}")


class _SplitSampler(ModuleTaskSampler):
    """Classification tasks: training subset from the first ``n_pool`` rows, test subset from the rest."""

    def __init__(self, model, data, n_pool: int, n_train: int, lr, name) -> None:
        super().__init__(model, data, "cross_entropy", n_examples=n_train, n_test=512, lr=lr, name=name)
        self.n_pool = n_pool

    def sample(self, seed: int) -> FunctionalTask:  # noqa: D102
        rng = np.random.default_rng(seed)
        tr = rng.choice(self.n_pool, size=min(self.n_examples, self.n_pool), replace=False)
        n_te = len(self.dataset) - self.n_pool
        te = self.n_pool + rng.choice(n_te, size=min(self.n_test, n_te), replace=False)
        batch, test = self._batch(tr), self._batch(te)
        module = self._fresh(seed)
        named = dict(module.named_parameters())
        params = [named[n].detach().clone() for n in self.names]
        names = self.names

        def loss(p: Sequence[Tensor]) -> Tensor:
            return F.cross_entropy(functional_call(module, dict(zip(names, p)), (batch[0],)), batch[1])

        def evaluate(p: Sequence[Tensor]) -> dict[str, float]:
            with torch.no_grad():
                out = functional_call(module, dict(zip(names, p)), (test[0],))
                return {
                    "test_acc": float((out.argmax(1) == test[1]).float().mean()),
                    "test_loss": float(F.cross_entropy(out, test[1])),
                }

        return FunctionalTask(
            params, loss, name=f"{self.name}_s{seed}", evaluate=evaluate, info={"seed": seed, "lr": self.lr}
        )
