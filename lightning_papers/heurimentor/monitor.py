"""Training State Monitor (TSM): the Lightning callback that watches loss, gradients, sources and weights.

Aquila2 report §3.2: the TSM watches loss, per-domain behaviour and model weights against tokens seen,
and its findings trigger actions (new data, LR changes, data cleaning). Here every observation is
summed over ranks in one collective per step (:mod:`.collectives`, on the strategy's root device) and
published as a typed event on the bus the HeuriMentor callbacks share (:mod:`.events`). The detectors
live in :mod:`.detectors`, the bounded history in :mod:`.history`, the figure in :mod:`.dashboard`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch

from lightning_papers.heurimentor.collectives import StepReducer
from lightning_papers.heurimentor.detectors import (
    PlateauDetector,
    RelativeSpikeDetector,
    RollingMeanSpikeDetector,
    SpikeDetector,
    ZScoreSpikeDetector,
    make_detector,
)
from lightning_papers.heurimentor.events import (
    Event,
    HeldOutEvent,
    PlateauEvent,
    RollbackEvent,
    SkipEvent,
    SpikeEvent,
    StageChangeEvent,
    StepEvent,
    WeightsChangeEvent,
    get_bus,
)
from lightning_papers.heurimentor.history import RecordRing, StepHistory
from lightning_papers.heurimentor.trajectory import curves_from_stats, layer_std_stats, trajectory_distances

__all__ = [
    "PlateauDetector",
    "RelativeSpikeDetector",
    "RollingMeanSpikeDetector",
    "SpikeDetector",
    "TrainingStateMonitor",
    "ZScoreSpikeDetector",
    "make_detector",
    "per_sample_causal_lm_loss",
]


def per_sample_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence, shape (B,) (labels shifted like Hugging Face).

    Example::

        >>> per_sample_causal_lm_loss(torch.zeros(2, 4, 8), torch.zeros(2, 4, dtype=torch.long)).shape
        torch.Size([2])
    """
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    tok = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=ignore_index, reduction="none"
    ).view(shift_labels.shape)
    mask = (shift_labels != ignore_index).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp_min(1)


