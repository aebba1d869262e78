"""Measurements used by the benchmark: checkpoint sizes and the peak memory of quantization.

``python -m lightning_papers.spikellm.measure {stream,memory} MODEL_DIR OUT_DIR`` quantizes a local model
(RTN W4A4, random calibration ids) and prints its peak resident set size in bytes, so that the memory of one
run is measured in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["directory_bytes", "fp16_file_bytes", "peak_rss_of_quantization"]


def directory_bytes(path: str | Path) -> int:
    """Total size of the files in a directory (recursively)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def fp16_file_bytes(model: nn.Module) -> int:
    """Size of ``model``'s safetensors file in float16 (each shared tensor once), the usual distribution form.

    Example::

        >>> fp16_file_bytes(nn.Linear(4, 4, bias=False)) > 32
        True
    """
    from safetensors.torch import save_file

    seen, state = set(), {}
    for key, value in model.state_dict().items():
        ident = (value.data_ptr(), tuple(value.shape))
        if ident in seen:
            continue
        seen.add(ident)
        state[key] = value.detach().to(torch.float16 if value.is_floating_point() else value.dtype).contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        save_file(state, os.path.join(tmp, "model.safetensors"))
        return os.path.getsize(os.path.join(tmp, "model.safetensors"))


def peak_rss_of_quantization(mode: str, model_dir: str | Path, out_dir: str | Path, timeout: float = 300) -> int:
    """Peak RSS (bytes) of a fresh process that quantizes ``model_dir`` (``"stream"``: from its shards, one layer
    in memory; ``"memory"``: the whole model loaded, then quantized in place)."""
    if mode not in ("stream", "memory"):
        raise ValueError(f"mode must be 'stream' or 'memory', got {mode!r}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "lightning_papers.spikellm.measure", mode, str(model_dir), str(out_dir)],
                          capture_output=True, text=True, timeout=timeout, env=env)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def _main(mode: str, model_dir: str, out_dir: str) -> None:
    import resource
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from lightning_papers.spikellm.config import SpikeLLMConfig

    config = SpikeLLMConfig(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, nsamples=4, seqlen=64)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model_dir, local_files_only=True).vocab_size
    ids = torch.randint(0, vocab, (4, 64), generator=torch.Generator().manual_seed(0))
    if mode == "stream":
        from lightning_papers.spikellm.stream import quantize_pretrained

        quantize_pretrained(model_dir, ids, config, out_dir, progress=False)
    else:
        from lightning_papers.spikellm.commands import load_causal_lm
        from lightning_papers.spikellm.io import save_quantized
        from lightning_papers.spikellm.quantization import quantize

        model = load_causal_lm(model_dir)
        quantize(model, ids, config, progress=False)
        save_quantized(model, out_dir)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux reports KiB


if __name__ == "__main__":
    _main(*sys.argv[1:4])
