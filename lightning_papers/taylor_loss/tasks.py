"""Tasks a loss is scored on: any LightningDataModule × any model × a label-noise model, and the short run.

A :class:`LossTask` names a datamodule (one of ours, the user's, by class path, instance or factory), a model
(class path or factory), and how the training labels are corrupted: ``symmetric``, ``asymmetric`` or
``pairflip`` synthetic noise at a rate, or ``own`` (train on the data's own labels, e.g. real annotator noise).
The score of a loss on a task is the **clean validation accuracy** of a network trained from scratch with it
on the corrupted training labels (:func:`train_and_evaluate`, a plain-PyTorch loop, fast enough to run
thousands of times in a search; the benchmark uses the very same loop).

Search tasks are meant to be small proxies: :func:`load_task_data` reads a task's train/val(/test) splits
into memory once per worker (use ``max_train_samples`` to cap a large dataset).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["LossTask", "TaskData", "build_model", "load_task_data", "parse_noise", "resolve", "train_and_evaluate"]

NOISE_TYPES = (None, "symmetric", "asymmetric", "pairflip", "own")
_SHORT_NAME_MODULES = ("lightning_papers.data", "lightning_papers.taylor_loss.data", "lightning_papers.models")
_X_KEYS = ("x", "input", "inputs", "image", "images", "features", "pixel_values")
_Y_KEYS = ("y", "label", "labels", "target", "targets")


def resolve(path: str) -> Any:
    """Import ``"pkg.module.Name"`` / ``"pkg.module:Name"``, or a short name from our data/model modules.

    Example::

        >>> resolve("MLP").__name__, resolve("torch.nn.Linear").__name__
        ('MLP', 'Linear')
    """
    if ":" in path or "." in path:
        module, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import {path!r}: {err}") from err
    for module in _SHORT_NAME_MODULES:
        obj = getattr(importlib.import_module(module), path, None)
        if obj is not None:
            return obj
    raise ValueError(f"unknown name {path!r}: give a full class path such as 'my_package.MyDataModule'")


def _describe(obj: Any) -> Any:
    """A JSON-able description of a task component (used for resume checks, worker caches and provenance)."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _describe(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_describe(v) for v in obj]
    if isinstance(obj, type) or callable(obj) and not hasattr(obj, "__dict__"):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
    if hasattr(obj, "func") and hasattr(obj, "keywords"):  # functools.partial
        return {"partial": _describe(obj.func), "args": _describe(list(obj.args)), "kwargs": _describe(obj.keywords)}
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, nn.Module):  # its repr lists every layer and its sizes
        return {"module": f"{type(obj).__module__}.{type(obj).__qualname__}", "repr": repr(obj)}
    # an instance (e.g. a user's datamodule): its class and simple public attributes
    attrs = {k: v for k, v in vars(obj).items() if not k.startswith("_") and isinstance(v, (str, int, float, bool))}
    return {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", "attributes": _describe(attrs)}


@dataclass
class LossTask:
    """One task on which a candidate loss is trained and scored.

    Args:
        data: a LightningDataModule instance (copied, never modified), its class, a class path
            (``"DigitsDataModule"``, ``"my_pkg.MyDataModule"``) or a factory returning one. Its train split
            gives the (to-be-corrupted) labels, its val split the clean labels the fitness is scored on.
        data_args: keyword arguments for the class / factory.
        model: a model class, class path (``"MLP"``, ``"lightning_papers.models.ConvNet"``), factory, or an
            ``nn.Module`` instance (deep-copied and re-initialised with ``reset_parameters`` for every run).
            ``num_classes``, ``in_features`` (flattened input size) and ``in_channels`` are filled in from
            the data when the constructor takes them and ``model_args`` does not set them.
        model_args: keyword arguments for the model.
        noise_type: ``None``/``"clean"``, ``"symmetric"``, ``"asymmetric"``, ``"pairflip"`` (synthetic noise on
            the training labels) or ``"own"`` (the datamodule's labels as they are).
        noise_rate: fraction of corrupted training labels (synthetic noise only).
        asymmetric_map: class map of ``"asymmetric"`` noise; default: the MNIST map for 10 classes, else every
            even class flips into the next one.
        seed: seed of the noise, the initialisation and the batch order.
        name: a short label for logs and tables (default: built from the parts).
        max_train_samples: use at most this many training samples (a random subset, fixed by ``seed``).
        standardize: standardise the inputs with training-split statistics.

    Example::

        >>> task = LossTask("DigitsDataModule", model="MLP", model_args={"hidden": [32]}, noise_rate=0.4)
        >>> task.label
        'DigitsDataModule/MLP/sym40/s0'
    """

    data: Any = "DigitsDataModule"
    data_args: dict[str, Any] = field(default_factory=dict)
    model: Any = "MLP"
    model_args: dict[str, Any] = field(default_factory=dict)
    noise_type: str | None = "symmetric"
    noise_rate: float = 0.4
    asymmetric_map: dict[int, int] | None = None
    seed: int = 0
    name: str | None = None
    max_train_samples: int | None = None
    standardize: bool = True

    def __post_init__(self) -> None:
        if self.noise_type == "clean":
            self.noise_type = None
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(
                f"noise_type must be None/'clean', 'symmetric', 'asymmetric', 'pairflip' or 'own', got {self.noise_type!r}"
            )
        if not 0.0 <= float(self.noise_rate) < 1.0:
            raise ValueError(f"noise_rate must be in [0, 1), got {self.noise_rate}")
        if self.noise_type in (None, "own"):
            self.noise_rate = 0.0
        elif self.noise_rate == 0:
            self.noise_type = None
        self.noise_rate = float(self.noise_rate)
        if self.max_train_samples is not None and self.max_train_samples < 2:
            raise ValueError(f"max_train_samples must be None or >= 2, got {self.max_train_samples}")
        if not isinstance(self.data_args, Mapping) or not isinstance(self.model_args, Mapping):
            raise TypeError("data_args and model_args must be mappings of keyword arguments")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> LossTask:
        """Build from a config entry: ``{data: {class_path, init_args}, model: {...}, noise: "symmetric:0.4", ...}``.

        ``data`` / ``model`` may also be plain class-path strings; ``noise`` is ``"clean"``, ``"own"`` or
        ``"<type>:<rate>"`` (or give ``noise_type`` and ``noise_rate``).

        Example::

            >>> LossTask.from_dict({"data": "DigitsDataModule", "noise": "pairflip:0.3", "seed": 2}).label
            'DigitsDataModule/MLP/pai30/s2'
        """
        spec = {k: _plain(v) for k, v in dict(_plain(spec)).items()}
        unknown = set(spec) - {"data", "model", "noise", "noise_type", "noise_rate", "asymmetric_map", "seed", "name",
                               "max_train_samples", "standardize"}
        if unknown:
            raise ValueError(f"unknown task keys {sorted(unknown)}; expected data, model, noise, seed, name, ...")
        kwargs: dict[str, Any] = {}
        for part in ("data", "model"):
            value = spec.pop(part, None)
            if isinstance(value, Mapping):
                if "class_path" not in value:
                    raise ValueError(f"task {part} must be a class path or {{class_path, init_args}}, got {dict(value)}")
                kwargs[part], kwargs[f"{part}_args"] = value["class_path"], dict(value.get("init_args") or {})
            elif value is not None:
                kwargs[part] = value
        if "noise" in spec:
            kwargs["noise_type"], kwargs["noise_rate"] = parse_noise(str(spec.pop("noise")))
        if spec.get("asymmetric_map"):
            spec["asymmetric_map"] = {int(k): int(v) for k, v in spec["asymmetric_map"].items()}
        return cls(**kwargs, **spec)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (what the search records and checks on resume)."""
        return {
            "data": _describe(self.data), "data_args": _describe(self.data_args), "model": _describe(self.model),
            "model_args": _describe(self.model_args), "noise_type": self.noise_type, "noise_rate": self.noise_rate,
            "asymmetric_map": _describe(self.asymmetric_map), "seed": self.seed, "name": self.name,
            "max_train_samples": self.max_train_samples, "standardize": self.standardize,
        }

    def key(self) -> str:
        return json.dumps(self.describe(), sort_keys=True)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        def short(x: Any) -> str:
            return (x if isinstance(x, str) else getattr(x, "__name__", type(x).__name__)).rpartition(".")[2]

        noise = {None: "clean", "own": "own"}.get(
            self.noise_type, f"{(self.noise_type or '')[:3]}{int(round(self.noise_rate * 100))}"
        )
        return f"{short(self.data)}/{short(self.model)}/{noise}/s{self.seed}"


def _plain(value: Any) -> Any:
    """jsonargparse ``Namespace`` -> dict (a parsed config keeps ``{class_path, init_args}`` as Namespaces)."""
    if hasattr(value, "as_dict") and callable(value.as_dict):
        return value.as_dict()
    return value


def parse_noise(spec: str) -> tuple[str | None, float]:
    """Parse ``"symmetric:0.4"``, ``"asymmetric:0.4"``, ``"pairflip:0.2"``, ``"own"`` or ``"clean"``.

    Example::

        >>> parse_noise("symmetric:0.4"), parse_noise("clean"), parse_noise("own")
        (('symmetric', 0.4), (None, 0.0), ('own', 0.0))
    """
    text = spec.strip().lower()
    if text in ("clean", "none", "none:0", "clean:0"):
        return None, 0.0
    if text == "own":
        return "own", 0.0
    kind, sep, rate = text.partition(":")
    if not sep or kind not in ("symmetric", "asymmetric", "pairflip"):
        raise ValueError(
            f"noise spec must look like 'symmetric:0.4' (or asymmetric/pairflip), 'clean' or 'own', got {spec!r}"
        )
    try:
        value = float(rate)
    except ValueError as err:
        raise ValueError(f"noise rate in {spec!r} is not a number") from err
    if not 0.0 <= value < 1.0:
        raise ValueError(f"noise rate in {spec!r} must be in [0, 1)")
    return kind, value


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
@dataclass
class TaskData:
    """In-memory tensors of one task: corrupted training labels, clean labels for every split."""

    x_train: torch.Tensor
    y_train: torch.Tensor  # as trained on (noisy)
    y_train_clean: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _datamodule(task: LossTask):
    import lightning.pytorch as L

    data = task.data
    if isinstance(data, L.LightningDataModule):
        if task.data_args:
            raise ValueError("data_args cannot be used with a datamodule instance (it is already built)")
        return copy.deepcopy(data)  # never set up (mutate) the user's own object
    factory = resolve(data) if isinstance(data, str) else data
    if not callable(factory):
        raise TypeError(f"task data must be a LightningDataModule, its class, a class path or a factory, got {data!r}")
    dm = factory(**task.data_args)
    if not isinstance(dm, L.LightningDataModule):
        raise TypeError(f"task data {data!r} built a {type(dm).__name__}, not a LightningDataModule")
    return dm


def _split_batch(batch: Any, split: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        xk = next((k for k in _X_KEYS if k in batch), None)
        yk = next((k for k in _Y_KEYS if k in batch), None)
        if xk is None or yk is None:
            raise ValueError(
                f"datamodule {name} has no labels the search can find: its {split} batches are dicts with keys "
                f"{sorted(batch)}; the loss search needs "
                f"inputs under one of {_X_KEYS} and labels under one of {_Y_KEYS}"
            )
        x, y = batch[xk], batch[yk]
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
    else:
        what = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise ValueError(
            f"datamodule {name} has no labels: its {split} batches are {what}; the loss search needs "
            "(inputs, labels) batches or dicts with a label key"
        )
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dtype == torch.bool or y.dim() != 1:
        desc = f"dtype {y.dtype}, shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"datamodule {name}: {split} labels must be 1-D integer class indices, got {desc}")
    return torch.as_tensor(x), y.long()


def _collect(dm, split: str, name: str, required: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    try:
        loader = getattr(dm, f"{split}_dataloader")()
    except Exception as err:  # Lightning raises MisconfigurationException for a missing hook
        if required:
            raise ValueError(f"datamodule {name} has no usable {split}_dataloader ({err})") from err
        return None
    if loader is None:
        if required:
            raise ValueError(f"datamodule {name} returned no {split}_dataloader")
        return None
    xs, ys = [], []
    for batch in loader:
        x, y = _split_batch(batch, split, name)
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu())
    if not xs:
        if required:
            raise ValueError(f"datamodule {name}: the {split} split is empty (the fitness needs clean {split} labels)")
        return None
    return torch.cat(xs).float(), torch.cat(ys)


def load_task_data(task: LossTask) -> TaskData:
    """Read the task's splits into memory and corrupt the training labels as the task says.

    Raises:
        ValueError: for a datamodule whose batches carry no labels, an empty train or val split, or labels
            outside ``[0, num_classes)``.

    Example::

        >>> d = load_task_data(LossTask("DigitsDataModule", noise_type="symmetric", noise_rate=0.4))
        >>> d.x_train.shape[1], round(float((d.y_train != d.y_train_clean).float().mean()), 2)
        (64, 0.4)
    """
    from lightning_papers.data.arrays import make_label_noise

    dm = _datamodule(task)
    name = type(dm).__name__
    dm.prepare_data()
    dm.setup("fit")
    x_tr, y_tr = _collect(dm, "train", name, required=True)
    x_va, y_va = _collect(dm, "val", name, required=True)
    try:
        dm.setup("test")
        test = _collect(dm, "test", name, required=False)
    except Exception:  # a datamodule without a test stage is fine for a search
        test = None
    x_te, y_te = test if test is not None else (x_va[:0], y_va[:0])
    num_classes = int(getattr(dm, "num_classes", 0) or 0) or int(max(int(y_tr.max()), int(y_va.max())) + 1)
    for split, y in (("train", y_tr), ("val", y_va), ("test", y_te)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"datamodule {name}: {split} labels must lie in [0, {num_classes - 1}], got "
                f"[{int(y.min())}, {int(y.max())}]"
            )
    if task.max_train_samples is not None and len(y_tr) > task.max_train_samples:
        keep = np.sort(np.random.default_rng(task.seed).permutation(len(y_tr))[: task.max_train_samples])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    clean = y_tr.clone()
    if task.noise_type in ("symmetric", "asymmetric", "pairflip"):
        mapping = task.asymmetric_map
        if task.noise_type == "asymmetric" and mapping is None and num_classes != 10:
            mapping = {i: (i + 1) % num_classes for i in range(0, num_classes, 2)}
        noisy, _ = make_label_noise(clean.numpy(), num_classes, task.noise_type, task.noise_rate,
                                    seed=task.seed, asymmetric_map=mapping)
        y_noisy = torch.from_numpy(noisy).long()
    else:
        y_noisy = clean.clone()
    if task.standardize:
        flat = x_tr.reshape(len(x_tr), -1)
        mu, sd = flat.mean(0), flat.std(0).clamp_min(1e-3) if len(flat) > 1 else torch.ones(flat.shape[1])

        def norm(x: torch.Tensor) -> torch.Tensor:
            return ((x.reshape(len(x), mu.numel()) - mu) / sd).reshape(x.shape)

        x_tr, x_va, x_te = norm(x_tr), norm(x_va), norm(x_te)
    return TaskData(x_tr, y_noisy, clean, x_va, y_va, x_te, y_te, num_classes)


# --------------------------------------------------------------------------------------------------
# model and the short training run
# --------------------------------------------------------------------------------------------------
def build_model(task: LossTask, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Instantiate the task's model, filling ``num_classes`` / ``in_features`` / ``in_channels`` from the data."""
    if isinstance(task.model, nn.Module):  # an instance (e.g. instantiated from a config): a fresh copy per run
        if task.model_args:
            raise ValueError("model_args cannot be used with a model instance (it is already built)")
        model = copy.deepcopy(task.model)
        for module in model.modules():  # re-initialise under the run's seed, as a factory would
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return model
    factory = resolve(task.model) if isinstance(task.model, str) else task.model
    if not callable(factory):
        raise TypeError(f"task model must be a class, class path or factory, got {task.model!r}")
    kwargs = dict(task.model_args)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    auto = {"num_classes": num_classes, "in_features": int(np.prod(input_shape)),
            "in_channels": int(input_shape[0]) if input_shape else 1}
    for key, value in auto.items():
        if key in params and key not in kwargs:
            kwargs[key] = value
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"task model {task.model!r} built a {type(model).__name__}, not an nn.Module")
    return model


