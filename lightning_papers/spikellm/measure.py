"""Measurements used by the benchmark: checkpoint sizes and the peak memory of quantization.

``python -m lightning_papers.spikellm.measure {stream,memory} MODEL_DIR OUT_DIR`` quantizes a local model
(RTN W4A4, random calibration ids) and prints its peak resident set size and peak live heap in bytes (JSON), so
that the memory of one run is measured in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

import torch
from torch import nn

__all__ = ["directory_bytes", "fp16_file_bytes", "peak_memory_of_quantization"]


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


class _HeapSampler:
    """Samples glibc's bytes in use (``mallinfo2``: arena chunks in use plus mmapped chunks) every millisecond in
    a background thread and keeps the maximum: live allocations, unlike RSS, which also counts memory the
    allocator keeps after it is freed. ``peak`` is None where ``mallinfo2`` is unavailable (not glibc >= 2.33)."""

    def __init__(self, interval: float = 0.001) -> None:
        import ctypes
        import threading

        class _MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip

        try:
            fn = ctypes.CDLL("libc.so.6").mallinfo2
            fn.restype = _MallInfo2
        except (OSError, AttributeError):
            fn = None
        self._fn, self.peak = fn, None
        if fn is not None:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
            self._thread.start()

    def _read(self) -> int:
        info = self._fn()
        return int(info.uordblks + info.hblkhd)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak or 0, self._read())
            self._stop.wait(interval)

    def stop(self) -> int | None:
        if self._fn is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak or 0, self._read())
        return self.peak


def peak_memory_of_quantization(
    mode: Literal["stream", "memory"],
    model_dir: str | Path,
    out_dir: str | Path,
    release_freed: bool = True,
    timeout: float = 300,
) -> dict[str, int | None]:
    """Peak memory of a fresh process that quantizes ``model_dir`` (RTN W4A4, 10 % salient channels, 4 random
    calibration windows) and saves the packed checkpoint to ``out_dir``.

    Args:
        mode: ``"stream"``: from its safetensors shards, one decoder layer in memory
            (:func:`~lightning_papers.spikellm.quantize_pretrained`); ``"memory"``: the whole model loaded with
            ``from_pretrained``, quantized in place, then saved.
        model_dir: a local Hugging Face model directory.
        out_dir: where the checkpoint goes.
        release_freed: run the process with glibc's mmap threshold fixed at 128 KiB
            (``MALLOC_MMAP_THRESHOLD_``), so every tensor gets its own mapping that is returned to the OS when
            freed; by default glibc raises the threshold after the first large free and then keeps freed tensor
            memory in its heap, so RSS also counts memory no tensor uses any more.
        timeout: seconds before the measurement is abandoned.

    Returns:
        ``{"peak_rss": bytes, "peak_heap": bytes or None}``: the kernel's exact high-water mark of the resident
        set (``VmHWM``), and the sampled maximum of bytes allocated and not yet freed (``mallinfo2``).
    """
    if mode not in ("stream", "memory"):
        raise ValueError(f"mode must be 'stream' or 'memory', got {mode!r}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if release_freed:
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    proc = subprocess.run([sys.executable, "-m", "lightning_papers.spikellm.measure", mode, str(model_dir), str(out_dir)],
                          capture_output=True, text=True, timeout=timeout, env=env)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
    heap = _HeapSampler()
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
    peak_heap = heap.stop()
    try:  # this process image's own high-water mark: ru_maxrss would also count the parent's pages at fork time
        status = Path("/proc/self/status").read_text(encoding="utf-8")
        rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"peak_rss": rss, "peak_heap": peak_heap}))


if __name__ == "__main__":
    _main(*sys.argv[1:4])
