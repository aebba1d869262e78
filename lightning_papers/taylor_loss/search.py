"""CMA-ES search for a noise-robust Taylor loss (Gao, Gouk & Hospedales, ICCV 2021, Sec. 3).

A candidate is a coefficient vector of :func:`~lightning_papers.taylor_loss.loss.taylor_loss`. Its fitness
is the clean-validation accuracy, averaged over a grid of tasks (dataset × architecture × noise type and
rate), of a network trained from scratch with that loss on noisy labels. CMA-ES (the ``cma`` package)
maximises the fitness; candidates are scored in parallel worker processes. The ES state is checkpointed
after every generation, and :meth:`LossSearch.run` resumes from it bit-exactly; the best coefficients are
written as a YAML preset that ``TaylorLoss(preset=path)`` loads.

The short training runs use :func:`train_and_evaluate`, a plain-PyTorch loop (full-batch or large-batch
Adam on an MLP) that the benchmark reuses so that search and evaluation train in exactly the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_papers.taylor_loss.loss import TaylorLoss, ce_taylor_coefficients

__all__ = [
    "LossSearch",
    "SearchResult",
    "SearchTask",
    "TaskData",
    "load_task_data",
    "search_taylor_loss",
    "train_and_evaluate",
]

log = logging.getLogger(__name__)

DATASETS = ("digits", "mnist1d")
STATE_FILE = "search_state.pkl"
LOG_FILE = "search_log.jsonl"
PRESET_FILE = "best_preset.yaml"


# --------------------------------------------------------------------------------------------------
# tasks and the short training run that scores a loss
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchTask:
    """One cell of the fitness grid.

    Args:
        dataset: ``"digits"`` (sklearn 8x8 digits) or ``"mnist1d"`` (procedural MNIST-1D).
        noise_type: ``None``, ``"symmetric"``, ``"asymmetric"`` or ``"pairflip"`` (training labels only).
        noise_rate: fraction of flipped training labels.
        hidden: hidden widths of the MLP trained on this task.
        seed: split / label-noise / initialisation seed.
        n_samples: MNIST-1D sample count (ignored for digits).
    """

    dataset: str = "digits"
    noise_type: str | None = "symmetric"
    noise_rate: float = 0.4
    hidden: tuple[int, ...] = (128,)
    seed: int = 0
    n_samples: int = 2000

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.noise_type not in (None, "symmetric", "asymmetric", "pairflip"):
            raise ValueError(
                f"noise_type must be None, 'symmetric', 'asymmetric' or 'pairflip', got {self.noise_type!r}"
            )
        if not 0.0 <= self.noise_rate < 1.0:
            raise ValueError(f"noise_rate must be in [0, 1), got {self.noise_rate}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    @property
    def label(self) -> str:
        noise = (
            "clean"
            if not self.noise_rate
            else f"{(self.noise_type or '')[:3]}{int(round(self.noise_rate * 100))}"
        )
        return f"{self.dataset}/{noise}/mlp{'x'.join(map(str, self.hidden))}/s{self.seed}"


@dataclass
class TaskData:
    """Standardised tensors of one task: noisy training labels, clean labels for every split."""

    x_train: torch.Tensor
    y_train: torch.Tensor  # noisy
    y_train_clean: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def load_task_data(task: SearchTask) -> TaskData:
    """Build the splits (70/15/15, stratified) and label noise of ``task`` with the shared datamodules.

    Features are standardised with training-split statistics (why: Adam on raw MNIST-1D scales is slower).

    Example::

        >>> d = load_task_data(SearchTask("digits", "symmetric", 0.4))
        >>> d.x_train.shape[1], round(float((d.y_train != d.y_train_clean).float().mean()), 2)
        (64, 0.4)
    """
    from lightning_papers.data import DigitsDataModule, MNIST1DDataModule

    kwargs = dict(
        seed=task.seed,
        noise_type=task.noise_type if task.noise_rate > 0 else None,
        noise_rate=task.noise_rate,
    )
    if task.dataset == "digits":
        dm = DigitsDataModule(**kwargs)
    else:
        dm = MNIST1DDataModule(n_samples=task.n_samples, **kwargs)
    dm.setup()
    x_tr, y_clean = dm.arrays("train", clean=True)
    _, y_noisy = dm.arrays("train", clean=False)
    x_va, y_va = dm.arrays("val")
    x_te, y_te = dm.arrays("test")
    x_tr, x_va, x_te = (t.reshape(t.shape[0], -1).float() for t in (x_tr, x_va, x_te))
    mu, sd = x_tr.mean(0), x_tr.std(0).clamp_min(1e-3)
    return TaskData(
        (x_tr - mu) / sd,
        y_noisy.long(),
        y_clean.long(),
        (x_va - mu) / sd,
        y_va.long(),
        (x_te - mu) / sd,
        y_te.long(),
        int(dm.num_classes),
    )


def _mlp(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Module:
    from lightning_papers.models import MLP

    return MLP(in_features, num_classes, hidden=tuple(hidden))


def train_and_evaluate(
    criterion: nn.Module,
    data: TaskData,
    hidden: Sequence[int] = (128,),
    epochs: int = 200,
    lr: float = 1e-2,
    batch_size: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Train an MLP with ``criterion`` on the noisy labels of ``data`` and report clean accuracies.

    Args:
        criterion: any ``criterion(logits, target)`` loss module.
        data: a :class:`TaskData`.
        hidden: MLP hidden widths.
        epochs: passes over the training split (full-batch: one Adam step each).
        lr: Adam learning rate.
        batch_size: ``None`` for full-batch training, else shuffled mini-batches of this size.
        seed: initialisation and shuffling seed.

    Returns:
        ``val_acc``, ``test_acc`` (clean labels), ``train_clean_acc``, ``memorized`` (fraction of flipped
        training samples predicted as their noisy label, NaN without noise), ``final_loss``,
        ``seconds`` and ``seconds_per_epoch`` (training only).

    Example::

        >>> d = load_task_data(SearchTask("digits", None, 0.0))
        >>> r = train_and_evaluate(nn.CrossEntropyLoss(), d, hidden=(32,), epochs=30)
        >>> r["val_acc"] > 0.8
        True
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be None (full batch) or >= 1, got {batch_size}")
    torch.manual_seed(seed)
    net = _mlp(data.x_train.shape[1], hidden, data.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    loss = torch.tensor(float("nan"))
    start = time.perf_counter()
    net.train()
    for _ in range(epochs):
        if batch_size is None or batch_size >= n:
            batches = [slice(None)]
        else:
            perm = torch.randperm(n, generator=gen)
            batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
        for idx in batches:
            loss = criterion(net(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        pred_tr = net(data.x_train).argmax(-1)
        val_acc = (
            (net(data.x_val).argmax(-1) == data.y_val).float().mean().item() if len(data.y_val) else math.nan
        )
        test_acc = (
            (net(data.x_test).argmax(-1) == data.y_test).float().mean().item()
            if len(data.y_test)
            else math.nan
        )
    flipped = data.y_train != data.y_train_clean
    memorized = (
        (pred_tr[flipped] == data.y_train[flipped]).float().mean().item() if bool(flipped.any()) else math.nan
    )
    return {
        "val_acc": val_acc,
        "test_acc": test_acc,
        "train_clean_acc": (pred_tr == data.y_train_clean).float().mean().item(),
        "memorized": memorized,
        "final_loss": float(loss.detach()),
        "seconds": seconds,
        "seconds_per_epoch": seconds / epochs,
    }


# --------------------------------------------------------------------------------------------------
# candidate <-> coefficients, and scoring (runs in worker processes)
# --------------------------------------------------------------------------------------------------
def vector_to_coefficients(x: Sequence[float], degree: int) -> tuple[list[float], list[float]]:
    """Map a CMA-ES vector to ``(coefficients, other_coefficients)``, normalised to unit L1 norm.

    Why normalise: with Adam, rescaling a loss barely changes training, so the search only needs the
    direction of the vector; fixing the scale also makes presets comparable (MAE/2 is ``[1.0]``).
    """
    v = np.asarray(x, dtype=np.float64)
    norm = float(np.abs(v).sum())
    v = v / norm if norm > 1e-12 else np.eye(1, v.size).ravel()
    return [float(a) for a in v[:degree]], [float(a) for a in v[degree:]]


_WORKER_CACHE: dict[SearchTask, TaskData] = {}


def _worker_init() -> None:
    # one thread per process: the pool provides the parallelism, and results stay bit-identical
    torch.set_num_threads(1)


def _score(job: tuple[list[float], list[float], SearchTask, dict[str, Any]]) -> float:
    coefficients, others, task, train_kwargs = job
    if task not in _WORKER_CACHE:
        _WORKER_CACHE[task] = load_task_data(task)
    crit = TaylorLoss(coefficients=coefficients, other_coefficients=others)
    result = train_and_evaluate(crit, _WORKER_CACHE[task], hidden=task.hidden, seed=task.seed, **train_kwargs)
    acc = result["val_acc"]
    return float(acc) if math.isfinite(acc) and math.isfinite(result["final_loss"]) else 0.0


# --------------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """Outcome of :meth:`LossSearch.run`."""

    coefficients: list[float]
    other_coefficients: list[float]
    fitness: float
    generations: int
    evaluations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    preset_path: str | None = None

    def __str__(self) -> str:
        c = ", ".join(f"{v:.4f}" for v in self.coefficients)
        return (
            f"best fitness {self.fitness:.4f} after {self.generations} generations "
            f"({self.evaluations} candidates): coefficients [{c}]"
            + (
                f", other [{', '.join(f'{v:.4f}' for v in self.other_coefficients)}]"
                if self.other_coefficients
                else ""
            )
            + (f"\npreset written to {self.preset_path}" if self.preset_path else "")
        )


def default_tasks(
    datasets: Sequence[str] = DATASETS,
    noise: Sequence[tuple[str | None, float]] = (("symmetric", 0.4), ("symmetric", 0.6)),
    hidden: Sequence[Sequence[int]] = ((128,),),
    seeds: Sequence[int] = (100,),
    n_samples: int = 2000,
) -> list[SearchTask]:
    """The grid product datasets × noise × architectures × seeds as :class:`SearchTask` objects."""
    return [
        SearchTask(ds, nt, float(nr), tuple(h), int(s), n_samples)
        for ds in datasets
        for nt, nr in noise
        for h in hidden
        for s in seeds
    ]


class LossSearch:
    """CMA-ES over Taylor-loss coefficients with checkpoint/resume and parallel scoring.

    Args:
        tasks: the fitness grid (see :func:`default_tasks`).
        out_dir: folder for ``search_state.pkl`` (checkpoint), ``search_log.jsonl`` and ``best_preset.yaml``.
        degree: ``K``, powers of ``1 - p_y`` searched.
        other_degree: ``M``, powers of ``Σ_{j≠y} p_j²`` searched (0: none).
        popsize: CMA-ES population size λ.
        sigma0: initial step size (coefficients are L1-normalised, so ~0.1–0.5 is sensible).
        seed: CMA-ES seed; the whole search is a deterministic function of it and the tasks.
        epochs: training epochs per candidate and task.
        lr: Adam learning rate of the training runs.
        batch_size: ``None`` = full-batch training.
        workers: 0 = score in this process; ``n >= 1`` = a pool of ``n`` spawned processes (1 thread each).
        x0: start vector (default: cross-entropy's Taylor coefficients, normalised, and zeros for others).
        command: how this search was launched, recorded in the preset.

    Example::

        >>> tasks = [SearchTask("digits", "symmetric", 0.4, hidden=(16,))]
        >>> search = LossSearch(tasks, out_dir="/tmp/lp_search_doc", degree=2, popsize=4, epochs=5)
        >>> result = search.run(generations=1, resume=False, progress=False)  # doctest: +SKIP
    """

    def __init__(
        self,
        tasks: Sequence[SearchTask] | None = None,
        out_dir: str | Path = "runs/taylor_loss_search",
        degree: int = 4,
        other_degree: int = 0,
        popsize: int = 8,
        sigma0: float = 0.3,
        seed: int = 0,
        epochs: int = 150,
        lr: float = 1e-2,
        batch_size: int | None = None,
        workers: int = 1,
        x0: Sequence[float] | None = None,
        command: str | None = None,
    ) -> None:
        tasks = list(tasks) if tasks is not None else default_tasks()
        if not tasks:
            raise ValueError("tasks must hold at least one SearchTask")
        for t in tasks:
            if not isinstance(t, SearchTask):
                raise TypeError(f"tasks must be SearchTask objects, got {type(t).__name__}")
        if degree < 1 or other_degree < 0:
            raise ValueError(
                f"need degree >= 1 and other_degree >= 0, got degree={degree}, other_degree={other_degree}"
            )
        if popsize < 2:
            raise ValueError(f"popsize must be >= 2, got {popsize}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.tasks, self.out_dir = tasks, Path(out_dir)
        self.degree, self.other_degree = int(degree), int(other_degree)
        self.popsize, self.sigma0, self.seed = int(popsize), float(sigma0), int(seed)
        self.train_kwargs = {"epochs": int(epochs), "lr": float(lr), "batch_size": batch_size}
        self.workers = int(workers)
        dim = self.degree + self.other_degree
        if x0 is None:
            x0 = list(
                np.asarray(ce_taylor_coefficients(self.degree)) / sum(ce_taylor_coefficients(self.degree))
            )
            x0 += [0.0] * self.other_degree
        if len(x0) != dim:
            raise ValueError(f"x0 must have degree + other_degree = {dim} entries, got {len(x0)}")
        self.x0 = [float(v) for v in x0]
        self.command = command

    # -- bookkeeping ------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_FILE

    @property
    def preset_path(self) -> Path:
        return self.out_dir / PRESET_FILE

    def config(self) -> dict[str, Any]:
        """Everything that determines the search's results (checked on resume)."""
        return {
            "tasks": [dataclasses.asdict(t) | {"hidden": list(t.hidden)} for t in self.tasks],
            "degree": self.degree,
            "other_degree": self.other_degree,
            "popsize": self.popsize,
            "sigma0": self.sigma0,
            "seed": self.seed,
            "x0": self.x0,
            **self.train_kwargs,
        }

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(state))
        tmp.replace(self.state_path)  # atomic: an interrupt never leaves a half-written checkpoint

    def _load_state(self) -> dict[str, Any] | None:
        if not self.state_path.is_file():
            return None
        state = pickle.loads(self.state_path.read_bytes())
        if state.get("config") != self.config():
            raise ValueError(
                f"checkpoint {self.state_path} was made with a different search configuration; "
                "use another out_dir or resume=False to start over"
            )
        return state

    # -- scoring ----------------------------------------------------------------------------------
    def _jobs(self, xs: Sequence[Sequence[float]]) -> list[tuple]:
        jobs = []
        for x in xs:
            c, d = vector_to_coefficients(x, self.degree)
            jobs += [(c, d, t, self.train_kwargs) for t in self.tasks]
        return jobs

    def _score_all(self, xs: Sequence[Sequence[float]], pool: ProcessPoolExecutor | None) -> list[float]:
        jobs = self._jobs(xs)
        if pool is None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # same arithmetic as the pool workers -> identical results
            try:
                scores = [_score(j) for j in jobs]
            finally:
                torch.set_num_threads(threads)
        else:
            scores = list(pool.map(_score, jobs))
        k = len(self.tasks)
        return [float(np.mean(scores[i * k : (i + 1) * k])) for i in range(len(xs))]

    def evaluate(self, coefficients: Sequence[float], other_coefficients: Sequence[float] = ()) -> float:
        """Fitness (mean clean-validation accuracy over the tasks) of given coefficients, in-process."""
        x = list(coefficients) + list(other_coefficients)
        return self._score_all([x], None)[0]

    # -- main loop --------------------------------------------------------------------------------
    def run(
        self,
        generations: int = 20,
        resume: bool = True,
        progress: bool = True,
        callback: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> SearchResult:
        """Run (or continue) the search until ``generations`` generations are done in total.

        Args:
            generations: total number of generations (a resumed search counts those already done).
            resume: continue from ``out_dir/search_state.pkl`` if it exists.
            progress: show a tqdm bar.
            callback: called as ``callback(generation, log_record)`` after each generation (e.g. to stop).

        Returns:
            A :class:`SearchResult`; the best preset is also written to ``out_dir/best_preset.yaml``.
        """
        import cma
        from tqdm.auto import tqdm

        if generations < 1:
            raise ValueError(f"generations must be >= 1, got {generations}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = self._load_state() if resume else None
        user_np_state = np.random.get_state()
        if state is None:
            if self.log_path.exists():
                self.log_path.unlink()
            np.random.seed(self.seed)  # cma samples from numpy's global RNG; we keep our own copy of it
            es = cma.CMAEvolutionStrategy(
                self.x0,
                self.sigma0,
                {"seed": self.seed, "popsize": self.popsize, "verbose": -9, "verb_disp": 0, "verb_log": 0},
            )
            state = {
                "config": self.config(),
                "es": es,
                "np_state": np.random.get_state(),
                "generation": 0,
                "history": [],
                "best_x": list(self.x0),
                "best_fitness": -math.inf,
                "evaluations": 0,
            }
        es = state["es"]
        pool = None
        if self.workers > 0:
            import multiprocessing as mp

            pool = ProcessPoolExecutor(
                self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init
            )
        bar = tqdm(
            total=generations,
            initial=min(state["generation"], generations),
            disable=not progress,
            desc="CMA-ES generations",
            unit="gen",
        )
        try:
            while state["generation"] < generations and not es.stop():
                t0 = time.perf_counter()
                np.random.set_state(state["np_state"])
                xs = es.ask()
                state["np_state"] = np.random.get_state()
                fitness = self._score_all(xs, pool)
                es.tell(xs, [-f for f in fitness])  # cma minimises
                gen_best = int(np.argmax(fitness))
                if fitness[gen_best] > state["best_fitness"]:
                    state["best_fitness"], state["best_x"] = (
                        fitness[gen_best],
                        [float(v) for v in xs[gen_best]],
                    )
                state["generation"] += 1
                state["evaluations"] += len(xs)
                c, d = vector_to_coefficients(state["best_x"], self.degree)
                record = {
                    "generation": state["generation"],
                    "gen_best_fitness": fitness[gen_best],
                    "gen_mean_fitness": float(np.mean(fitness)),
                    "best_fitness": state["best_fitness"],
                    "best_coefficients": c,
                    "best_other_coefficients": d,
                    # the distribution mean: a less noise-biased pick than the best single evaluation
                    "mean_coefficients": vector_to_coefficients(es.mean, self.degree)[0],
                    "sigma": float(es.sigma),
                    "seconds": time.perf_counter() - t0,
                }
                state["history"].append(record)
                self._save_state(state)
                with self.log_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                log.info(
                    "generation %d: best %.4f (gen best %.4f, mean %.4f), sigma %.3g",
                    record["generation"],
                    record["best_fitness"],
                    record["gen_best_fitness"],
                    record["gen_mean_fitness"],
                    record["sigma"],
                )
                bar.update(1)
                bar.set_postfix(
                    best=f"{state['best_fitness']:.4f}", gen_mean=f"{record['gen_mean_fitness']:.4f}"
                )
                if callback is not None:
                    callback(state["generation"], record)
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown()
            np.random.set_state(user_np_state)
        c, d = vector_to_coefficients(state["best_x"], self.degree)
        result = SearchResult(
            c,
            d,
            float(state["best_fitness"]),
            state["generation"],
            state["evaluations"],
            list(state["history"]),
        )
        result.preset_path = str(self.write_preset(result))
        return result

    def write_preset(
        self, result: SearchResult, path: str | Path | None = None, name: str = "searched"
    ) -> Path:
        """Write ``result`` as a YAML preset (coefficients + provenance) loadable by ``TaylorLoss(preset=path)``."""
        import yaml

        path = Path(path) if path is not None else self.preset_path
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "name": name,
            "coefficients": [round(v, 6) for v in result.coefficients],
            "other_coefficients": [round(v, 6) for v in result.other_coefficients],
            "fitness": round(result.fitness, 6),
            "generations": result.generations,
            "evaluations": result.evaluations,
            "source": "CMA-ES search by lightning_papers.taylor_loss.search (not the paper's coefficients)",
            "command": self.command,
            "recipe": self.config(),
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path


def search_taylor_loss(
    tasks: Sequence[SearchTask] | None = None,
    generations: int = 20,
    out_dir: str | Path = "runs/taylor_loss_search",
    resume: bool = True,
    progress: bool = True,
    **kwargs: Any,
) -> SearchResult:
    """Functional entry: ``LossSearch(tasks, out_dir, **kwargs).run(generations, resume, progress)``.

    Example::

        >>> res = search_taylor_loss([SearchTask("digits", hidden=(16,))], generations=1, popsize=2,
        ...                          epochs=3, workers=0, out_dir="/tmp/lp_doc_search", resume=False,
        ...                          progress=False)  # doctest: +SKIP
    """
    return LossSearch(tasks, out_dir=out_dir, **kwargs).run(generations, resume=resume, progress=progress)
