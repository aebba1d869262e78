"""The ``lightning-papers meta-train`` subcommand (a plain typed function; arguments from CLI or ``--config``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["meta_train"]


def meta_train(
    families: list[str] | None = None,
    output: str = "metamd_map.pt",
    init_map: str | None = None,
    num_terms: int = 4,
    assignment: str = "role",
    init_scale: float = 1.0,
    meta_steps: int = 200,
    tasks_per_step: int = 2,
    unroll_steps: int = 20,
    max_warm_start: int = 0,
    lr: float = 1.0,
    meta_lr: float = 0.03,
    second_order: bool = True,
    objective: str = "regret_bound",
    task_pool: int = 64,
    reference_steps: int = 300,
    reference_lr: float = 0.01,
    n_train: int = 256,
    split_seed: int = 0,
    seed: int = 0,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 20,
    resume: bool = True,
    progress: bool = True,
) -> str:
    """Meta-learn a MetaMD mirror map on embedded task families and save it.

    Args:
        families: task families (``mlp_digits``, ``mlp_mnist1d``, ``logistic_digits``, ``logistic_mnist1d``,
            ``least_squares``); default ``["mlp_digits"]``.
        output: file to write the learned map to (load it with ``MetaMirrorDescent(mirror_map=<path>)``).
        init_map: start from this map (preset name or path) instead of a fresh one.
        num_terms: ``tanh`` terms per slot of a fresh map.
        assignment: slot assignment of a fresh map (``role``, ``kind``, ``shared``).
        init_scale: initial linear coefficient ``d`` of a fresh map.
        meta_steps: meta-updates.
        tasks_per_step: tasks per meta-update.
        unroll_steps: unrolled mirror-descent steps per task.
        max_warm_start: random number (0..this) of untracked steps before the unrolled window.
        lr: base step size the map is trained for (use the same ``lr`` with the optimizer).
        meta_lr: Adam learning rate on the map's parameters.
        second_order: differentiate through the gradients of the unrolled steps.
        objective: ``regret_bound`` (the paper) or ``loss`` (ablation).
        task_pool: distinct tasks (reference solutions are cached).
        reference_steps: Adam steps for each task's reference solution.
        reference_lr: Adam learning rate of the reference solution.
        n_train: training examples per task (classification families).
        split_seed: which train/test split of the dataset tasks draw from.
        seed: seed of the task draws.
        checkpoint_dir: directory for resumable checkpoints (None: no checkpoints).
        checkpoint_every: meta-steps between checkpoints.
        resume: continue from a checkpoint in ``checkpoint_dir``.
        progress: show a progress bar.

    Returns:
        A one-paragraph summary (objective before/after, where the map was written).
    """
    from lightning_papers.metamd.meta_train import meta_train as _meta_train
    from lightning_papers.metamd.mirror_map import MirrorMap
    from lightning_papers.metamd.optimizer import resolve_mirror_map
    from lightning_papers.metamd.tasks import make_sampler

    sampler = make_sampler(families or ["mlp_digits"], n_train=n_train, split_seed=split_seed)
    if init_map is not None:
        mirror_map = resolve_mirror_map(init_map)
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
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        output=None,
        progress=progress,
    )
    res.mirror_map.meta.update(
        families=list(families or ["mlp_digits"]), n_train=n_train, split_seed=split_seed
    )
    path = res.mirror_map.save(Path(output))
    h = res.history
    k = max(1, min(10, len(h) // 5))
    first = sum(r["objective"] for r in h[:k]) / k
    last = sum(r["objective"] for r in h[-k:]) / k
    return (
        f"meta-trained MetaMD map ({objective}): mean log objective {first:.3f} (first {k} steps) -> "
        f"{last:.3f} (last {k}); final unrolled loss {h[0]['final_loss']:.3f} -> {h[-1]['final_loss']:.3f}; "
        f"wrote {path}"
    )
