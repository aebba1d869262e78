"""``SpikeLLMQuantization``: quantize a LightningModule's causal LM with SpikeLLM after training."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.utilities import rank_zero_info

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.eval import perplexity
from lightning_papers.spikellm.quantize import QuantizationReport, quantize

__all__ = ["SpikeLLMQuantization"]

_WHEN = ("fit_end", "validate_start", "test_start")


class SpikeLLMQuantization(L.Callback):
    """Quantize ``pl_module.<model_attr>`` in place with SpikeLLM and log perplexity before/after.

    Calibration windows come from the datamodule's ``calibration_batches(nsamples, seqlen, seed)`` and
    perplexity from its ``tokens(eval_split)`` (as :class:`~lightning_papers.data.TextDataModule` has).

    Args:
        config: SpikeLLM settings (``nsamples``/``seqlen`` set the calibration size).
        when: ``"fit_end"`` (after ``trainer.fit``), ``"validate_start"`` or ``"test_start"`` (before
            ``trainer.validate`` / ``trainer.test`` evaluate, so they measure the quantized model).
        model_attr: attribute of the LightningModule holding the Hugging Face LM.
        eval_split: split passed to ``datamodule.tokens``; ``None`` skips perplexity.
        eval_seqlen: perplexity window (default ``config.seqlen``).
        max_eval_windows: cap on evaluated windows.
        batch_size: calibration windows per forward.
        progress: show the per-layer progress bar.

    Attributes:
        report: the :class:`QuantizationReport` once run.
        metrics: ``{"spikellm/ppl_before", "spikellm/ppl_after", "spikellm/avg_weight_bits", ...}``.

    Example::

        >>> cb = SpikeLLMQuantization(SpikeLLMConfig(nsamples=8, seqlen=64))
        >>> cb.when
        'fit_end'
    """

    def __init__(
        self,
        config: SpikeLLMConfig | None = None,
        when: str = "fit_end",
        model_attr: str = "model",
        eval_split: str | None = "val",
        eval_seqlen: int | None = None,
        max_eval_windows: int | None = 64,
        batch_size: int = 8,
        progress: bool = False,
    ) -> None:
        if when not in _WHEN:
            raise ValueError(f"when must be one of {_WHEN}, got {when!r}")
        self.config = config if config is not None else SpikeLLMConfig(nsamples=32, seqlen=128)
        if not isinstance(self.config, SpikeLLMConfig):
            raise TypeError(f"config must be a SpikeLLMConfig, got {type(self.config).__name__}")
        self.when, self.model_attr, self.eval_split = when, model_attr, eval_split
        self.eval_seqlen, self.max_eval_windows = eval_seqlen, max_eval_windows
        self.batch_size, self.progress = batch_size, progress
        self.report: QuantizationReport | None = None
        self.metrics: dict[str, float] = {}

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.report is not None:
            return
        lm = getattr(pl_module, self.model_attr, None)
        if lm is None:
            raise AttributeError(f"{type(pl_module).__name__} has no model attribute {self.model_attr!r} to quantize")
        dm: Any = trainer.datamodule
        if dm is None or not hasattr(dm, "calibration_batches"):
            raise ValueError("SpikeLLMQuantization needs a datamodule with calibration_batches() (e.g. TextDataModule)")
        cfg = self.config
        calib = dm.calibration_batches(cfg.nsamples, cfg.seqlen, seed=cfg.seed)
        seqlen = self.eval_seqlen or cfg.seqlen
        tokens = dm.tokens(self.eval_split) if self.eval_split else None
        if tokens is not None:
            self.metrics["spikellm/ppl_before"] = perplexity(lm, tokens, seqlen, max_windows=self.max_eval_windows)
        self.report = quantize(lm, calib, cfg, batch_size=self.batch_size, progress=self.progress)
        if tokens is not None:
            self.metrics["spikellm/ppl_after"] = perplexity(lm, tokens, seqlen, max_windows=self.max_eval_windows)
        self.metrics.update({
            "spikellm/avg_weight_bits": self.report.avg_weight_bits,
            "spikellm/avg_activation_bits": self.report.avg_activation_bits,
            "spikellm/seconds": self.report.seconds,
        })  # fmt: skip
        for logger in trainer.loggers:
            logger.log_metrics(self.metrics, step=trainer.global_step)
        rank_zero_info(str(self.report) + "".join(f"\n  {k} = {v:.4g}" for k, v in self.metrics.items()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when == "fit_end":
            self._run(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when == "validate_start" and trainer.state.fn == "validate":
            self._run(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when == "test_start":
            self._run(trainer, pl_module)
