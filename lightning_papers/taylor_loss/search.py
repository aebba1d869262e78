"""CMA-ES search for a noise-robust Taylor loss on any tasks (Gao, Gouk & Hospedales, ICCV 2021, Sec. 3).

A candidate is a vector that maps to Taylor-loss coefficients (:func:`vector_to_coefficients`). Its fitness is
the mean clean-validation accuracy of networks trained from scratch with that loss on corrupted labels, over
tasks drawn from a pool (:class:`~lightning_papers.taylor_loss.tasks.LossTask`: any datamodule × model ×
noise model). As in the paper, every generation draws its own tasks from the pool (dataset × architecture ×
noise randomisation); all candidates of a generation share those tasks, so their ranking is fair.

Candidates are scored through any :class:`concurrent.futures.Executor` (only ``submit`` and ``result`` are
used): a local process pool by default, or a cluster's, e.g. Dask's ``Client.get_executor()`` or submitit's
``AutoExecutor`` for SLURM. The ES state is checkpointed atomically after every generation and
:meth:`LossSearch.run` resumes from it exactly (same candidates, same result as an uninterrupted run). At the
end the distribution mean (CMA-ES's recommendation under noisy fitness) and the unsearched start (CE's
truncated series) are both scored on the whole pool, and the mean is written as a YAML preset.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import math
import pickle
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_papers.files import atomic_write, atomic_write_text
from lightning_papers.taylor_loss.loss import (
    TaylorLoss,
    ce_taylor_coefficients,
    coefficients_from_gradient_weights,
    gradient_weights_from_coefficients,
)
from lightning_papers.taylor_loss.pools import search_tasks
from lightning_papers.taylor_loss.tasks import (
    LossTask,
    build_model,
    load_task_data,
    train_and_evaluate,
)
from lightning_papers.validation import check_each

__all__ = ["LossSearch", "SearchResult", "search_taylor_loss", "vector_to_coefficients"]

log = logging.getLogger(__name__)

STATE_FILE = "search_state.pkl"
LOG_FILE = "search_log.jsonl"
PRESET_FILE = "best_preset.yaml"
BASES = ("bernstein", "monomial")


# --------------------------------------------------------------------------------------------------
# candidate <-> coefficients
# --------------------------------------------------------------------------------------------------
def vector_to_coefficients(x: Sequence[float], degree: int, basis: str = "bernstein") -> tuple[list[float], list[float]]:
    """Map a CMA-ES vector to ``(coefficients, other_coefficients)`` of :class:`TaylorLoss`.

    ``bernstein`` (default): the first ``degree`` entries are log-slopes ``log β_i`` of ``P'(u)`` in the
    Bernstein basis (:func:`coefficients_from_gradient_weights`), so every candidate is a loss that grows with
    ``u = 1 − p_y``; scaled to ``P(1) = 1``. ``monomial``: the raw ``c_k``, scaled to unit L1 norm. Why fix the
    scale: with Adam, rescaling a loss barely changes training, so only its shape matters.

    Example::

        >>> vector_to_coefficients([0.0, 0.0], 2)  # equal slopes: MAE's shape, P(u) = u
        ([1.0, 0.0], [])
    """
    v = np.asarray(x, dtype=np.float64)
    if basis == "bernstein":
        beta = np.exp(np.clip(v[:degree], -30.0, 30.0))
        c = np.asarray(coefficients_from_gradient_weights(beta.tolist()))
        scale = float(c.sum())  # = P(1) = mean(beta) > 0
    elif basis == "monomial":
        c = v[:degree]
        scale = float(np.abs(v).sum())
        if scale <= 1e-12:
            c, scale = np.eye(1, degree).ravel(), 1.0
    else:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    return [float(a) for a in c / scale], [float(a) for a in v[degree:] / scale]


def _start_vector(degree: int, other_degree: int, basis: str) -> list[float]:
    """CE's truncated Taylor series (the unsearched control) in the search's coordinates."""
    ce = ce_taylor_coefficients(degree)
    if basis == "bernstein":
        head = [math.log(b) for b in gradient_weights_from_coefficients(ce)]
    else:
        head = list(np.asarray(ce) / sum(ce))
    return head + [0.0] * other_degree


# --------------------------------------------------------------------------------------------------
# scoring: one (candidate, task) pair per job; runs in whatever process the executor chooses
# --------------------------------------------------------------------------------------------------
_WORKER_CACHE: dict[str, Any] = {}


def _worker_init() -> None:
    torch.set_num_threads(1)  # the pool provides the parallelism


_JOB_LOCK = threading.Lock()


@contextlib.contextmanager
def _one_job_one_thread() -> Iterator[None]:
    """One job at a time per process, with one torch thread, then the caller's thread setting back.

    Why: torch's RNG and thread count are process-global, so jobs sharing a process (a thread-pool executor)
    would interleave their seeded initialisations; serialised they give exactly the in-process results. Real
    parallelism comes from processes (the default pool, Dask, submitit), which this lock never slows down.
    """
    with _JOB_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def score_job(job: tuple[list[float], list[float], LossTask, dict[str, Any]]) -> float:
    """Clean-validation accuracy of a Taylor loss on one task (0 for a diverged run). Executor-safe."""
    coefficients, others, task, train_kwargs = job
    with _one_job_one_thread():
        key = task.key()
        if key not in _WORKER_CACHE:
            _WORKER_CACHE[key] = load_task_data(task)
        data = _WORKER_CACHE[key]
        crit = TaylorLoss(coefficients=coefficients, other_coefficients=others)
        make = functools.partial(build_model, task, data.input_shape, data.num_classes)
        result = train_and_evaluate(crit, data, make, seed=task.seed, **train_kwargs)
    acc = result["val_acc"]
    return float(acc) if math.isfinite(acc) and math.isfinite(result["final_loss"]) else 0.0


@dataclass
class SearchResult:
    """Outcome of :meth:`LossSearch.run`.

    ``coefficients`` are the CMA-ES distribution mean's; ``fitness`` is its mean clean-validation accuracy on
    the whole task pool and ``control_fitness`` that of the unsearched start (CE's truncated series) on the
    same runs (NaN when the final evaluation was switched off).
    """

    coefficients: list[float]
    other_coefficients: list[float]
    fitness: float
    control_fitness: float
    generations: int
    evaluations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    preset_path: str | None = None

    def __str__(self) -> str:
        c = ", ".join(f"{v:.4f}" for v in self.coefficients)
        text = (
            f"after {self.generations} generations ({self.evaluations} candidate evaluations): "
            f"coefficients [{c}]; pool fitness {self.fitness:.4f} vs {self.control_fitness:.4f} for the start "
            "(CE's truncated series)"
        )
        if self.other_coefficients:
            text += f", other [{', '.join(f'{v:.4f}' for v in self.other_coefficients)}]"
        return text + (f"\npreset written to {self.preset_path}" if self.preset_path else "")


class LossSearch:
    """CMA-ES over Taylor-loss coefficients on a pool of tasks, with exact checkpoint/resume.

    Args:
        tasks: the task pool (:class:`LossTask` objects or config dicts; default :func:`search_tasks`).
        out_dir: folder for ``search_state.pkl`` (checkpoint), ``search_log.jsonl`` and ``best_preset.yaml``.
        degree: ``K``, powers of ``1 − p_y`` searched.
        other_degree: ``M``, powers of ``Σ_{j≠y} p_j²`` searched (0: none).
        basis: ``"bernstein"`` (monotone losses, log-slopes; default) or ``"monomial"`` (raw ``c_k``).
        popsize: CMA-ES population size λ.
        sigma0: initial step size (in log-slope units for ``bernstein``).
        seed: CMA-ES seed; the search is a deterministic function of it, the tasks and the settings.
        tasks_per_generation: tasks drawn (without replacement) from the pool for each generation; ``None``:
            all of them every generation.
        epochs: training epochs per candidate and task.
        lr: Adam learning rate of the training runs.
        batch_size: ``None`` = full-batch training.
        device: where the training runs happen (in the workers).
        workers: without ``executor``: 0 = score in this process, ``n >= 1`` = a local pool of ``n`` spawned
            processes with one thread each (results are identical for any ``n``).
        executor: any ``concurrent.futures.Executor``-like object with ``submit`` (e.g. a Dask client's
            ``get_executor()``, submitit's ``AutoExecutor``); the jobs must be picklable for it. Jobs sharing a
            process (a thread pool) run one at a time: parallelism comes from processes.
        final_evaluation: score the distribution mean and the start on the whole pool at the end.
        x0: start vector (default: CE's Taylor series cut at ``degree``, in the basis' coordinates).
        command: how this search was launched, recorded in the preset.

    Example::

        >>> task = LossTask("DigitsDataModule", model_args={"hidden": [16]}, noise_rate=0.4)
        >>> search = LossSearch([task], out_dir="/tmp/lp_search_doc", degree=2, popsize=4, epochs=5)
        >>> result = search.run(generations=1, resume=False, progress=False)  # doctest: +SKIP
    """

    def __init__(
        self,
        tasks: Sequence[LossTask | dict] | None = None,
        out_dir: str | Path = "runs/taylor_loss_search",
        degree: int = 5,
        other_degree: int = 0,
        basis: str = "bernstein",
        popsize: int = 8,
        sigma0: float = 0.5,
        seed: int = 0,
        tasks_per_generation: int | None = None,
        epochs: int = 120,
        lr: float = 1e-2,
        batch_size: int | None = None,
        device: str = "cpu",
        workers: int = 1,
        executor: Executor | None = None,
        final_evaluation: bool = True,
        x0: Sequence[float] | None = None,
        command: str | None = None,
    ) -> None:
        tasks = list(tasks) if tasks is not None else search_tasks()
        if not tasks:
            raise ValueError("tasks must hold at least one LossTask")
        self.tasks = [LossTask.from_dict(t) if isinstance(t, dict) else t for t in tasks]
        for t in self.tasks:
            if not isinstance(t, LossTask):
                raise TypeError(f"tasks must be LossTask objects or task dicts, got {type(t).__name__}")
        check_each((degree >= 1, f"degree must be >= 1, got {degree}"),
                   (other_degree >= 0, f"other_degree must be >= 0, got {other_degree}"))
        if basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
        if popsize < 2:
            raise ValueError(f"popsize must be >= 2, got {popsize}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if tasks_per_generation is not None and not 1 <= tasks_per_generation <= len(self.tasks):
            raise ValueError(
                f"tasks_per_generation must be None or in [1, {len(self.tasks)}] (the pool size), got {tasks_per_generation}"
            )
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise TypeError(f"executor must have a submit() method (concurrent.futures.Executor), got {executor!r}")
        self.out_dir = Path(out_dir)
        self.degree, self.other_degree, self.basis = int(degree), int(other_degree), basis
        self.popsize, self.sigma0, self.seed = int(popsize), float(sigma0), int(seed)
        self.tasks_per_generation = tasks_per_generation
        self.train_kwargs = {"epochs": int(epochs), "lr": float(lr), "batch_size": batch_size, "device": device}
        self.workers, self.executor, self.final_evaluation = int(workers), executor, bool(final_evaluation)
        dim = self.degree + self.other_degree
        x0 = list(x0) if x0 is not None else _start_vector(self.degree, self.other_degree, basis)
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
            "tasks": [t.describe() for t in self.tasks],
            "degree": self.degree,
            "other_degree": self.other_degree,
            "basis": self.basis,
            "popsize": self.popsize,
            "sigma0": self.sigma0,
            "seed": self.seed,
            "tasks_per_generation": self.tasks_per_generation,
            "x0": self.x0,
            **self.train_kwargs,
        }

    def _save_state(self, state: dict[str, Any]) -> None:
        with atomic_write(self.state_path, "wb") as fh:  # an interrupt never leaves a half-written checkpoint
            fh.write(pickle.dumps(state))

    def _load_state(self) -> dict[str, Any] | None:
        if not self.state_path.is_file():
            return None
        state = pickle.loads(self.state_path.read_bytes())  # our own checkpoint format (holds the cma object)
        if json.dumps(state.get("config"), sort_keys=True) != json.dumps(self.config(), sort_keys=True):
            raise ValueError(
                f"checkpoint {self.state_path} was made with a different search configuration; "
                "use another out_dir or resume=False to start over"
            )
        return state

    def tasks_for_generation(self, generation: int) -> list[LossTask]:
        """The tasks drawn for ``generation`` (0-based): a pure function of the seed and the generation."""
        if self.tasks_per_generation is None:
            return list(self.tasks)
        rng = np.random.default_rng([self.seed, generation])
        idx = np.sort(rng.choice(len(self.tasks), size=self.tasks_per_generation, replace=False))
        return [self.tasks[i] for i in idx]

    # -- scoring ----------------------------------------------------------------------------------
    def _score(self, xs: Sequence[Sequence[float]], tasks: Sequence[LossTask], pool: Any) -> list[float]:
        jobs = []
        for x in xs:
            c, d = vector_to_coefficients(x, self.degree, self.basis)
            jobs += [(c, d, t, self.train_kwargs) for t in tasks]
        if pool is None:
            scores = [score_job(j) for j in jobs]
        else:
            futures = [pool.submit(score_job, j) for j in jobs]
            scores = [float(f.result()) for f in futures]
        k = len(tasks)
        return [float(np.mean(scores[i * k : (i + 1) * k])) for i in range(len(xs))]

    def evaluate(self, coefficients: Sequence[float], other_coefficients: Sequence[float] = (),
                 tasks: Sequence[LossTask] | None = None) -> float:
        """Mean clean-validation accuracy of given coefficients on ``tasks`` (default: the pool), in-process."""
        jobs = [(list(coefficients), list(other_coefficients), t, self.train_kwargs) for t in (tasks or self.tasks)]
        return float(np.mean([score_job(j) for j in jobs]))

    def _open_pool(self) -> tuple[Any, bool]:
        if self.executor is not None:
            return self.executor, False
        if self.workers == 0:
            return None, False
        import multiprocessing as mp

        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init), True

    # -- main loop --------------------------------------------------------------------------------
    def run(
        self,
        generations: int = 12,
        resume: bool = True,
        progress: bool = True,
        callback: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> SearchResult:
        """Run (or continue) the search until ``generations`` generations are done in total.

        Args:
            generations: total number of generations (a resumed search counts those already done).
            resume: continue from ``out_dir/search_state.pkl`` if it exists (else start over).
            progress: show a tqdm bar.
            callback: called as ``callback(generation, log_record)`` after each checkpoint (e.g. to stop).

        Returns:
            A :class:`SearchResult`; the preset is also written to ``out_dir/best_preset.yaml``.
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
            np.random.seed(self.seed)
            # the ES samples from its own RandomState (pickled with it: a checkpoint carries the sampler's state);
            # by default cma binds numpy's global one, which a pickle round trip silently detaches
            sampler = np.random.RandomState(self.seed)
            es = cma.CMAEvolutionStrategy(
                self.x0, self.sigma0,
                {"seed": self.seed, "popsize": self.popsize, "randn": sampler.randn, "verbose": -9, "verb_disp": 0,
                 "verb_log": 0},
            )
            state = {"config": self.config(), "es": es, "np_state": np.random.get_state(), "generation": 0,
                     "history": [], "evaluations": 0, "final": None}
        es = state["es"]
        pool, owned = self._open_pool()
        bar = tqdm(total=generations, initial=min(state["generation"], generations), disable=not progress,
                   desc="CMA-ES generations", unit="gen")
        try:
            while state["generation"] < generations and not es.stop():
                tasks = self.tasks_for_generation(state["generation"])
                # cma draws from numpy's global RNG in ask() and tell(); scoring (data loading) may draw from it
                # too, so the ES gets its own saved stream around both calls: that makes resume exact
                np.random.set_state(state["np_state"])
                xs = es.ask()
                es_rng = np.random.get_state()
                fitness = self._score(xs, tasks, pool)
                np.random.set_state(es_rng)
                es.tell(xs, [-f for f in fitness])  # cma minimises
                state["np_state"] = np.random.get_state()
                np.random.set_state(user_np_state)
                best = int(np.argmax(fitness))
                state["generation"] += 1
                state["evaluations"] += len(xs)
                state["final"] = None  # more generations invalidate an earlier final evaluation
                record = {
                    "generation": state["generation"],
                    "tasks": [t.label for t in tasks],
                    "gen_best_fitness": fitness[best],
                    "gen_mean_fitness": float(np.mean(fitness)),
                    "gen_best_coefficients": vector_to_coefficients(xs[best], self.degree, self.basis)[0],
                    "mean_coefficients": vector_to_coefficients(es.mean, self.degree, self.basis)[0],
                    "sigma": float(es.sigma),
                }
                state["history"].append(record)
                self._save_state(state)
                with self.log_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                log.info("generation %d: best %.4f, mean %.4f, sigma %.3g", record["generation"],
                         record["gen_best_fitness"], record["gen_mean_fitness"], record["sigma"])
                bar.update(1)
                bar.set_postfix(gen_best=f"{record['gen_best_fitness']:.4f}", gen_mean=f"{record['gen_mean_fitness']:.4f}")
                if callback is not None:
                    callback(state["generation"], record)
            mean_x = [float(v) for v in es.mean]
            if self.final_evaluation and state["final"] is None:
                scores = self._score([mean_x, self.x0], self.tasks, pool)
                state["final"] = {"fitness": scores[0], "control_fitness": scores[1]}
                self._save_state(state)
        finally:
            bar.close()
            if owned:
                pool.shutdown()
            np.random.set_state(user_np_state)
        c, d = vector_to_coefficients(mean_x, self.degree, self.basis)
        final = state["final"] or {"fitness": math.nan, "control_fitness": math.nan}
        result = SearchResult(c, d, float(final["fitness"]), float(final["control_fitness"]), state["generation"],
                              state["evaluations"], list(state["history"]))
        result.preset_path = str(self.write_preset(result))
        return result

    def write_preset(self, result: SearchResult, path: str | Path | None = None, name: str = "searched") -> Path:
        """Write ``result`` as a YAML preset (coefficients + provenance) loadable by ``TaylorLoss(preset=path)``."""
        import yaml

        path = Path(path) if path is not None else self.preset_path
        doc = {
            "name": name,
            "coefficients": [round(v, 6) for v in result.coefficients],
            "other_coefficients": [round(v, 6) for v in result.other_coefficients],
            "gradient_weights": [round(v, 6) for v in gradient_weights_from_coefficients(result.coefficients)],
            "fitness": None if math.isnan(result.fitness) else round(result.fitness, 6),
            "control_fitness": None if math.isnan(result.control_fitness) else round(result.control_fitness, 6),
            "generations": result.generations,
            "evaluations": result.evaluations,
            "source": "CMA-ES search by lightning_papers.taylor_loss.search (not the paper's coefficients)",
            "command": self.command,
            "recipe": self.config(),
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
        return atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))


def search_taylor_loss(
    tasks: Sequence[LossTask | dict] | None = None,
    generations: int = 12,
    out_dir: str | Path = "runs/taylor_loss_search",
    resume: bool = True,
    progress: bool = True,
    **kwargs: Any,
) -> SearchResult:
    """Functional entry: ``LossSearch(tasks, out_dir, **kwargs).run(generations, resume, progress)``.

    Example::

        >>> task = LossTask("DigitsDataModule", model_args={"hidden": [16]})
        >>> res = search_taylor_loss([task], generations=1, popsize=2, epochs=3, workers=0,
        ...                          out_dir="/tmp/lp_doc_search", resume=False, progress=False)  # doctest: +SKIP
    """
    return LossSearch(tasks, out_dir=out_dir, **kwargs).run(generations, resume=resume, progress=progress)
