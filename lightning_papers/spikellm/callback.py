"""``SpikeLLMQuantization``: SpikeLLM inside a Lightning run, post-training or quantization-aware."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.eval import perplexity
from lightning_papers.spikellm.linear import SpikeLinear
from lightning_papers.spikellm.quantization import (
    QuantizationReport,
    _set_module,
    quantize,
    quantized_linears,
)

__all__ = ["SpikeLLMQuantization", "token_windows"]

When = Literal["fit_start", "fit_end", "validate_start", "test_start"]
Mode = Literal["ptq", "qat"]
_WHEN, _MODES = get_args(When), get_args(Mode)


def token_windows(source: Any, nsamples: int, seqlen: int) -> torch.Tensor:
    """Up to ``nsamples`` windows of ``seqlen`` token ids from a tensor or any iterable of batches
    (tensors, dicts with ``input_ids``, or tuples/lists whose first item is the ids), shape (n, seqlen).

    Example::

        >>> token_windows([{"input_ids": torch.arange(40).view(2, 20)}], nsamples=4, seqlen=8).shape
        torch.Size([4, 8])

    Raises:
        ValueError: when no window of ``seqlen`` tokens can be formed (the source is empty or too short).
    """
    batches: Iterable = [source] if isinstance(source, torch.Tensor) else source
    rows: list[torch.Tensor] = []
    total = 0
    for batch in batches:
        if isinstance(batch, dict):
            batch = batch.get("input_ids")
        elif isinstance(batch, (tuple, list)) and batch:
            batch = batch[0]
        if not isinstance(batch, torch.Tensor) or batch.is_floating_point():
            raise TypeError(f"calibration batches must hold integer token ids, got {type(batch).__name__}")
        batch = batch.reshape(-1, batch.shape[-1]) if batch.dim() > 1 else batch.view(1, -1)
        if batch.shape[1] < seqlen:
            continue
        # cut each row into non-overlapping windows
        n = batch.shape[1] // seqlen
        windows = batch[:, : n * seqlen].reshape(-1, seqlen)[: nsamples - total]
        rows.append(windows.cpu().long())
        total += windows.shape[0]
        if total >= nsamples:
            break
    if total == 0:
        raise ValueError(f"calibration data is empty: no window of {seqlen} tokens in it (lower config.seqlen?)")
    return torch.cat(rows)


class SpikeLLMQuantization(L.Callback):
    """Quantize ``pl_module.<model_attr>`` with SpikeLLM: post-training (PTQ) or for quantization-aware training.

    * ``mode="ptq"`` with ``when`` in ``"fit_end"``, ``"validate_start"``, ``"test_start"``: quantize in place
      (RTN, GPTQ or OmniQuant as configured) and log perplexity before and after.
    * ``mode="qat"`` with ``when="fit_start"``: choose the salient channels from calibration data, insert
      fake-quantized :class:`SpikeLinear` modules (straight-through gradients: the abstract's "OBSpiking plugs
      into quantization-training methods") and train through them; at the end of ``fit`` the trained latent
      weights are rounded onto their grids (so ``save_quantized`` can pack the model). The masks are part of
      this callback's checkpoint state, so a run resumed from a Lightning checkpoint continues exactly.

    Calibration comes from ``calibration`` (a LongTensor or any iterable of token-id batches) or, by default,
    the datamodule's ``calibration_batches`` when it has one, else the trainer's training dataloader
    (``trainer.train_dataloader``; QAT layers are therefore inserted in ``on_train_start``, after the sanity check).

    Args:
        config: SpikeLLM settings (``nsamples``/``seqlen`` set the calibration size).
        when: ``"fit_start"`` (QAT), ``"fit_end"``, ``"validate_start"`` or ``"test_start"``.
        mode: ``"ptq"`` or ``"qat"``.
        model_attr: attribute of the LightningModule holding the Hugging Face LM.
        calibration: token ids or an iterable of batches (default: see above).
        eval_split: split passed to ``datamodule.tokens`` for perplexity; ``None`` skips it.
        eval_seqlen: perplexity window (default ``config.seqlen``).
        max_eval_windows: cap on evaluated windows.
        batch_size: calibration windows per forward.
        progress: show the per-layer progress bar.

    Attributes:
        report: the :class:`QuantizationReport` once run.
        metrics: ``{"spikellm/ppl_before", "spikellm/ppl_after", "spikellm/avg_weight_bits", ...}``.

    Example::

        >>> cb = SpikeLLMQuantization(SpikeLLMConfig(nsamples=8, seqlen=64), when="fit_start", mode="qat")
        >>> cb.when, cb.mode
        ('fit_start', 'qat')
    """

    def __init__(
        self,
        config: SpikeLLMConfig | None = None,
        when: When = "fit_end",
        mode: Mode = "ptq",
        model_attr: str = "model",
        calibration: Any = None,
        eval_split: str | None = "val",
        eval_seqlen: int | None = None,
        max_eval_windows: int | None = 64,
        batch_size: int = 8,
        progress: bool = False,
    ) -> None:
        if when not in _WHEN:
            raise ValueError(f"when must be one of {_WHEN}, got {when!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if (mode == "qat") != (when == "fit_start"):
            raise ValueError(f"mode={mode!r} with when={when!r}: quantization-aware training runs with when='fit_start', "
                             "post-training quantization with 'fit_end', 'validate_start' or 'test_start'")  # fmt: skip
        self.config = config if config is not None else SpikeLLMConfig(nsamples=32, seqlen=128)
        if not isinstance(self.config, SpikeLLMConfig):
            raise TypeError(f"config must be a SpikeLLMConfig, got {type(self.config).__name__}")
        self.when, self.mode, self.model_attr, self.eval_split = when, mode, model_attr, eval_split
        self.calibration = calibration
        self.eval_seqlen, self.max_eval_windows = eval_seqlen, max_eval_windows
        self.batch_size, self.progress = batch_size, progress
        self.report: QuantizationReport | None = None
        self.metrics: dict[str, float] = {}
        self._restored: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    def _lm(self, pl_module: L.LightningModule) -> torch.nn.Module:
        lm = getattr(pl_module, self.model_attr, None)
        if lm is None:
            raise AttributeError(f"{type(pl_module).__name__} has no model attribute {self.model_attr!r} to quantize")
        return lm

    def _calibration(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        cfg = self.config
        if self.calibration is not None:
            return token_windows(self.calibration, cfg.nsamples, cfg.seqlen)
        dm: Any = trainer.datamodule
        if dm is not None and hasattr(dm, "calibration_batches"):
            return dm.calibration_batches(cfg.nsamples, cfg.seqlen, seed=cfg.seed)
        loader: Any = trainer.train_dataloader  # public; set once the fit loop has its data (from on_train_start)
        if loader is None and dm is not None:
            loader = dm.train_dataloader()
        if loader is None:
            raise ValueError("no calibration data: pass calibration= (token ids or batches), use a datamodule, or "
                             "run the callback in fit (it then calibrates on the training dataloader)")  # fmt: skip
        if isinstance(loader, Mapping):  # several training dataloaders: the first
            loader = next(iter(loader.values()))
        elif isinstance(loader, (list, tuple)) and loader and isinstance(loader[0], DataLoader):
            loader = loader[0]
        return token_windows(loader, cfg.nsamples, cfg.seqlen)

    def _eval_tokens(self, trainer: L.Trainer) -> torch.Tensor | None:
        dm: Any = trainer.datamodule
        if not self.eval_split or dm is None or not hasattr(dm, "tokens"):
            return None
        return dm.tokens(self.eval_split)

    def _log(self, trainer: L.Trainer) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(self.metrics, step=trainer.global_step)
        text = str(self.report) if self.report is not None else "SpikeLLM"
        rank_zero_info(text + "".join(f"\n  {k} = {v:.4g}" for k, v in self.metrics.items()))

    # ------------------------------------------------------------------ PTQ
    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.report is not None:
            return
        lm = self._lm(pl_module)
        cfg = self.config
        calib = self._calibration(trainer, pl_module)
        seqlen = self.eval_seqlen or cfg.seqlen
        tokens = self._eval_tokens(trainer)
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
        self._log(trainer)

    # ------------------------------------------------------------------ QAT
    def _insert_qat(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lm = self._lm(pl_module)
        if quantized_linears(lm):
            return
        cfg = self.config
        if self._restored is not None:  # resuming: the masks chosen at the first start, no new calibration
            device = next(lm.parameters()).device
            for name, mask in self._restored["masks"].items():
                layer = SpikeLinear.from_module(lm.get_submodule(name), cfg)
                layer.salient_mask.copy_(mask.to(device))
                out = self._restored.get("outputs", {}).get(name)
                if out is not None:
                    layer.enable_output_quant(out["bits"], out["extra_bits"], out["mask"].to(device), out["group"])
                layer.enable_qat()
                _set_module(lm, name, layer)
            lm.spikellm_config = cfg
        else:
            calib = self._calibration(trainer, pl_module)
            self.report = quantize(lm, calib, cfg, batch_size=self.batch_size, progress=self.progress, qat=True)
        params = {id(p) for group in trainer.optimizers for g in group.param_groups for p in g["params"]}
        if trainer.optimizers and any(id(layer.weight) not in params for layer in quantized_linears(lm).values()):
            raise RuntimeError("quantization-aware training needs the quantized layers to keep their nn.Linear "
                               "parameters (Conv1D models are not supported with mode='qat')")  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        if self.mode != "qat" or self._lm_ref is None:
            return {}
        masks, outputs = {}, {}
        for name, layer in quantized_linears(self._lm_ref).items():
            masks[name] = layer.salient_mask.detach().cpu().clone()
            if getattr(layer, "out_bits", 16) < 16:
                outputs[name] = {"bits": layer.out_bits, "extra_bits": layer.out_extra_bits, "group": layer.out_group,
                                 "mask": layer.out_salient_mask.detach().cpu().clone()}  # fmt: skip
        return {"config": self.config.to_dict(), "masks": masks, "outputs": outputs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("masks"):
            saved = SpikeLLMConfig.from_dict(state_dict["config"])
            if saved != self.config:
                raise ValueError(f"the checkpoint was trained with SpikeLLM settings {saved}, this callback has "
                                 f"{self.config}")  # fmt: skip
            self._restored = state_dict

    _lm_ref: torch.nn.Module | None = None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._lm_ref = self._lm(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the start of fit's training (after checkpoint restore and the sanity check): the trainer's training
        # dataloader exists from here on, so calibration can default to it through the public API
        if self.when == "fit_start":
            self._insert_qat(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when == "fit_end":
            self._run(trainer, pl_module)
        elif self.mode == "qat":
            lm = self._lm(pl_module)
            for layer in quantized_linears(lm).values():
                layer.quantize_weight_()
            tokens = self._eval_tokens(trainer)
            if tokens is not None:
                seqlen = self.eval_seqlen or self.config.seqlen
                self.metrics["spikellm/ppl_after"] = perplexity(lm, tokens, seqlen, max_windows=self.max_eval_windows)
            self._log(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when == "validate_start" and trainer.state.fn == "validate":
            self._run(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.when == "test_start":
            self._run(trainer, pl_module)
