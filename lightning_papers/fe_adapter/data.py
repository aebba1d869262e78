"""Video emotion data: DFEW, FERV39k, MAFW and folder parsers, ``VideoEmotionDataModule`` and the embedded
``SyntheticEmotionVideos``.

Videos are decoded with decord (``VideoReader.get_batch``, through :func:`lightning_papers.data.read_video`;
PyAV where decord is missing), frame folders with PIL. Training clips use TSN segment sampling (one random
frame per segment), evaluation clips the middle frame of each segment; short videos are padded by
repeating their last frame. Transforms are timm-style (random resized crop + flip for training, resize +
centre crop for evaluation, mean/std normalisation) and are the same for every frame of a clip.

Unreadable files never crash an epoch: the up-front scan and the loader skip them with a warning that
names the file, and count them (``VideoEmotionDataModule.skipped_files``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate

from lightning_papers.data import read_video, video_num_frames, write_video

__all__ = [
    "DFEW_CLASSES",
    "FERV39K_CLASSES",
    "MAFW_CLASSES",
    "SYNTHETIC_CLASSES",
    "ClipTransform",
    "SyntheticEmotionVideos",
    "VideoClipDataset",
    "VideoEmotionDataModule",
    "VideoSample",
    "parse_dfew",
    "parse_ferv39k",
    "parse_folder",
    "parse_mafw",
    "sample_indices",
]

#: DFEW label order (the CSVs use 1..7 in this order).
DFEW_CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
#: FERV39k: the same seven basic emotions; label names in the split files are mapped case-insensitively.
FERV39K_CLASSES = DFEW_CLASSES
#: MAFW's 11 single-label classes, in the order of its label files.
MAFW_CLASSES = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
    "contempt", "anxiety", "helplessness", "disappointment",
)  # fmt: skip
#: The embedded synthetic task: the class is the *time course* of a smile (mouth corners and brows).
SYNTHETIC_CLASSES = ("cheering_up", "saddening", "fleeting_smile", "fleeting_frown")

_ALIASES = {
    "happiness": "happy", "sadness": "sad", "anger": "angry", "surprised": "surprise", "disgusted": "disgust",
    "fearful": "fear", "happy": "happiness", "sad": "sadness", "angry": "anger",
}  # fmt: skip
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VideoSample:
    """One labelled clip: a video file or a folder of frame images."""

    path: Path
    label: int

    @property
    def is_frames(self) -> bool:
        return self.path.is_dir()


# ----------------------------------------------------------------------------------------- parsers
def _natural_key(path: Path) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural order (``2.jpg`` before ``10.jpg``)."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)


def _label_index(name: str, classes: Sequence[str], where: str) -> int:
    token = name.strip()
    if token.isdigit():
        raise ValueError(f"{where}: numeric label {token!r} where a class name was expected")
    lowered = token.lower()
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    if lowered in lookup:
        return lookup[lowered]
    alias = _ALIASES.get(lowered)
    if alias is not None and alias in lookup:
        return lookup[alias]
    raise ValueError(f"{where}: unknown label {token!r}; expected one of {list(classes)}")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _check_fold(fold: int) -> None:
    if fold not in (1, 2, 3, 4, 5):
        raise ValueError(f"fold must be 1..5, got {fold!r}")


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _locate(root: Path, dirs: Sequence[str], name: str, source: str) -> Path | None:
    """Find clip ``name`` (with or without extension) as a video file or a frame folder under ``dirs``."""
    stem = Path(name).stem if Path(name).suffix.lower() in VIDEO_EXTENSIONS else name
    for d in dirs:
        base = root / d
        if not base.is_dir():
            continue
        if source in ("auto", "frames") and (base / stem).is_dir():
            return base / stem
        if source in ("auto", "video"):
            if Path(name).suffix and (base / name).is_file():
                return base / name
            for ext in VIDEO_EXTENSIONS:
                if (base / f"{stem}{ext}").is_file():
                    return base / f"{stem}{ext}"
    return None


def parse_dfew(
    root: str | Path, fold: int = 1, split: str = "train", source: str = "auto", video_dir: str | None = None
) -> list[VideoSample]:
    """DFEW: ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_<fold>.csv`` (``video_name,label``, 1–7).

    Clips are frame folders ``Clip/clip_224x224/<05d>/`` (preferred with ``source="auto"`` when present) or
    videos ``Clip/original/<05d>.mp4``. Labels are shifted to 0–6 (:data:`DFEW_CLASSES`).

    Raises:
        FileNotFoundError: the split file is missing. ValueError: a bad label or fold.
    """
    _check_fold(fold)
    _check_split(split)
    root = Path(root)
    table = _require(
        root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{fold}.csv", "DFEW split file"
    )
    dirs = (
        [video_dir]
        if video_dir
        else (["Clip/clip_224x224", "Clip/original"] if source != "video" else ["Clip/original"])
    )
    samples, missing = [], []
    with table.open(newline="") as fh:
        for n, row in enumerate(csv.reader(fh)):
            if not row or not row[0].strip():
                continue
            if n == 0 and not row[-1].strip().isdigit():
                continue  # header "video_name,label"
            name, label = row[0].strip(), int(row[-1])
            if not 1 <= label <= 7:
                raise ValueError(f"{table}: label {label} for {name} is outside 1..7")
            if name.isdigit():
                name = f"{int(name):05d}"
            path = _locate(root, dirs, name, source)
            if path is None:
                missing.append(name)
                continue
            samples.append(VideoSample(path, label - 1))
    _warn_missing(missing, table)
    return samples


def parse_ferv39k(
    root: str | Path, split: str = "train", scene: str = "All_scenes", video_dir: str | None = None
) -> list[VideoSample]:
    """FERV39k: ``4_setups/<scene>/{train,test}_All.csv`` lines ``<relative clip path> <LabelName>``.

    Clip paths are relative to ``2_ClipsforFaceCrop/`` (frame folders; a video file with that stem also
    works). Commas or whitespace separate the fields; label names map onto :data:`FERV39K_CLASSES`.
    """
    _check_split(split)
    root = Path(root)
    suffix = "All" if scene == "All_scenes" else scene
    table = _require(root / "4_setups" / scene / f"{split}_{suffix}.csv", "FERV39k split file")
    base = video_dir or "2_ClipsforFaceCrop"
    samples, missing = [], []
    for n, line in enumerate(table.read_text().splitlines()):
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        if len(fields) < 2:
            continue
        rel, label = fields[0], fields[-1]
        if n == 0 and label.lower() in ("label", "labels", "emotion", "class", "category"):
            continue  # header line
        index = _label_index(label, FERV39K_CLASSES, str(table))
        path = _locate(root, [base], rel, "auto")
        if path is None:
            missing.append(rel)
            continue
        samples.append(VideoSample(path, index))
    _warn_missing(missing, table)
    return samples


def parse_mafw(
    root: str | Path, fold: int = 1, split: str = "train", source: str = "auto", video_dir: str | None = None
) -> list[VideoSample]:
    """MAFW (single-label, no caption): ``split/single/no_caption/set_<fold>/{train,test}.txt``.

    Lines are ``03747.mp4 anger``; clips are looked up under ``data/clips``, ``clips``, ``data/frames``
    or ``frames`` (or ``video_dir``). Labels map onto :data:`MAFW_CLASSES` (11 classes).
    """
    _check_fold(fold)
    _check_split(split)
    root = Path(root)
    table = _require(
        root / "split" / "single" / "no_caption" / f"set_{fold}" / f"{split}.txt", "MAFW split file"
    )
    dirs = [video_dir] if video_dir else ["data/clips", "clips", "data/frames", "frames", "videos"]
    samples, missing = [], []
    for line in table.read_text().splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        name, label = fields[0], fields[-1]
        path = _locate(root, dirs, name, source)
        if path is None:
            missing.append(name)
            continue
        samples.append(VideoSample(path, _label_index(label, MAFW_CLASSES, str(table))))
    _warn_missing(missing, table)
    return samples


def parse_folder(root: str | Path) -> tuple[list[VideoSample], list[str]]:
    """A user's own data: ``root/<class>/<clip>.mp4`` or ``root/<class>/<clip>/<frames>.jpg``.

    Classes are the sub-folder names in sorted order. Returns ``(samples, class_names)``.

    Raises:
        FileNotFoundError: ``root`` is missing. ValueError: no class folders or no clips.
    """
    root = _require(Path(root), "video folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class sub-folders; expected root/<class>/<clip>.mp4")
    samples = []
    for index, name in enumerate(classes):
        for item in sorted((root / name).iterdir(), key=_natural_key):
            if item.is_dir() or item.suffix.lower() in VIDEO_EXTENSIONS:
                samples.append(VideoSample(item, index))
    if not samples:
        raise ValueError(f"no videos or frame folders found under {root}/<class>/")
    return samples, classes


def _warn_missing(missing: list[str], table: Path) -> None:
    if missing:
        warnings.warn(
            f"{len(missing)} clips listed in {table} were not found and are skipped, e.g. {missing[:3]}",
            stacklevel=3,
        )


# -------------------------------------------------------------------------------------- sampling
def sample_indices(
    num_available: int, num_frames: int, train: bool, generator: torch.Generator | None = None
) -> list[int]:
    """TSN segment sampling of ``num_frames`` indices from a clip of ``num_available`` frames.

    The clip is cut into ``num_frames`` equal segments; training takes a random frame of each segment,
    evaluation the middle frame. Clips shorter than ``num_frames`` use every frame, then repeat the last.

    Example::

        >>> sample_indices(16, 4, train=False)
        [2, 6, 10, 14]
        >>> sample_indices(3, 5, train=True)
        [0, 1, 2, 2, 2]
    """
    if num_available < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_available}")
    if num_available < num_frames:
        return list(range(num_available)) + [num_available - 1] * (num_frames - num_available)
    seg = num_available / num_frames
    if train:
        offsets = torch.rand(num_frames, generator=generator).tolist()
    else:
        offsets = [0.5] * num_frames
    return [min(num_available - 1, int(math.floor(seg * (i + o)))) for i, o in enumerate(offsets)]


class ClipTransform:
    """timm-style clip transform; the same random crop and flip for all frames of a clip.

    Args:
        img_size: output side.
        train: random resized crop + horizontal flip when True; resize + centre crop otherwise.
        mean: per-channel mean (default CLIP's).
        std: per-channel std.
        scale: area range of the random crop.
        ratio: aspect-ratio range of the random crop.
        hflip: flip probability.
        crop_pct: evaluation centre-crop fraction (1.0 = resize the whole frame).

    Returns (when called on uint8 ``(T, H, W, 3)``): float ``(T, 3, img_size, img_size)``.
    """

    def __init__(
        self,
        img_size: int,
        train: bool,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        scale: Sequence[float] = (0.8, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        crop_pct: float = 1.0,
    ) -> None:
        if img_size < 1:
            raise ValueError(f"img_size must be >= 1, got {img_size}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {tuple(scale)}")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be in [0, 1], got {hflip}")
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.img_size, self.train = img_size, train
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale, self.ratio, self.hflip, self.crop_pct = tuple(scale), tuple(ratio), hflip, crop_pct

    def _crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio)))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,)))
                left = int(torch.randint(0, w - cw + 1, (1,)))
                return top, left, ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        h, w = x.shape[-2:]
        if self.train:
            top, left, ch, cw = self._crop_box(h, w)
            x = x[..., top : top + ch, left : left + cw]
            if self.hflip and float(torch.rand(1)) < self.hflip:
                x = x.flip(-1)
        else:
            side = min(h, w)
            crop = max(1, round(side * self.crop_pct))
            top, left = (h - crop) // 2, (w - crop) // 2
            x = x[..., top : top + crop, left : left + crop]
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = F.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False, antialias=True
            )
        return (x - self.mean) / self.std


# --------------------------------------------------------------------------------------- dataset
class VideoClipDataset(Dataset):
    """Clips of ``num_frames`` frames from videos or frame folders; ``(clip (T,3,S,S), label)`` items.

    A file that cannot be read yields ``None`` (dropped by :func:`collate_clips`), a warning naming it, and
    an entry in :attr:`skipped` (per process: with worker processes each worker keeps its own list).
    """

    def __init__(
        self,
        samples: Sequence[VideoSample],
        num_frames: int,
        train: bool,
        transform: Callable[[np.ndarray], torch.Tensor],
        backend: str = "auto",
        frame_counts: dict[Path, int] | None = None,
        cache_decoded: bool = False,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.samples = list(samples)
        self.num_frames, self.train, self.transform, self.backend = num_frames, train, transform, backend
        self.frame_counts: dict[Path, int] = dict(frame_counts or {})
        self.skipped: list[str] = []
        self.cache_decoded = cache_decoded
        self._decoded: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def num_available(self, sample: VideoSample) -> int:
        n = self.frame_counts.get(sample.path)
        if n is None:
            n = (
                len(frame_files(sample.path))
                if sample.is_frames
                else video_num_frames(sample.path, self.backend)
            )
            self.frame_counts[sample.path] = n
        return n

    def load(self, sample: VideoSample) -> np.ndarray:
        """Decode the sampled frames of one clip as uint8 ``(T, H, W, 3)``."""
        if self.cache_decoded:  # small datasets: decode every frame once, sample from memory afterwards
            if sample.path not in self._decoded:
                files = frame_files(sample.path) if sample.is_frames else None
                self._decoded[sample.path] = (
                    _read_frames(files, range(len(files)))
                    if files is not None
                    else read_video(sample.path, backend=self.backend)
                )
            frames = self._decoded[sample.path]
            return frames[sample_indices(len(frames), self.num_frames, self.train)]
        n = self.num_available(sample)
        idx = sample_indices(n, self.num_frames, self.train)
        if sample.is_frames:
            return _read_frames(frame_files(sample.path), idx)
        return read_video(sample.path, idx, backend=self.backend)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        try:
            frames = self.load(sample)
        except Exception as err:  # corrupt / empty / unreadable: skip, never crash an epoch
            self.skipped.append(str(sample.path))
            warnings.warn(f"skipping unreadable clip {sample.path}: {err}", stacklevel=2)
            return None
        return self.transform(frames), sample.label


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


def collate_clips(batch: list):
    """``default_collate`` after dropping the ``None`` items of unreadable clips (may give an empty batch)."""
    items = [b for b in batch if b is not None]
    if not items:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return default_collate(items)


# ------------------------------------------------------------------------------------- synthetic
class SyntheticEmotionVideos:
    """Procedural face-like clips whose class lives only in the *order* of the frames.

    Each clip shows a cartoon face (random skin tone, background, position, size, noise) whose mouth
    curvature and brow height follow an expression intensity ``s(t)`` in [0, 1] (0: frown, low brows;
    1: smile, raised brows). The class is the time course of ``s``:

    * ``cheering_up``: ``s = t`` (mouth corners rise); ``saddening``: ``s = 1 - t`` (they fall);
    * ``fleeting_smile``: ``s = 1 - |2t - 1|``; ``fleeting_frown``: ``s = |2t - 1|``.

    Each class is the time reverse of another and all four visit every expression level equally often,
    so the multiset of frames carries (almost) no class information: a per-frame model that averages over
    time stays near chance, a model that compares frames can solve it. Clips are written as real mp4 files
    (PyAV) to ``root/<class>/<id>.mp4`` and read back through the same decord path as real data; a
    ``manifest.json`` marks a finished cache, so a second call returns at once.

    Args:
        root: cache folder (default ``~/.cache/lightning_papers/fe_adapter/synthetic-<hash of settings>``).
        num_clips: total clips (balanced over the four classes).
        clip_len: frames per clip.
        size: frame side in pixels (even).
        seed: generator seed.
        fps: frame rate written to the files.
        noise: std of the per-pixel Gaussian noise (0–255 scale).

    Example::

        >>> import tempfile
        >>> gen = SyntheticEmotionVideos(tempfile.mkdtemp(), num_clips=8, clip_len=4, size=32)
        >>> root = gen.prepare()
        >>> sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(SYNTHETIC_CLASSES)
        True
    """

    class_names = SYNTHETIC_CLASSES

    def __init__(
        self,
        root: str | Path | None = None,
        num_clips: int = 384,
        clip_len: int = 16,
        size: int = 32,
        seed: int = 0,
        fps: int = 8,
        noise: float = 3.0,
    ) -> None:
        if num_clips < len(SYNTHETIC_CLASSES):
            raise ValueError(f"num_clips must be >= {len(SYNTHETIC_CLASSES)}, got {num_clips}")
        if clip_len < 2:
            raise ValueError(f"clip_len must be >= 2, got {clip_len}")
        if size < 32 or size % 2:  # decord 0.6 mis-copies frames narrower than 32 px
            raise ValueError(f"size must be an even int >= 32, got {size}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.settings = dict(
            num_clips=num_clips, clip_len=clip_len, size=size, seed=seed, fps=fps, noise=noise, version=1
        )
        if root is None:
            digest = hashlib.sha1(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:10]
            root = Path.home() / ".cache" / "lightning_papers" / "fe_adapter" / f"synthetic-{digest}"
        self.root = Path(root)

    @staticmethod
    def intensity(label: int, t: np.ndarray) -> np.ndarray:
        """Expression intensity ``s(t)`` of class ``label`` at normalised times ``t`` in [0, 1]."""
        if label == 0:
            return t
        if label == 1:
            return 1.0 - t
        if label == 2:
            return 1.0 - np.abs(2.0 * t - 1.0)
        if label == 3:
            return np.abs(2.0 * t - 1.0)
        raise ValueError(f"label must be 0..3, got {label}")

    def render_clip(self, label: int, rng: np.random.Generator) -> np.ndarray:
        """One clip as uint8 ``(clip_len, size, size, 3)``."""
        n, size, noise = self.settings["clip_len"], self.settings["size"], self.settings["noise"]
        # jittered sampling times, symmetric under time reversal so reversed classes stay indistinguishable
        t = (np.arange(n) + rng.uniform(0.0, 1.0)) / n
        s = self.intensity(label, np.clip(t, 0.0, 1.0))
        s = rng.uniform(0.0, 0.15) + s * rng.uniform(0.7, 0.85)  # random expression range per clip
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        u = size / 32.0
        cx, cy = size / 2 + rng.uniform(-2, 2) * u, size / 2 + rng.uniform(-1.5, 1.5) * u
        scale = rng.uniform(0.9, 1.1)
        rx, ry = 11.0 * u * scale, 13.5 * u * scale
        skin = np.array([rng.uniform(150, 240), rng.uniform(110, 190), rng.uniform(80, 160)], np.float32)
        background = rng.uniform(20, 235, size=3).astype(np.float32)
        ink = np.array([rng.uniform(10, 60)] * 3, np.float32)
        face = np.clip(1.0 - (np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) - 1.0) * rx, 0.0, 1.0)
        eye_dx, eye_y = 4.5 * u * scale, cy - 3.0 * u * scale
        eyes = np.zeros_like(face)
        for ex in (cx - eye_dx, cx + eye_dx):
            eyes = np.maximum(eyes, np.clip(1.6 * u - np.hypot(xx - ex, yy - eye_y), 0.0, 1.0))
        frames = np.empty((n, size, size, 3), np.uint8)
        mouth_y, mouth_w = cy + 5.0 * u * scale, 5.5 * u * scale
        for i in range(n):
            curv = (2.0 * s[i] - 1.0) * 3.0 * u  # > 0: corners up (smile)
            # mouth: y = mouth_y - curv * (x - cx)^2 / w^2 over |x - cx| <= w, ~1.5 px thick
            rel = (xx - cx) / mouth_w
            curve_y = mouth_y - curv * rel**2 + curv * 0.5
            mouth = np.clip(1.4 * u - np.abs(yy - curve_y), 0.0, 1.0) * np.clip(
                (1.0 - np.abs(rel)) * mouth_w, 0.0, 1.0
            )
            brow_y = eye_y - (3.0 + 2.0 * s[i]) * u
            brows = np.zeros_like(face)
            for ex in (cx - eye_dx, cx + eye_dx):
                brows = np.maximum(
                    brows,
                    np.clip(1.2 * u - np.abs(yy - brow_y), 0.0, 1.0)
                    * np.clip((2.5 * u - np.abs(xx - ex)), 0.0, 1.0),
                )
            marks = np.maximum(np.maximum(eyes, mouth), brows)[..., None]
            img = background * (1 - face[..., None]) + skin * face[..., None]
            img = img * (1 - marks) + ink * marks
            img = img * rng.uniform(0.95, 1.05) + rng.normal(0.0, noise, size=img.shape)
            frames[i] = np.clip(img, 0, 255).astype(np.uint8)
        return frames

    def prepare(self, progress: bool = False) -> Path:
        """Write the clips (once) and return the folder-layout root ``root/<class>/<id>.mp4``."""
        manifest = self.root / "manifest.json"
        if manifest.is_file():
            try:
                if json.loads(manifest.read_text()).get("settings") == self.settings:
                    return self.root
            except (OSError, json.JSONDecodeError):
                pass
        rng = np.random.default_rng(self.settings["seed"])
        k = len(SYNTHETIC_CLASSES)
        labels = np.arange(self.settings["num_clips"]) % k
        iterator = range(len(labels))
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="synthetic emotion clips")
        for i in iterator:
            label = int(labels[i])
            path = self.root / SYNTHETIC_CLASSES[label] / f"{i:05d}.mp4"
            write_video(path, self.render_clip(label, rng), fps=self.settings["fps"])
        manifest.write_text(json.dumps({"settings": self.settings, "classes": list(SYNTHETIC_CLASSES)}))
        return self.root


# ----------------------------------------------------------------------------------- datamodule
DatasetName = Literal["synthetic", "dfew", "ferv39k", "mafw", "folder"]


class VideoEmotionDataModule(L.LightningDataModule):
    """Video emotion recognition data: DFEW, FERV39k, MAFW, a folder of your videos, or synthetic clips.

    Args:
        dataset: ``synthetic`` (embedded default, generated into a cache), ``dfew``, ``ferv39k``, ``mafw``
            (their distributed layouts under ``root``) or ``folder`` (``root/<class>/<clip>``; optional
            ``root/{train,val,test}/<class>/`` sub-splits).
        root: dataset root (for ``synthetic``: the cache folder, default under ``~/.cache``).
        fold: DFEW / MAFW fold 1–5 (the protocol averages the five).
        source: ``auto`` | ``video`` | ``frames``: which DFEW/MAFW copy to read.
        video_dir: override the clip folder relative to ``root``.
        num_frames: frames per clip T.
        img_size: frame side after the transform.
        batch_size: clips per batch.
        num_workers: DataLoader workers.
        val_fraction: for ``synthetic``/``folder`` (without a ``val`` sub-folder) the held-out fraction for
            validation; for DFEW/FERV39k/MAFW 0 means "validate on the test split" (the published
            protocol), > 0 carves a seeded validation subset out of the training split.
        test_fraction: held-out test fraction for ``synthetic``/``folder`` without a ``test`` sub-folder.
        seed: split seed.
        mean: normalisation mean (CLIP's by default; match your backbone).
        std: normalisation std.
        train_scale: random-resized-crop area range.
        hflip: horizontal flip probability.
        crop_pct: evaluation centre-crop fraction.
        backend: ``auto`` | ``decord`` | ``pyav`` video decoder.
        scan_files: open every clip once during ``setup`` to count its frames and skip unreadable files
            early (recommended; otherwise unreadable clips are skipped when loaded).
        cache_decoded: keep every decoded clip in memory after its first read (default: only for
            ``synthetic``; small datasets only).
        synthetic: keyword arguments of :class:`SyntheticEmotionVideos` (``num_clips``, ``clip_len``, ...).

    Attributes (after ``setup``): ``train_dataset``, ``val_dataset``, ``test_dataset``, ``class_names``,
    ``num_classes``, ``skipped_files`` (unreadable files found so far).

    Example::

        >>> dm = VideoEmotionDataModule("synthetic", synthetic=dict(num_clips=16, clip_len=4))  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: DatasetName = "synthetic",
        root: str | None = None,
        fold: int = 1,
        source: Literal["auto", "video", "frames"] = "auto",
        video_dir: str | None = None,
        num_frames: int = 8,
        img_size: int = 32,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float | None = None,
        test_fraction: float = 0.15,
        seed: int = 0,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        train_scale: tuple[float, float] = (0.8, 1.0),
        hflip: float = 0.5,
        crop_pct: float = 1.0,
        backend: Literal["auto", "decord", "pyav"] = "auto",
        scan_files: bool = True,
        cache_decoded: bool | None = None,
        synthetic: dict | None = None,
    ) -> None:
        super().__init__()
        if dataset not in ("synthetic", "dfew", "ferv39k", "mafw", "folder"):
            raise ValueError(f"dataset must be synthetic, dfew, ferv39k, mafw or folder, got {dataset!r}")
        if dataset in ("dfew", "ferv39k", "mafw", "folder") and not root:
            raise ValueError(f"dataset={dataset!r} needs root= the folder where you unpacked it")
        if dataset in ("dfew", "mafw"):
            _check_fold(fold)
        if num_frames < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"need num_frames >= 1, batch_size >= 1, num_workers >= 0; got {num_frames}, {batch_size}, {num_workers}"
            )
        if val_fraction is None:
            val_fraction = 0.15 if dataset in ("synthetic", "folder") else 0.0
        if not (
            0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0
        ):
            raise ValueError(
                f"val_fraction and test_fraction must be in [0, 1) with a sum < 1, got {val_fraction}, {test_fraction}"
            )
        self.save_hyperparameters()
        self.dataset, self.root, self.fold, self.source, self.video_dir = (
            dataset,
            root,
            fold,
            source,
            video_dir,
        )
        self.num_frames, self.img_size, self.batch_size, self.num_workers = (
            num_frames,
            img_size,
            batch_size,
            num_workers,
        )
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.backend, self.scan_files = backend, scan_files
        self.cache_decoded = dataset == "synthetic" if cache_decoded is None else cache_decoded
        self.synthetic = dict(synthetic or {})
        self._tf = dict(
            mean=tuple(mean), std=tuple(std), scale=tuple(train_scale), hflip=hflip, crop_pct=crop_pct
        )
        self.class_names: list[str] = {
            "synthetic": list(SYNTHETIC_CLASSES), "dfew": list(DFEW_CLASSES), "ferv39k": list(FERV39K_CLASSES),
            "mafw": list(MAFW_CLASSES), "folder": [],
        }[dataset]  # fmt: skip
        self.train_dataset: VideoClipDataset | None = None
        self.val_dataset: VideoClipDataset | None = None
        self.test_dataset: VideoClipDataset | None = None
        self._scan_skipped: list[str] = []
        self._frame_counts: dict[Path, int] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def skipped_files(self) -> list[str]:
        """Unreadable files skipped so far (scan + loading in this process), without duplicates."""
        seen = list(self._scan_skipped)
        for ds in (self.train_dataset, self.val_dataset, self.test_dataset):
            if ds is not None:
                seen += ds.skipped
        return list(dict.fromkeys(seen))

    def prepare_data(self) -> None:
        if self.dataset == "synthetic":
            SyntheticEmotionVideos(self.root, **self.synthetic).prepare(progress=True)

    # -- split logic
    def _splits(self) -> tuple[list[VideoSample], list[VideoSample], list[VideoSample]]:
        if self.dataset in ("synthetic", "folder"):
            root = (
                Path(self.root)
                if self.dataset == "folder"
                else SyntheticEmotionVideos(self.root, **self.synthetic).prepare()
            )
            if self.dataset == "folder" and (root / "train").is_dir():
                train, classes = parse_folder(root / "train")
                val = parse_folder(root / "val")[0] if (root / "val").is_dir() else []
                test = parse_folder(root / "test")[0] if (root / "test").is_dir() else []
                if not val:
                    train, val = _split(train, self.val_fraction, self.seed)
                self.class_names = classes
                return train, val, test or val
            samples, classes = parse_folder(root)
            self.class_names = classes
            rest, test = _split(samples, self.test_fraction, self.seed)
            frac = self.val_fraction / max(1e-9, 1.0 - self.test_fraction)
            train, val = _split(rest, frac, self.seed + 1)
            return train, val, test
        root = Path(self.root)
        if self.dataset == "dfew":
            train = parse_dfew(root, self.fold, "train", self.source, self.video_dir)
            test = parse_dfew(root, self.fold, "test", self.source, self.video_dir)
        elif self.dataset == "mafw":
            train = parse_mafw(root, self.fold, "train", self.source, self.video_dir)
            test = parse_mafw(root, self.fold, "test", self.source, self.video_dir)
        else:
            train = parse_ferv39k(root, "train", video_dir=self.video_dir)
            test = parse_ferv39k(root, "test", video_dir=self.video_dir)
        if self.val_fraction > 0:
            train, val = _split(train, self.val_fraction, self.seed)
        else:
            val = test
        return train, val, test

    def _scan(self, samples: list[VideoSample]) -> list[VideoSample]:
        if not self.scan_files:
            return samples
        kept = []
        for s in samples:
            if s.path in self._frame_counts:
                kept.append(s)
                continue
            try:
                n = len(frame_files(s.path)) if s.is_frames else video_num_frames(s.path, self.backend)
                if n < 1:
                    raise RuntimeError("no frames")
            except Exception as err:
                self._scan_skipped.append(str(s.path))
                warnings.warn(f"skipping unreadable clip {s.path}: {err}", stacklevel=2)
                continue
            self._frame_counts[s.path] = n
            kept.append(s)
        return kept

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train, val, test = self._splits()
        if not train:
            raise ValueError(f"no training clips found for dataset={self.dataset!r} under root={self.root!r}")
        train, val, test = self._scan(train), self._scan(val), self._scan(test)
        if self._scan_skipped:
            warnings.warn(f"{len(self._scan_skipped)} unreadable clip(s) skipped in total", stacklevel=2)
        make = lambda items, is_train: VideoClipDataset(  # noqa: E731
            items,
            self.num_frames,
            is_train,
            ClipTransform(self.img_size, is_train, **self._tf),
            self.backend,
            self._frame_counts,
            self.cache_decoded,
        )
        self.train_dataset, self.val_dataset, self.test_dataset = (
            make(train, True),
            make(val, False),
            make(test, False),
        )

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_clips,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, False)


def _split(
    samples: list[VideoSample], fraction: float, seed: int
) -> tuple[list[VideoSample], list[VideoSample]]:
    """Seeded stratified split: ``(kept, held_out)`` with ~``fraction`` of each class held out."""
    if fraction <= 0:
        return list(samples), []
    rng = np.random.default_rng(seed)
    kept, held = [], []
    by_label: dict[int, list[VideoSample]] = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        n_held = int(round(fraction * len(group)))
        if len(group) > 1:
            n_held = min(max(n_held, 1), len(group) - 1)
        else:
            n_held = 0
        held += [group[i] for i in order[:n_held]]
        kept += [group[i] for i in order[n_held:]]
    return kept, held
