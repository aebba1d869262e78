"""The ``lightning-papers quantize`` subcommand."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_papers.files import atomic_write_text
from lightning_papers.spikellm.config import SpikeLLMConfig

__all__ = ["load_causal_lm", "quantize"]


def load_causal_lm(path: str, dtype: str | torch.dtype | None = None) -> torch.nn.Module:
    """Load a causal LM from a local Hugging Face directory or a Lightning ``CausalLM`` checkpoint (.ckpt).

    Args:
        path: the directory or ``.ckpt`` file.
        dtype: load the weights in this dtype (``"bfloat16"``, ``"float16"``, ``"float32"``; default: as stored
            for a directory, float32 for a checkpoint).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
    """
    from lightning_papers.spikellm.quantization import resolve_dtype

    p = Path(path).expanduser()
    if p.is_dir():
        from transformers import AutoModelForCausalLM

        kwargs = {"dtype": resolve_dtype(dtype)} if dtype is not None else {"dtype": "auto"}
        return AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, **kwargs)
    if p.is_file() and p.suffix == ".ckpt":
        from lightning_papers.models import CausalLM

        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
        lm = CausalLM(**ckpt.get("hyper_parameters", {}))
        lm.configure_model()
        lm.load_state_dict(ckpt["state_dict"])
        return lm.model if dtype is None else lm.model.to(resolve_dtype(dtype))
    raise FileNotFoundError(f"model_path must be a local Hugging Face model directory or a .ckpt file, got {p}")


def quantize(
    quantization: SpikeLLMConfig | None = None,
    model_path: str | None = None,
    train_steps: int = 600,
    corpus: str = "pydoc",
    text_files: list[str] | None = None,
    eval_text_files: list[str] | None = None,
    tokenizer: str | None = None,
    eval_seqlen: int = 256,
    max_eval_windows: int | None = None,
    batch_size: int = 8,
    output_dir: str | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    offload: bool = False,
) -> str:
    """Quantize a causal LM with SpikeLLM, report perplexity before and after, save the quantized model.

    Args:
        quantization: SpikeLLM settings (YAML key ``quantization``: ``w_bits``, ``a_bits``, ``extra_bits``, ...).
        model_path: a local Hugging Face model directory or a ``CausalLM`` ``.ckpt``; ``None`` trains the
            embedded tiny Llama on the corpus first (``train_steps`` steps, about a minute on a CPU).
        train_steps: steps of the embedded tiny model's training.
        corpus: bundled corpus (``pydoc`` or ``stdlib_source``) when ``text_files`` is not given.
        text_files: text files for calibration (train split) and, without ``eval_text_files``, evaluation.
        eval_text_files: text files scored for perplexity (e.g. WikiText-2 test).
        tokenizer: a local Hugging Face tokenizer directory (``None``: bytes, vocab 256).
        eval_seqlen: perplexity window (non-overlapping).
        max_eval_windows: cap on evaluated windows.
        batch_size: windows per forward pass.
        output_dir: where ``report.md`` and the packed quantized model go (default ``None``: save nothing).
        seed: seed of training and calibration sampling.
        device: compute device (``"cuda"``, ``"cuda:1"``, ``"cpu"``; default: CPU).
        dtype: model dtype for loading and forward passes (``"bfloat16"``, ``"float16"``, ``"float32"``).
        offload: keep decoder layers on the CPU and quantize one at a time on ``device`` (for models larger than
            the device memory; evaluation then moves the quantized model to ``device``).

    Returns:
        The report as text.
    """
    from lightning_papers.data import TextDataModule
    from lightning_papers.spikellm.eval import perplexity
    from lightning_papers.spikellm.io import save_quantized
    from lightning_papers.spikellm.quantization import quantize as quantize_model
    from lightning_papers.spikellm.quantization import resolve_dtype
    from lightning_papers.spikellm.tiny import train_tiny_llama

    config = quantization if quantization is not None else SpikeLLMConfig(nsamples=64, seqlen=128)
    torch.manual_seed(seed)
    dm = TextDataModule(corpus=corpus, text_files=text_files, tokenizer=tokenizer, seq_len=max(config.seqlen, eval_seqlen), seed=seed)
    dm.setup()
    if model_path is None:
        if dm.vocab_size != 256:
            raise ValueError("the embedded tiny model is byte-level; use tokenizer=None or give model_path")
        model = train_tiny_llama(steps=train_steps, tokens=dm.tokens("train"), seed=seed, progress=True)
        if dtype is not None:
            model.to(resolve_dtype(dtype))
    else:
        model = load_causal_lm(model_path, dtype=dtype)
    model.eval()
    if device is not None and not offload:
        model.to(device)
    if eval_text_files:
        ev = TextDataModule(text_files=eval_text_files, tokenizer=tokenizer, seq_len=eval_seqlen, seed=seed)
        eval_tokens = ev.encode(ev.read_text())
    else:
        eval_tokens = dm.tokens("val")
    calib = dm.calibration_batches(config.nsamples, config.seqlen, seed=config.seed)
    if offload:
        before = float("nan")  # the full-precision model is not on the device: skip its evaluation
    else:
        before = perplexity(model, eval_tokens, eval_seqlen, batch_size, max_eval_windows)
    report = quantize_model(model, calib, config, batch_size=batch_size, device=device, offload=offload)
    if offload and device is not None:
        model.to(device)
    after = perplexity(model, eval_tokens, eval_seqlen, batch_size, max_eval_windows)
    text = (
        f"{report}\n  perplexity full precision {before:.4f} -> quantized {after:.4f}"
        f" ({100 * (after - before) / before:+.2f}%)"
    )
    if output_dir is not None:
        out = save_quantized(model, output_dir)
        atomic_write_text(out / "report.md", text + "\n")
        text += f"\n  saved to {out}"
    return text
