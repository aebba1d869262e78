"""The ``lightning-papers meta-train`` subcommand (a plain typed function; arguments from CLI or ``--config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch

__all__ = ["meta_train"]

#: The families the shipped adaptive map is meta-trained on (split 0 / first text half).
DEFAULT_ADAPTIVE_FAMILIES = [
    "mlp_digits",
    "mlp_mnist1d",
    "logistic_digits",
    "cnn_digits",
    "cnn_mnist1d",
    "lm_pydoc",
]


def meta_train(
    families: list[str] | None = None,
    model: torch.nn.Module | None = None,
    data: L.LightningDataModule | None = None,
    loss: str | None = None,
    n_examples: int = 256,
    map_family: Literal["adaptive", "static"] = "adaptive",
    output: str = "metamd_map.pt",
    init_map: str | None = None,
    hidden: int = 16,
    step_bound: float = 1.0,
    agreement_bound: float = 0.5,
    num_terms: int = 4,
    assignment: str = "role",
    init_scale: float = 1.0,
    meta_steps: int = 200,
    tasks_per_step: int = 2,
    unroll_steps: int = 20,
    max_warm_start: int = 0,
    lr: float | None = None,
    meta_lr: float = 0.03,
    second_order: bool = True,
    objective: Literal["regret_bound", "loss"] | None = None,
    task_pool: int = 64,
    reference_steps: int = 300,
    reference_lr: float = 0.01,
    val_tasks: int = 4,
    val_every: int = 10,
    val_steps: int = 100,
    n_train: int = 256,
    split_seed: int = 0,
    seed: int = 0,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 20,
    resume: bool = True,
    progress: bool = True,
) -> str:
    """Meta-learn a MetaMD mirror map on embedded task families or on your own model, and save it.

    Args:
        families: embedded task families (``mlp_digits``, ``mlp_mnist1d``, ``logistic_digits``,
            ``logistic_mnist1d``, ``least_squares``, ``cnn_digits``, ``cnn_mnist1d``, ``cnn_deep_digits``,
            ``lm_pydoc``, ``lm_stdlib``); default: the shipped map's mixture. Ignored when ``model`` is given.
        model: your ``nn.Module`` / ``LightningModule`` (``class_path`` + ``init_args`` in YAML): tasks are
            fresh inits of it on random subsets of ``data``.
        data: a ``LightningDataModule`` (class path in YAML) whose ``train_dataloader`` gives the examples.
        loss: ``cross_entropy``, ``mse`` or a dotted path; None with a LightningModule uses its training_step.
        n_examples: examples per task with ``model``.
        map_family: ``adaptive`` (default: Adam × a learned factor) or ``static`` (the paper-literal map).
        output: file to write the learned map to (use it with ``MetaMirrorDescent(mirror_map=<path>)``).
        init_map: start from this map (preset name or path) instead of a fresh one.
        hidden, step_bound, agreement_bound: size and bounds of a fresh adaptive map.
        num_terms, assignment, init_scale: shape of a fresh static map.
        meta_steps: meta-updates.
        tasks_per_step: tasks per meta-update.
        unroll_steps: unrolled mirror-descent steps per task.
        max_warm_start: random number (0..this) of untracked steps before the unrolled window.
        lr: base step size (adaptive: None = each family's Adam lr, or 1e-3 for ``model``; static: 1.0).
        meta_lr: Adam learning rate on the map's parameters.
        second_order: differentiate through the gradients of the unrolled steps.
        objective: ``regret_bound`` (the paper's: the regret bound) or ``loss`` (mean log unrolled training
            loss); None: ``loss`` for the adaptive family (better on validation tasks), ``regret_bound`` for static.
        task_pool: distinct tasks (reference solutions are cached).
        reference_steps: Adam steps for each task's reference solution.
        reference_lr: Adam learning rate of the static family's reference solution.
        val_tasks, val_every, val_steps: adaptive family: model selection on validation tasks.
        n_train: training examples per task (embedded classification families).
        split_seed: which train/test split of the dataset tasks draw from.
        seed: seed of the task draws.
        checkpoint_dir: directory for resumable checkpoints (None: no checkpoints).
        checkpoint_every: meta-steps between checkpoints.
        resume: continue from a checkpoint in ``checkpoint_dir``.
        progress: show a progress bar.

    Returns:
        A one-paragraph summary (objective before/after, where the map was written).
    """
    from lightning_papers.metamd.adaptive import AdaptiveMirrorMap
    from lightning_papers.metamd.meta_training import meta_train as _meta_train
    from lightning_papers.metamd.mirror_map import MirrorMap
    from lightning_papers.metamd.optimizer import resolve_mirror_map
    from lightning_papers.metamd.tasks import make_sampler

    if map_family not in ("adaptive", "static"):
        raise ValueError(f"map_family must be 'adaptive' or 'static', got {map_family!r}")
    if families is None:
        families = DEFAULT_ADAPTIVE_FAMILIES if map_family == "adaptive" else ["mlp_digits"]
    if model is not None:
        if data is None:
            raise ValueError("model= needs data= (a LightningDataModule, DataLoader or Dataset)")
        sampler: Any = model
    else:
        sampler = make_sampler(families, n_train=n_train, split_seed=split_seed)
    if init_map is not None:
        mirror_map = resolve_mirror_map(init_map)
    elif map_family == "adaptive":
        mirror_map = AdaptiveMirrorMap(hidden=hidden, step_bound=step_bound, agreement_bound=agreement_bound)
    else:
        slots = {"shared": 1, "kind": 2, "role": 4}
        if assignment not in slots:
            raise ValueError(f"assignment must be one of {sorted(slots)} for a fresh map, got {assignment!r}")
        mirror_map = MirrorMap(
            num_slots=slots[assignment], num_terms=num_terms, assignment=assignment, init_scale=init_scale
        )
    res = _meta_train(
        sampler,
        mirror_map,
        data=data,
        loss=loss,
        n_examples=n_examples,
        meta_steps=meta_steps,
        tasks_per_step=tasks_per_step,
        unroll_steps=unroll_steps,
        max_warm_start=max_warm_start,
        lr=lr,
        meta_lr=meta_lr,
        second_order=second_order,
        objective=objective,
        task_pool=task_pool,
        reference_steps=reference_steps,
        reference_lr=reference_lr,
        val_tasks=val_tasks,
        val_every=val_every,
        val_steps=val_steps,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        output=None,
        progress=progress,
    )
    source = [type(model).__name__] if model is not None else list(families)
    res.mirror_map.meta.update(families=source, n_train=n_train, split_seed=split_seed)
    path = res.mirror_map.save(Path(output))
    h = res.history
    k = max(1, min(10, len(h) // 5))
    first = sum(r["objective"] for r in h[:k]) / k
    last = sum(r["objective"] for r in h[-k:]) / k
    sel = res.mirror_map.meta.get("selected_step")
    chosen = f"; selected meta-step {sel} on validation tasks" if sel is not None else ""
    return (
        f"meta-trained MetaMD map ({map_family}): mean log objective {first:.3f} (first {k} steps) -> "
        f"{last:.3f} (last {k}){chosen}; final unrolled loss {h[0]['final_loss']:.3f} -> "
        f"{h[-1]['final_loss']:.3f}; wrote {path}"
    )