def _grad_sq(module: torch.nn.Module) -> tuple[torch.Tensor | None, float]:
    """(sum of squares of this rank's DTensor gradient shards as a device tensor, sum of squares of
    replicated gradients as a float). Sharded parts are summed over ranks; replicated ones are not."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover
        DTensor = ()  # type: ignore[assignment]
    sharded, replicated = [], []
    for p in module.parameters():
        g = p.grad
        if g is None:
            continue
        (sharded if isinstance(g, DTensor) else replicated).append(g.to_local() if isinstance(g, DTensor) else g)

    def sq(grads: list[torch.Tensor]) -> torch.Tensor | None:
        grads = [g for g in grads if g.numel()]
        if not grads:
            return None
        norms = torch._foreach_norm(grads)  # one fused call instead of a Python loop of reductions
        return torch.stack([n.double() for n in norms]).pow(2).sum()

    rep = sq(replicated)
    return sq(sharded), (0.0 if rep is None else float(rep))


class TrainingStateMonitor(L.Callback):
    """Training State Monitor: detectors, per-source loss, weight trajectory, events, log and dashboard.

    Works with any LightningModule trained with automatic optimization whose ``training_step`` returns a
    loss (or ``{"loss": ...}``). Per-source loss needs batches with ``"source_ids"`` and a per-sample
    loss, returned as ``{"loss": ..., "sample_loss": Tensor(B)}``. The held-out per-source loss needs
    a datamodule with ``heldout_batches()`` and a module with ``per_sample_loss(batch)``.

    Collectives: one ``trainer.strategy.reduce`` per step, on ``trainer.strategy.root_device``, carries
    the loss, gradient sum of squares, non-finite flag, tokens, per-detector flags, and (on the steps that
    need them) per-source loss sums, the per-source loss of the last spiky step (for blame) and the
    weight-trajectory sums. State is bounded: a ring buffer plus running summaries (:class:`StepHistory`)
    and at most ``max_records`` held-out / mixture / trajectory / rollback records.

    Args:
        detectors: spike detectors or specs ``{"kind": "relative"|"rolling"|"zscore", ...}``
            (default: rolling-mean ratio 1.5 over 20 steps and z-score 6 over 128 steps).
        plateau_window: steps in the plateau regression window (0 disables).
        plateau_tolerance: minimum relative decrease of the smoothed loss over the window.
        plateau_smoothing: EMA factor applied before the regression.
        heldout_every: evaluate held-out per-source loss every N steps (0: off).
        trajectory_every: record std-over-layers curves every N steps (0: only when a checkpoint is saved).
        source_ema: EMA factor of the per-source training loss.
        blame_threshold: at a spike, blame the source whose loss rose most above its running mean, if that
            relative rise is at least this. Published on the *next* step's ``StepEvent`` (``culprit`` and
            ``culprit_step``), because the per-sample losses of a step are only known after its update.
        source_loss_every: reduce the per-source training loss every N steps (``StepEvent.source_loss`` is
            empty on the other steps); the gradient norm too, unless a detector watches ``grad_norm``.
        history_size: steps kept exactly in the ring buffer (a decimated trace covers the whole run).
        max_records: held-out, mixture-weight, trajectory and rollback records kept (oldest dropped).
        log_dir: where ``heurimentor.log`` and ``heurimentor_dashboard.png`` go. Default: the logger's
            directory (``trainer.log_dir``, one per run); without a logger and without ``log_dir`` no file
            is written (events stay on the bus and in the history). The log is truncated at the start of
            each fit (never appended to a previous run's file); nothing is written to the working directory.
        dashboard: write the PNG dashboard at the end of fit.
        log_metrics: also ``pl_module.log`` the monitored values under ``hm/``.

    Example::

        >>> tsm = TrainingStateMonitor(detectors=[{"kind": "relative", "threshold": 0.5}], plateau_window=50)
        >>> [d.name for d in tsm.detectors]
        ['relative:loss']
    """

    def __init__(
        self,
        detectors: Sequence[SpikeDetector | Mapping[str, Any]] | None = None,
        plateau_window: int = 100,
        plateau_tolerance: float = 0.01,
        plateau_smoothing: float = 0.0,
        heldout_every: int = 0,
        trajectory_every: int = 0,
        source_ema: float = 0.9,
        blame_threshold: float = 0.2,
        source_loss_every: int = 10,
        history_size: int = 2048,
        max_records: int = 256,
        log_dir: str | None = None,
        dashboard: bool = True,
        log_metrics: bool = True,
    ) -> None:
        super().__init__()
        if detectors is None:
            detectors = [{"kind": "rolling", "window": 20, "ratio": 1.5}, {"kind": "zscore", "window": 128, "threshold": 6.0}]
        self.detectors = [make_detector(d) for d in detectors]
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detectors must have distinct kind:metric names, got {names}")
        if heldout_every < 0 or trajectory_every < 0:
            raise ValueError(f"heldout_every and trajectory_every must be >= 0, got {heldout_every}, {trajectory_every}")
        if not 0 <= source_ema < 1:
            raise ValueError(f"source_ema must be in [0, 1), got {source_ema}")
        if source_loss_every < 1:
            raise ValueError(f"source_loss_every must be >= 1, got {source_loss_every}")
        if history_size < 1 or max_records < 1:
            raise ValueError(f"history_size and max_records must be >= 1, got {history_size}, {max_records}")
        self.plateau = PlateauDetector(plateau_window, plateau_tolerance, plateau_smoothing) if plateau_window else None
        self.heldout_every, self.trajectory_every, self.source_ema = heldout_every, trajectory_every, source_ema
        self.blame_threshold, self.source_loss_every = blame_threshold, source_loss_every
        self.history_size, self.max_records = history_size, max_records
        self._grad_detectors = any(d.metric == "grad_norm" for d in self.detectors)
        self.log_dir, self.dashboard, self.log_metrics = log_dir, dashboard, log_metrics
        self.reducer = StepReducer()
        self.source_names: list[str] = []
        self._reset_state()
        self._bus = None
        self._log_file: Path | None = None
        self.out_dir: Path | None = None

    def _reset_state(self) -> None:
        self.history = StepHistory(self.history_size, min(1024, max(2, self.history_size)))
        # fixed-size tables: (step, tokens, {name: value}) records, the newest max_records kept
        self.heldout_history = RecordRing(self.max_records)  # held-out loss per source
        self.weights_history = RecordRing(self.max_records)  # mixture weights per source
        self.rollbacks = RecordRing(self.max_records)  # {"to_step": ...}
        self.trajectory_dist = RecordRing(self.max_records)  # Fréchet distance per parameter type
        self.trajectory_last: tuple[int, int, dict[str, list[float]]] | None = None  # (step, tokens, curves)
        self.source_loss_ema: dict[str, float] = {}
        self.step = 0  # index of the current optimizer step (trainer.global_step when its batch started)
        self.tokens = 0
        self.consecutive = 0
        self._src_acc: torch.Tensor | None = None  # local per-source (loss sums, counts) since the last reduce
        self._src_steps = 0
        self._blame: tuple[int, torch.Tensor] | None = None  # (spiky step, its local per-source sums)
        self._traj_pending: tuple[int, int, list, torch.Tensor] | None = None
        self._micro_losses: list[float] = []
        self._step_tokens = 0
        self._pending: dict[str, Any] | None = None
        self._skipped_now = False

    # ---------------------------------------------------------------- wiring
    @property
    def state_key(self) -> str:
        return "TrainingStateMonitor"

    @property
    def bus(self):
        return self._bus

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._bus = get_bus(trainer)
        self._bus.subscribe(Event, self._on_event)
        self._bus.subscribe(SkipEvent, self._on_skip)
        dm = getattr(trainer, "datamodule", None)
        names = getattr(dm, "source_names", None)
        if names:
            self.source_names = list(names)
        sampler = getattr(dm, "sampler", None)
        if sampler is not None and not self.weights_history and hasattr(sampler, "weights"):
            self.weights_history.append(0, 0, dict(sampler.weights))  # starting mixture, for the dashboard
        self.out_dir = self._resolve_out_dir(trainer)
        self._log_file = None if self.out_dir is None else self.out_dir / "heurimentor.log"

    def _resolve_out_dir(self, trainer: L.Trainer) -> Path | None:
        if self.log_dir:
            return Path(self.log_dir)
        if trainer.loggers and getattr(trainer.loggers[0], "save_dir", None):
            log_dir = trainer.log_dir  # the logger's per-run directory (a strategy broadcast: every rank calls it)
            if log_dir:
                return Path(log_dir)
        return None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self._log_file is not None and _is_rank_zero(trainer):
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_file.write_text("", encoding="utf-8")  # one file per run: never append to a stale one

    def _on_skip(self, event: SkipEvent) -> None:
        self._skipped_now = True

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StageChangeEvent | WeightsChangeEvent):
            self.weights_history.append(event.step, event.tokens, dict(event.weights))
        if isinstance(event, RollbackEvent):
            self.rollbacks.append(event.step, event.tokens, {"to_step": event.to_step})
        if isinstance(event, StepEvent) and not event.spike and event.culprit is None:
            return  # routine steps are in the history, not in the text log
        if self._log_file is not None and self._log_file.parent.is_dir() and _is_rank_zero():
            fields = ", ".join(f"{k}={_fmt(v)}" for k, v in event.as_dict().items() if k not in ("event", "step", "tokens"))
            with self._log_file.open("a", encoding="utf-8") as f:
                f.write(f"step {event.step:>7} | tokens {event.tokens:>12,} | {type(event).__name__:<18} | {fields}\n")

    # ---------------------------------------------------------------- per step
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._micro_losses = []
        self._skipped_now = False
        self._pending = None
        self.step = trainer.global_step
        ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
        self._step_tokens = int(ids.numel()) if isinstance(ids, torch.Tensor) else 0

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._micro_losses.append(float(loss.detach()))

    def _queue_periodic(self) -> None:
        """Add the parts that ride along with this step's collective (identical decision on every rank)."""
        if self._src_acc is not None and self._src_steps >= self.source_loss_every:
            self.reducer.add("src", self._src_acc)
        if self._blame is not None:
            self.reducer.add("blame", self._blame[1])
        if self._traj_pending is not None:
            self.reducer.add("traj", self._traj_pending[3])

    def _consume_periodic(self, red: Mapping[str, torch.Tensor]) -> tuple[dict[str, float], str | None, int | None]:
        source_loss: dict[str, float] = {}
        if "src" in red:
            n = len(red["src"]) // 2
            sums, counts = red["src"][:n].tolist(), red["src"][n:].tolist()
            source_loss = {self.source_names[i]: sums[i] / counts[i] for i in range(n) if counts[i] > 0}
            self._src_acc.zero_()
            self._src_steps = 0
            for k, v in source_loss.items():
                if math.isfinite(v):
                    old = self.source_loss_ema.get(k)
                    self.source_loss_ema[k] = v if old is None else self.source_ema * old + (1 - self.source_ema) * v
        culprit = culprit_step = None
        if "blame" in red:
            culprit_step = self._blame[0]
            n = len(red["blame"]) // 2
            sums, counts = red["blame"][:n].tolist(), red["blame"][n:].tolist()
            at_spike = {self.source_names[i]: sums[i] / counts[i] for i in range(n) if counts[i] > 0}
            rise = {k: (v - self.source_loss_ema[k]) / max(abs(self.source_loss_ema[k]), 1e-12)
                    for k, v in at_spike.items() if k in self.source_loss_ema and math.isfinite(v)}
            if rise and max(rise.values()) >= self.blame_threshold:
                culprit = max(rise, key=rise.get)
            self._blame = None
        if "traj" in red:
            step, tokens, keys, _ = self._traj_pending
            self._traj_pending = None
            self._add_trajectory(step, tokens, curves_from_stats(keys, red["traj"]))
        return source_loss, culprit, culprit_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """Decide spikes before the update (all ranks agree: one collective), publish :class:`SpikeEvent`."""
        local_loss = float(np.mean(self._micro_losses)) if self._micro_losses else float("nan")
        # the gradient norm costs a pass over all gradients: every step only if a detector needs it
        need_grad = self._grad_detectors or (self.step + 1) % self.source_loss_every == 0
        sharded, replicated = _grad_sq(pl_module) if need_grad else (None, 0.0)
        local_flags = [1.0 if d.metric == "loss" and d.check(local_loss)[0] else 0.0 for d in self.detectors]
        nonfinite = 0.0 if math.isfinite(local_loss) and math.isfinite(replicated) else 1.0
        self.reducer.add("step", [0.0 if math.isnan(local_loss) else local_loss, nonfinite, float(self._step_tokens), *local_flags])
        if need_grad:
            self.reducer.add("grad", sharded.reshape(1) if sharded is not None else [0.0])
        self._queue_periodic()
        red = self.reducer.reduce(trainer)
        step_part = red["step"].tolist()
        world = max(1, trainer.world_size)
        grad_sq = float(red["grad"][0]) + replicated if need_grad else float("nan")
        non_finite = step_part[1] > 0 or (need_grad and not math.isfinite(grad_sq))
        mean_loss = step_part[0] / world if not non_finite else float("nan")
        grad_norm = math.sqrt(max(grad_sq, 0.0)) if need_grad and not non_finite else float("nan")
        source_loss, culprit, culprit_step = self._consume_periodic(red)
        values = {"loss": mean_loss, "grad_norm": grad_norm}
        fired, reference = [], float("nan")
        for det, flag in zip(self.detectors, step_part[3:]):
            hit, ref = det.check(values[det.metric]) if not non_finite else (False, float("nan"))
            if hit or flag > 0:
                fired.append(det.name)
                reference = ref if math.isnan(reference) else reference
        spike = non_finite or bool(fired)
        self.consecutive = self.consecutive + 1 if spike else 0
        self._pending = {"loss": mean_loss, "grad_norm": grad_norm, "tokens": step_part[2], "spike": spike,
                         "source_loss": source_loss, "culprit": culprit, "culprit_step": culprit_step}
        if spike:
            self._bus.publish(
                SpikeEvent(
                    step=self.step, tokens=self.tokens, loss=local_loss, reference=reference,
                    detectors=fired or ["non_finite"], consecutive=self.consecutive, non_finite=non_finite,
                )
            )
        else:
            for det in self.detectors:
                det.accept(values[det.metric])

    def _accumulate_sources(self, outputs, batch) -> torch.Tensor | None:
        """This step's local per-source (loss sums, counts), added to the running accumulator."""
        sample_loss = outputs.get("sample_loss") if isinstance(outputs, Mapping) else None
        sids = batch.get("source_ids") if isinstance(batch, Mapping) else None
        if sample_loss is None or sids is None:
            return None
        if not self.source_names:
            self.source_names = [f"source{i}" for i in range(16)]
        n = len(self.source_names)
        ids = sids.detach().cpu().long()
        if ids.numel() and int(ids.max()) >= n:
            raise ValueError(f"batch has source id {int(ids.max())} but only {n} source names are known: {self.source_names}")
        sl = sample_loss.detach().double().cpu()
        now = torch.zeros(2 * n, dtype=torch.float64)
        now[:n].index_add_(0, ids, sl)
        now[n:].index_add_(0, ids, torch.ones_like(sl))
        if self._src_acc is None or len(self._src_acc) != 2 * n:
            self._src_acc = torch.zeros(2 * n, dtype=torch.float64)
        self._src_acc += now
        return now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pending, self._pending = self._pending, None
        if pending is None:  # no optimizer step ran (e.g. manual optimization): reduce here
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float("nan")
            self.reducer.add("step", [value, float(self._step_tokens)])
            self._queue_periodic()
            red = self.reducer.reduce(trainer)
            source_loss, culprit, culprit_step = self._consume_periodic(red)
            pending = {"loss": float(red["step"][0]) / max(1, trainer.world_size), "grad_norm": float("nan"),
                       "tokens": float(red["step"][1]), "spike": False, "source_loss": source_loss,
                       "culprit": culprit, "culprit_step": culprit_step}
        step = self.step
        if not self._skipped_now:
            self.tokens += int(pending["tokens"])
        now = self._accumulate_sources(outputs, batch)
        self._src_steps += 1
        if pending["spike"] and now is not None:
            self._blame = (step, now)  # reduced with the next step's collective
        source_loss = pending["source_loss"]
        self.history.append(step, self.tokens, pending["loss"], pending["grad_norm"], bool(pending["spike"]),
                            self._skipped_now, source_loss)
        self._bus.publish(
            StepEvent(step=step, tokens=self.tokens, loss=pending["loss"], grad_norm=pending["grad_norm"],
                      source_loss=source_loss, spike=bool(pending["spike"]), skipped=self._skipped_now,
                      culprit=pending["culprit"], culprit_step=pending["culprit_step"])
        )
        if self.plateau is not None and not pending["spike"]:
            slope = self.plateau.update(pending["loss"])
            if slope is not None:
                self._bus.publish(PlateauEvent(step=step, tokens=self.tokens, slope=slope, window=self.plateau.window))
        if self.heldout_every and step > 0 and step % self.heldout_every == 0:
            self.evaluate_heldout(trainer, pl_module)
        if self.trajectory_every and step > 0 and step % self.trajectory_every == 0:
            self._queue_trajectory(trainer, pl_module)
        if self.log_metrics and math.isfinite(pending["loss"]):
            metrics = {"hm/loss": pending["loss"], "hm/tokens": float(self.tokens), "hm/spike": float(pending["spike"])}
            if math.isfinite(pending["grad_norm"]):
                metrics["hm/grad_norm"] = pending["grad_norm"]
            metrics.update({f"hm/loss_{k}": v for k, v in source_loss.items()})
            pl_module.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=False, rank_zero_only=True)

    # ---------------------------------------------------------------- periodic probes
    @torch.no_grad()
    def evaluate_heldout(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Held-out loss per source (needs ``datamodule.heldout_batches()`` and ``pl_module.per_sample_loss``).

        Every rank evaluates the same batches (so no collective is needed; sharded models run the forward
        on all ranks together)."""
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "heldout_batches") or not hasattr(pl_module, "per_sample_loss"):
            return {}
        was_training = pl_module.training
        pl_module.eval()
        losses = {}
        for name, batch in dm.heldout_batches().items():
            batch = {k: v.to(pl_module.device) for k, v in batch.items()}
            losses[name] = float(pl_module.per_sample_loss(batch).mean())
        pl_module.train(was_training)
        self.heldout_history.append(self.step, self.tokens, losses)
        self._bus.publish(HeldOutEvent(step=self.step, tokens=self.tokens, losses=losses))
        return losses

    def _queue_trajectory(self, trainer: L.Trainer, pl_module: torch.nn.Module) -> None:
        """Compute this rank's std sums now; they are reduced with the next step's collective."""
        keys, table = layer_std_stats(pl_module.named_parameters(), count_replicated=trainer.global_rank == 0)
        if table is not None:
            self._traj_pending = (self.step, self.tokens, keys, table)

    def _add_trajectory(self, step: int, tokens: int, curves: dict[str, list[float]]) -> dict[str, float]:
        dist: dict[str, float] = {}
        last = self.trajectory_last
        if last is not None and tokens > last[1]:
            dist = trajectory_distances(last[2], last[1], curves, tokens)
            self.trajectory_dist.append(step, tokens, dist)
        if last is None or tokens > last[1]:
            self.trajectory_last = (step, tokens, curves)
        return dist

    def record_trajectory(self, trainer: L.Trainer, pl_module: torch.nn.Module) -> dict[str, float]:
        """Record std-over-layers curves now (one collective; every rank must call it); return the per-type
        distance to the previous record (per 1B tokens)."""
        keys, table = layer_std_stats(pl_module.named_parameters(), count_replicated=trainer.global_rank == 0)
        if table is None:
            return {}
        self.reducer.add("traj_now", table)
        red = self.reducer.reduce(trainer)
        return self._add_trajectory(self.step, self.tokens, curves_from_stats(keys, red["traj_now"]))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if not self.trajectory_every and (self.trajectory_last is None or self.tokens > self.trajectory_last[1]):
            self.record_trajectory(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._traj_pending is not None:  # the last probe has no next step to ride along with
            step, tokens, keys, table = self._traj_pending
            self._traj_pending = None
            self.reducer.add("traj", table)
            self._add_trajectory(step, tokens, curves_from_stats(keys, self.reducer.reduce(trainer)["traj"]))

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.dashboard and _is_rank_zero(trainer) and len(self.history) and self.out_dir is not None:
            try:
                self.save_dashboard(self.out_dir / "heurimentor_dashboard.png")
            except Exception as err:  # a plotting problem must never fail a training run
                warnings.warn(f"could not write the HeuriMentor dashboard: {err}", stacklevel=2)

    def save_dashboard(self, path: str | Path) -> Path:
        """Write the 2x2 PNG dashboard (see :func:`~lightning_papers.heurimentor.dashboard.save_dashboard`)."""
        from lightning_papers.heurimentor.dashboard import save_dashboard

        return save_dashboard(path, self.history, list(self.heldout_history), list(self.weights_history),
                              [(s, d["to_step"]) for s, _, d in self.rollbacks], [(t, d) for _, t, d in self.trajectory_dist])

    # ---------------------------------------------------------------- state
    def rebaseline(self) -> None:
        """Forget detector histories (after a rollback the loss level may legitimately differ)."""
        for d in self.detectors:
            d.reset()
        self.consecutive = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "detectors": {d.name: d.state_dict() for d in self.detectors},
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "tokens": self.tokens,
            "step": self.step,
            "src_acc": None if self._src_acc is None else self._src_acc.clone(),
            "src_steps": self._src_steps,
            "blame": None if self._blame is None else (self._blame[0], self._blame[1].clone()),
            "consecutive": self.consecutive,
            "source_loss_ema": dict(self.source_loss_ema),
            "source_names": list(self.source_names),
            "history": self.history.state_dict(),
            "heldout_history": self.heldout_history.state_dict(),
            "weights_history": self.weights_history.state_dict(),
            "rollbacks": self.rollbacks.state_dict(),
            "trajectory_last": self.trajectory_last,
            "trajectory_dist": self.trajectory_dist.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        required = ("detectors", "tokens", "consecutive", "source_loss_ema", "source_names", "history",
                    "heldout_history", "weights_history", "rollbacks", "trajectory_dist")
        missing = [k for k in required if k not in state_dict]
        if missing:
            raise ValueError(
                f"not a TrainingStateMonitor state (missing {missing}; got keys {sorted(state_dict)[:8]})"
            )
        for d in self.detectors:
            if d.name in state_dict["detectors"]:
                d.load_state_dict(state_dict["detectors"][d.name])
        if self.plateau is not None and state_dict.get("plateau") is not None:
            self.plateau.load_state_dict(state_dict["plateau"])
        self.tokens, self.consecutive = int(state_dict["tokens"]), int(state_dict["consecutive"])
        self.step = int(state_dict.get("step", 0))
        acc = state_dict.get("src_acc")
        self._src_acc = None if acc is None else acc.clone()
        self._src_steps = int(state_dict.get("src_steps", 0))
        blame = state_dict.get("blame")
        self._blame = None if blame is None else (int(blame[0]), blame[1].clone())
        self.source_loss_ema = dict(state_dict["source_loss_ema"])
        self.source_names = list(state_dict["source_names"]) or self.source_names
        self.history.load_state_dict(state_dict["history"])
        for name in ("heldout_history", "weights_history", "rollbacks", "trajectory_dist"):
            getattr(self, name).load_state_dict(state_dict[name])
        self.trajectory_last = state_dict.get("trajectory_last")


def _is_rank_zero(trainer: L.Trainer | None = None) -> bool:
    if trainer is not None:
        return trainer.is_global_zero
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)
