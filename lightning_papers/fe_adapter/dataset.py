"""``VideoClipDataset``: decode, sample and transform clips; skip only clips whose file cannot be decoded.

Decoding (decord / PyAV for videos, PIL for frame folders) is the only step whose errors are caught: they
become a :class:`ClipDecodeError` naming the file. Any other exception (a bug in a transform, a missing
file, a bad label) propagates. A skipped clip travels with the batch as its path (the third element of a
collated batch), so the counts survive DataLoader worker processes: ``VideoEmotionDataModule`` collects
them in the main process and the LightningModule logs them.

Training never sees an empty or short batch: a clip that cannot be decoded is replaced by the next
decodable clip of the dataset (``substitute=True``); evaluation drops it instead, so no clip is counted
twice in a metric.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from lightning_papers.data import read_video, video_num_frames
from lightning_papers.data.video import Backend
from lightning_papers.fe_adapter.parsers import VideoSample, frame_files
from lightning_papers.fe_adapter.transforms import sample_indices

__all__ = ["ClipDecodeError", "VideoClipDataset", "collate_clips", "count_frames"]


class ClipDecodeError(RuntimeError):
    """A clip's file could not be decoded (corrupt, truncated, empty, unsupported codec)."""

    def __init__(self, path: Path | str, cause: BaseException) -> None:
        super().__init__(f"cannot decode clip {path}: {type(cause).__name__}: {cause}")
        self.path = str(path)


# what decoders raise for a bad file (decord: DECORDError < RuntimeError; PyAV: av.error.* < OSError/ValueError;
# PIL: UnidentifiedImageError < OSError; our read_video: RuntimeError, IndexError for fewer frames than indexed)
_DECODER_ERRORS = (RuntimeError, OSError, ValueError, EOFError, IndexError)


def _decoding(path: Path, fn: Callable[[], np.ndarray | int]):
    try:
        return fn()
    except FileNotFoundError:
        raise  # a missing file is a data-layout problem, not a decode error
    except _DECODER_ERRORS as err:
        raise ClipDecodeError(path, err) from err


def count_frames(sample: VideoSample, backend: Backend = "auto") -> int:
    """Number of frames of a clip; :class:`ClipDecodeError` when it cannot be decoded or has none."""

    def count() -> int:
        n = len(frame_files(sample.path)) if sample.is_frames else video_num_frames(sample.path, backend)
        if n < 1:
            raise RuntimeError("no frames")
        return n

    return _decoding(sample.path, count)


def _read_frames(files: Sequence[Path], idx: Sequence[int]) -> np.ndarray:
    from PIL import Image

    if not files:
        raise RuntimeError("frame folder has no images")
    cache: dict[int, np.ndarray] = {}
    out = []
    for i in idx:
        if i not in cache:
            with Image.open(files[i]) as im:
                cache[i] = np.asarray(im.convert("RGB"))
        out.append(cache[i])
    return np.stack(out)


class VideoClipDataset(Dataset):
    """Clips of ``num_frames`` frames from videos or frame folders.

    Items are ``(clip (T, 3, S, S), label, skipped)`` where ``skipped`` is a tuple of the paths that could
    not be decoded on the way to this item. With ``substitute=False`` an undecodable clip gives
    ``(None, label, (path,))``, dropped by :func:`collate_clips`.

    Args:
        samples: the clips.
        num_frames: frames per clip T.
        train: TSN random sampling (else segment centres).
        transform: uint8 ``(T, H, W, 3)`` -> float ``(T, 3, S, S)``.
        backend: video decoder (``auto`` | ``decord`` | ``pyav``).
        frame_counts: known frame counts by path (from the datamodule's scan).
        cache_decoded: keep every decoded clip in memory (small datasets only).
        substitute: replace an undecodable clip by the next decodable one (training).
        max_substitutes: how many consecutive undecodable clips to tolerate before raising.

    Example::

        >>> import tempfile, pathlib
        >>> from lightning_papers.data import write_video
        >>> from lightning_papers.fe_adapter.transforms import ClipTransform
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_video(d / "a.mp4", np.zeros((6, 32, 32, 3), np.uint8))
        >>> (d / "bad.mp4").write_bytes(b"not a video")
        11
        >>> ds = VideoClipDataset([VideoSample(d / "bad.mp4", 0), VideoSample(d / "a.mp4", 1)], 4, True,
        ...                       ClipTransform(16, train=True))
        >>> clip, label, skipped = ds[0]
        >>> clip.shape, label, [pathlib.Path(p).name for p in skipped]
        (torch.Size([4, 3, 16, 16]), 1, ['bad.mp4'])
    """

    def __init__(
        self,
        samples: Sequence[VideoSample],
        num_frames: int,
        train: bool,
        transform: Callable[[np.ndarray], torch.Tensor],
        backend: Backend = "auto",
        frame_counts: dict[Path, int] | None = None,
        cache_decoded: bool = False,
        substitute: bool | None = None,
        max_substitutes: int = 16,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if max_substitutes < 0:
            raise ValueError(f"max_substitutes must be >= 0, got {max_substitutes}")
        self.samples = list(samples)
        self.num_frames, self.train, self.transform, self.backend = num_frames, train, transform, backend
        self.frame_counts: dict[Path, int] = dict(frame_counts or {})
        self.cache_decoded = cache_decoded
        self.substitute = train if substitute is None else substitute
        self.max_substitutes = max_substitutes
        self._decoded: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, sample: VideoSample) -> np.ndarray:
        """Decode the sampled frames of one clip as uint8 ``(T, H, W, 3)``; :class:`ClipDecodeError` if it can't."""
        path = sample.path
        if self.cache_decoded:  # small datasets: decode every frame once, sample from memory afterwards
            if path not in self._decoded:
                self._decoded[path] = _decoding(path, lambda: self._decode_all(sample))
            frames = self._decoded[path]
            return frames[sample_indices(len(frames), self.num_frames, self.train)]
        n = self.frame_counts.get(path)
        if n is None:
            n = self.frame_counts[path] = count_frames(sample, self.backend)
        idx = sample_indices(n, self.num_frames, self.train)
        if sample.is_frames:
            return _decoding(path, lambda: _read_frames(frame_files(path), idx))
        return _decoding(path, lambda: read_video(path, idx, backend=self.backend))

    def _decode_all(self, sample: VideoSample) -> np.ndarray:
        if sample.is_frames:
            files = frame_files(sample.path)
            return _read_frames(files, range(len(files)))
        return read_video(sample.path, backend=self.backend)

    def __getitem__(self, i: int):
        skipped: list[str] = []
        for attempt in range(self.max_substitutes + 1):
            sample = self.samples[(i + attempt) % len(self.samples)]
            try:
                frames = self.load(sample)
            except ClipDecodeError as err:
                warnings.warn(f"skipping undecodable clip: {err}", stacklevel=2)
                skipped.append(err.path)
                if not self.substitute:
                    return None, sample.label, tuple(skipped)
                continue
            return self.transform(frames), sample.label, tuple(skipped)
        raise RuntimeError(
            f"{len(skipped)} consecutive clips could not be decoded, starting at index {i} "
            f"({skipped[:3]}...); check the dataset files or the video backend"
        )


def collate_clips(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Collate ``(clip, label, skipped)`` items into ``(clips, labels, skipped paths)``.

    Items whose clip is None (undecodable, evaluation) are dropped; their paths stay in ``skipped``.
    """
    skipped = [p for item in batch for p in item[2]]
    items = [(clip, label) for clip, label, _ in batch if clip is not None]
    if not items:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    clips, labels = default_collate(items)
    return clips, labels, skipped