def train_and_evaluate(
    criterion: nn.Module,
    data: TaskData,
    make_model: Callable[[], nn.Module],
    epochs: int = 120,
    lr: float = 1e-2,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Train ``make_model()`` with ``criterion`` on the corrupted labels of ``data`` (Adam); clean accuracies.

    The caller's global RNG state is left untouched (the run uses a forked RNG seeded with ``seed``).

    Args:
        criterion: any ``criterion(logits, target)`` loss module.
        data: a :class:`TaskData`.
        make_model: builds the network (called once, under the seeded RNG).
        epochs: passes over the training split (full batch: one Adam step each).
        lr: Adam learning rate.
        batch_size: ``None`` for full-batch training, else shuffled mini-batches of this size.
        seed: initialisation and shuffling seed.
        device: where to train (the search's workers use the CPU by default).

    Returns:
        ``val_acc``, ``test_acc`` (clean labels; NaN without that split), ``train_clean_acc``, ``memorized``
        (fraction of corrupted training samples predicted as their wrong label, NaN without noise),
        ``final_loss``, ``seconds`` and ``seconds_per_epoch`` (training only).

    Example::

        >>> from lightning_papers.models import MLP
        >>> d = load_task_data(LossTask("DigitsDataModule", noise_type=None))
        >>> r = train_and_evaluate(nn.CrossEntropyLoss(), d, lambda: MLP(64, 10, hidden=(32,)), epochs=30)
        >>> r["val_acc"] > 0.8
        True
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be None (full batch) or >= 1, got {batch_size}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make_model().to(device)
        criterion = criterion.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        x, y = data.x_train.to(device), data.y_train.to(device)
        n = x.shape[0]
        loss = torch.tensor(float("nan"))
        net.train()
        start = time.perf_counter()
        for _ in range(epochs):
            if batch_size is None or batch_size >= n:
                batches = [slice(None)]
            else:
                perm = torch.randperm(n, generator=gen).to(device)
                batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
            for idx in batches:
                loss = criterion(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    net.eval()

    def accuracy(inputs: torch.Tensor, labels: torch.Tensor) -> float:
        if not len(labels):
            return math.nan
        with torch.no_grad():
            return (net(inputs.to(device)).argmax(-1).cpu() == labels).float().mean().item()

    with torch.no_grad():
        pred_tr = net(x).argmax(-1).cpu()
    flipped = data.y_train != data.y_train_clean
    memorized = (pred_tr[flipped] == data.y_train[flipped]).float().mean().item() if bool(flipped.any()) else math.nan
    return {
        "val_acc": accuracy(data.x_val, data.y_val),
        "test_acc": accuracy(data.x_test, data.y_test),
        "train_clean_acc": (pred_tr == data.y_train_clean).float().mean().item(),
        "memorized": memorized,
        "final_loss": float(loss.detach()),
        "seconds": seconds,
        "seconds_per_epoch": seconds / epochs,
    }
