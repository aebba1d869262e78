"""Video files: write clips with PyAV, read them with decord (primary) or PyAV (fallback).

decord ships wheels for x86_64 only; everywhere else PyAV decodes. Both return ``uint8`` arrays of
shape ``(T, H, W, 3)`` in RGB order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["Backend", "decord_available", "read_video", "video_num_frames", "write_video"]

Backend = Literal["auto", "decord", "pyav"]


@functools.cache
def decord_available() -> bool:
    """True when decord can be imported on this machine."""
    try:
        import decord  # noqa: F401
    except Exception:  # ImportError, or a broken native library
        return False
    return True


def _backend(backend: Backend) -> str:
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"backend must be 'auto', 'decord' or 'pyav', got {backend!r}")
    if backend == "auto":
        return "decord" if decord_available() else "pyav"
    if backend == "decord" and not decord_available():
        raise ImportError("backend='decord' was requested but decord is not installed (pip install decord)")
    return backend


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, codec: str = "mpeg4", quality: int = 2) -> Path:
    """Write ``frames`` (uint8, ``(T, H, W, 3)``, RGB) to an mp4 file with PyAV.

    ``mpeg4`` at a low quantiser (``quality`` 1–31, lower is better) is near-lossless for small synthetic
    clips and is available in every PyAV build; width and height must be even. The file appears under its
    name only once complete (written under a temporary name, then renamed).

    Example::

        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "clip.mp4")
        >>> _ = write_video(f, np.zeros((4, 32, 32, 3), np.uint8))
        >>> read_video(f).shape
        (4, 32, 32, 3)
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("cannot write a video with zero frames")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frame height and width must be even for mp4, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # keeps the suffix: it picks the format
    try:
        _encode(tmp, frames, fps, codec, quality)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _encode(path: Path, frames: np.ndarray, fps: int, codec: str, quality: int) -> None:
    import av

    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.qmin = stream.codec_context.qmax = quality
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def video_num_frames(path: str | Path, backend: Backend = "auto") -> int:
    """Number of decodable frames in a video file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if _backend(backend) == "decord":
        import decord

        return len(decord.VideoReader(str(path), num_threads=1))
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def read_video(path: str | Path, indices: Sequence[int] | None = None, backend: Backend = "auto") -> np.ndarray:
    """Decode frames ``indices`` (all when None) of a video as uint8 ``(t, H, W, 3)`` RGB.

    Args:
        path: video file.
        indices: frame indices to return, in the order given (repeats allowed).
        backend: ``"decord"`` (``VideoReader.get_batch``), ``"pyav"`` or ``"auto"`` (decord when installed).

    decord 0.6 fails on very narrow videos (e.g. 16 px wide); use clips at least 32 px wide, or PyAV.

    Raises:
        FileNotFoundError: the file does not exist.
        IndexError: an index is outside the video.
        RuntimeError: the file cannot be decoded (corrupt or empty).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    chosen = _backend(backend)
    try:
        if chosen == "decord":
            import decord

            reader = decord.VideoReader(str(path), num_threads=1)
            n = len(reader)
            idx = list(range(n)) if indices is None else [int(i) for i in indices]
            _check_indices(idx, n, path)
            return reader.get_batch(idx).asnumpy()
        import av

        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (IndexError, FileNotFoundError):
        raise
    except Exception as err:  # decoder errors differ by backend; name the file
        raise RuntimeError(f"cannot decode video {path}: {err}") from err
    if not frames:
        raise RuntimeError(f"cannot decode video {path}: no frames")
    idx = list(range(len(frames))) if indices is None else [int(i) for i in indices]
    _check_indices(idx, len(frames), path)
    return np.stack([frames[i] for i in idx])


def _check_indices(idx: list[int], n: int, path: Path) -> None:
    if n == 0:
        raise RuntimeError(f"cannot decode video {path}: no frames")
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise IndexError(f"frame indices {bad[:5]} out of range for {path} with {n} frames")
