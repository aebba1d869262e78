"""Aquila2 architecture (arXiv 2408.07410, Table 1) as a Hugging Face ``LlamaConfig``, and ``Aquila2LM``:
a causal LM trained with FSDP2 ``fully_shard`` per decoder layer under Lightning's ``ModelParallelStrategy``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from lightning_papers.heurimentor.monitor import per_sample_causal_lm_loss
from lightning_papers.models import CausalLM

__all__ = ["AQUILA2_SIZES", "AQUILA2_TRAINING", "Aquila2LM", "aquila2_config"]

#: Architecture per size (report Table 1); "tiny" is the CPU test model (byte-level vocab).
AQUILA2_SIZES: dict[str, dict[str, Any]] = {
    "7b": dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
               num_key_value_heads=32, max_position_embeddings=2048),
    "34b": dict(num_hidden_layers=60, hidden_size=6144, intermediate_size=24576, num_attention_heads=48,
                num_key_value_heads=8, max_position_embeddings=4096),
    "70b": dict(num_hidden_layers=80, hidden_size=8192, intermediate_size=28672, num_attention_heads=64,
                num_key_value_heads=8, max_position_embeddings=4096),
    "tiny": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=172, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512, vocab_size=256),
}  # fmt: skip

#: Optimisation settings per size (report §4): peak LR, global batch (sequences), LR floor 1.5e-5.
AQUILA2_TRAINING: dict[str, dict[str, float]] = {
    "7b": {"lr": 2e-4, "global_batch": 1728, "min_lr": 1.5e-5},
    "34b": {"lr": 1.5e-4, "global_batch": 1024, "min_lr": 1.5e-5},
    "70b": {"lr": 1.5e-4, "global_batch": 1032, "min_lr": 1.5e-5},
    "tiny": {"lr": 3e-3, "global_batch": 16, "min_lr": 3e-4},
}


def aquila2_config(size: Literal["7b", "34b", "70b", "tiny"] = "tiny", **overrides: Any):
    """The Aquila2 architecture as a ``transformers.LlamaConfig``.

    RMSNorm (eps 1e-5), SwiGLU, RoPE, no biases, untied embeddings, no dropout, vocab 100008 (tiny: 256).

    Args:
        size: ``"7b"``, ``"34b"``, ``"70b"`` (the 70B-Expr table row) or ``"tiny"``.
        **overrides: any ``LlamaConfig`` field.

    Raises:
        ValueError: for an unknown size.

    Example::

        >>> cfg = aquila2_config("34b")
        >>> cfg.num_hidden_layers, cfg.hidden_size, cfg.num_key_value_heads, cfg.vocab_size
        (60, 6144, 8, 100008)
    """
    if size not in AQUILA2_SIZES:
        raise ValueError(f"unknown Aquila2 size {size!r}; expected one of {sorted(AQUILA2_SIZES)}")
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=100008, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False, attention_bias=False,
        mlp_bias=False, attention_dropout=0.0, initializer_range=0.02, rope_theta=10000.0,
    )  # fmt: skip
    kwargs.update(AQUILA2_SIZES[size])
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


class Aquila2LM(CausalLM):
    """Aquila2 causal LM: AdamW (0.9, 0.95, wd 0.1), clip 1.0, warmup + cosine to a floor, FSDP2-ready.

    Under ``ModelParallelStrategy`` (set ``data_parallel_size`` to the number of processes and
    ``tensor_parallel_size=1``), :meth:`configure_model` applies ``fully_shard`` to every decoder layer and
    then to the root, on the data-parallel mesh (gloo on CPU, NCCL on GPUs). Without a device mesh the
    model stays a plain module (single process, DDP). ``training_step`` returns the per-sample loss too,
    so the TrainingStateMonitor can report per-source loss, and logs the tokens seen by all ranks.

    Args:
        size: architecture size (see :func:`aquila2_config`).
        model_config: ``LlamaConfig`` overrides.
        lr: peak LR (default: the report's value for ``size``).
        betas, weight_decay, warmup_steps: AdamW and schedule settings.
        min_lr_ratio: cosine floor as a fraction of ``lr`` (default: 1.5e-5 / peak for paper sizes).
        grad_clip: global gradient-norm clip (0: off); works on sharded DTensor gradients.
        mixed_precision: ``"bf16"`` to compute in bfloat16 with fp32 gradient reduction (FSDP2 policy).
        reshard_after_forward: FSDP2 ``reshard_after_forward`` (ZeRO-3 when True).
        activation_checkpointing: recompute each decoder layer's activations in the backward pass
            (Hugging Face gradient checkpointing, non-reentrant ``torch.utils.checkpoint``).
        meta_init: when sharding, build the model on the meta device, apply ``fully_shard``, then
            materialise only this rank's shards (``to_empty``) and initialise them (Llama init: normal
            with ``initializer_range``, norms at 1, RoPE tables recomputed), so no rank ever holds the
            unsharded model. Ignored without a device mesh or with a pretrained checkpoint.

    Example::

        >>> lm = Aquila2LM("tiny")
        >>> lm.configure_model()
        >>> ids = torch.randint(0, 256, (2, 16))
        >>> out = lm.training_step({"input_ids": ids, "labels": ids}, 0)
        >>> tuple(out["sample_loss"].shape)
        (2,)
    """

    def __init__(
        self,
        size: Literal["7b", "34b", "70b", "tiny"] = "tiny",
        model_config: dict[str, Any] | None = None,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
        warmup_steps: int = 50,
        min_lr_ratio: float | None = None,
        grad_clip: float = 1.0,
        mixed_precision: Literal["bf16"] | None = None,
        reshard_after_forward: bool = True,
        activation_checkpointing: bool = False,
        meta_init: bool = True,
    ) -> None:
        if size not in AQUILA2_SIZES:
            raise ValueError(f"unknown Aquila2 size {size!r}; expected one of {sorted(AQUILA2_SIZES)}")
        if grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {grad_clip}")
        if mixed_precision not in (None, "bf16"):
            raise ValueError(f"mixed_precision must be None or 'bf16', got {mixed_precision!r}")
        train = AQUILA2_TRAINING[size]
        lr = train["lr"] if lr is None else lr
        min_lr_ratio = train["min_lr"] / train["lr"] if min_lr_ratio is None else min_lr_ratio
        super().__init__(model_config=model_config, lr=lr, betas=betas, weight_decay=weight_decay,
                         warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio)
        self.save_hyperparameters()
        # keep the resolved size-dependent defaults (the optimizer reads them from hparams)
        self.hparams.lr, self.hparams.min_lr_ratio = lr, min_lr_ratio
        self.tokens_seen = 0
        self._sharded = False

    def build_config(self):
        return aquila2_config(self.hparams.size, **(self.hparams.model_config or {}))

    def configure_model(self) -> None:
        mesh = getattr(self, "_device_mesh", None)
        if mesh is None or self._sharded:
            super().configure_model()
            self._enable_checkpointing()
            return
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        names = mesh.mesh_dim_names or ()
        dp_mesh = mesh["data_parallel"] if "data_parallel" in names else mesh
        if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
            raise ValueError(
                "Aquila2LM shards with FSDP only: use ModelParallelStrategy(data_parallel_size=<processes>, "
                f"tensor_parallel_size=1), got tensor_parallel size {mesh['tensor_parallel'].size()}"
            )
        on_meta = self.model is None and self.hparams.meta_init and not self.hparams.get("pretrained_path")
        if on_meta:
            from transformers import LlamaForCausalLM

            with torch.device("meta"):
                self.model = LlamaForCausalLM(self.build_config())
        else:
            super().configure_model()
        self._enable_checkpointing()
        kwargs: dict[str, Any] = {"mesh": dp_mesh, "reshard_after_forward": self.hparams.reshard_after_forward}
        if self.hparams.mixed_precision == "bf16":
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in self.model.model.layers:  # one FSDP unit per decoder layer
            fully_shard(layer, **kwargs)
        fully_shard(self.model, **kwargs)
        if on_meta:
            device = self.trainer.strategy.root_device if self._trainer is not None else torch.device(dp_mesh.device_type)
            self.model.to_empty(device=device)  # allocates only this rank's shards
            self.init_weights()
        self._sharded = True

    def _enable_checkpointing(self) -> None:
        if not self.hparams.activation_checkpointing:
            return
        model = self.model
        # transformers >= 5 renamed gradient checkpointing to activation checkpointing
        if hasattr(model, "activation_checkpointing_enable"):
            if not model.is_activation_checkpointing:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif not model.is_gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @torch.no_grad()
    def init_weights(self) -> None:
        """Llama initialisation in place (works on DTensor shards): linear and embedding weights
        ~ N(0, initializer_range), RMSNorm weights 1, RoPE inverse frequencies recomputed."""
        std = self.model.config.initializer_range
        for module in self.model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    torch.nn.init.zeros_(module.bias)
            elif type(module).__name__.endswith("RMSNorm"):
                torch.nn.init.ones_(module.weight)
            elif hasattr(module, "inv_freq") and hasattr(module, "rope_type"):
                from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

                fn = module.compute_default_rope_parameters if module.rope_type == "default" else ROPE_INIT_FUNCTIONS[module.rope_type]
                inv_freq, scaling = fn(module.config)  # computed on the CPU, like the constructor does
                module.inv_freq.copy_(inv_freq.to(module.inv_freq.device))
                if hasattr(module, "original_inv_freq"):
                    module.original_inv_freq.copy_(inv_freq.to(module.inv_freq.device))
                module.attention_scaling = scaling

    def per_sample_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token loss of each sequence, shape (B,)."""
        logits = self.model(input_ids=batch["input_ids"]).logits
        return per_sample_causal_lm_loss(logits, batch.get("labels", batch["input_ids"]))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        sample_loss = self.per_sample_loss(batch)
        loss = sample_loss.mean()
        world = self.trainer.world_size if self._trainer is not None else 1
        self.tokens_seen += int(batch["input_ids"].numel()) * world
        self.log("train/loss", loss, prog_bar=True)
        if self._trainer is not None:
            self.log("train/tokens", float(self.tokens_seen))
        return {"loss": loss, "sample_loss": sample_loss.detach()}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self.per_sample_loss(batch).mean()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.hparams.grad_clip)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["aquila2_tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("aquila2_tokens_seen", 0))
