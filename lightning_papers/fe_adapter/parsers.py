"""Dataset layouts as a registry: DFEW, FERV39k, MAFW and a folder of your own clips.

Each parser reads a dataset's distributed split files and returns :class:`VideoSample` lists (a video file
or a frame folder, and an integer label). :data:`DATASETS` maps a dataset name to its
:class:`DatasetSpec` (class names, folds, and a function giving the published train and test lists);
:func:`register_dataset` adds your own layout, which ``VideoEmotionDataModule(dataset=...)`` then reads.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: which published list to read
Split = Literal["train", "test"]
#: which copy of a dataset to read: videos, frame folders, or whichever exists
Source = Literal["auto", "video", "frames"]

__all__ = [
    "DATASETS",
    "DFEW_CLASSES",
    "FERV39K_CLASSES",
    "MAFW_CLASSES",
    "DatasetSpec",
    "VideoSample",
    "frame_files",
    "parse_dfew",
    "parse_ferv39k",
    "parse_folder",
    "parse_mafw",
    "register_dataset",
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

_ALIASES = {
    "happiness": "happy", "sadness": "sad", "anger": "angry", "surprised": "surprise", "disgusted": "disgust",
    "fearful": "fear", "happy": "happiness", "sad": "sadness", "angry": "anger",
}  # fmt: skip
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class VideoSample:
    """One labelled clip: a video file or a folder of frame images."""

    path: Path
    label: int

    @property
    def is_frames(self) -> bool:
        return self.path.is_dir()


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


def _check_split(split: Split) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _locate(root: Path, dirs: Sequence[str], name: str, source: Source) -> Path | None:
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
    root: str | Path,
    fold: int = 1,
    split: Split = "train",
    source: Source = "auto",
    video_dir: str | None = None,
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
            name, text = row[0].strip(), row[-1].strip()
            if not text.lstrip("-").isdigit():
                raise ValueError(f"{table}, row {n + 1}: label {text!r} for {name!r} is not a number; expected 1..7")
            label = int(text)
            if not 1 <= label <= 7:
                raise ValueError(f"{table}, row {n + 1}: label {label} for {name!r} is outside 1..7")
            if name.isdigit():
                name = f"{int(name):05d}"
            path = _locate(root, dirs, name, source)
            if path is None:
                missing.append(name)
                continue
            samples.append(VideoSample(path, label - 1))
    _check_missing(missing, table, found=len(samples))
    return samples


def parse_ferv39k(
    root: str | Path, split: Split = "train", scene: str = "All_scenes", video_dir: str | None = None
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
    _check_missing(missing, table, found=len(samples))
    return samples


def parse_mafw(
    root: str | Path,
    fold: int = 1,
    split: Split = "train",
    source: Source = "auto",
    video_dir: str | None = None,
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
    _check_missing(missing, table, found=len(samples))
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


def _check_missing(missing: list[str], table: Path, found: int) -> None:
    """Warn about listed clips that are absent; none present at all is an error (a wrong root or clip folder)."""
    if missing and not found:
        raise FileNotFoundError(
            f"none of the {len(missing)} clips listed in {table} was found (e.g. {missing[:3]}); check the dataset "
            "root, the clip folder (video_dir) and source"
        )
    if missing:
        warnings.warn(
            f"{len(missing)} clips listed in {table} were not found and are skipped, e.g. {missing[:3]}",
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------- registry
Splits = tuple[list[VideoSample], list[VideoSample]]


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset layout.

    Args:
        name: the ``dataset=`` name.
        classes: class names in label order (empty: read from the data, as for ``folder``).
        folds: the published cross-validation folds (empty: one fixed train/test split).
        splits: ``splits(root, fold, source, video_dir) -> (train, test)`` with the published lists.
    """

    name: str
    classes: tuple[str, ...]
    folds: tuple[int, ...]
    splits: Callable[[Path, int, str, str | None], Splits]


#: Registered dataset layouts by name.
DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, overwrite: bool = False) -> DatasetSpec:
    """Add a dataset layout to :data:`DATASETS` (``overwrite`` to replace one of the same name).

    Example::

        >>> spec = DatasetSpec("my_set", ("calm", "tense"), (), lambda root, fold, source, video_dir: ([], []))
        >>> register_dataset(spec).name in DATASETS
        True
    """
    if spec.name in DATASETS and not overwrite:
        raise ValueError(f"dataset {spec.name!r} is already registered; pass overwrite=True to replace it")
    DATASETS[spec.name] = spec
    return spec


register_dataset(DatasetSpec(
    "dfew", DFEW_CLASSES, (1, 2, 3, 4, 5),
    lambda root, fold, source, video_dir: (
        parse_dfew(root, fold, "train", source, video_dir), parse_dfew(root, fold, "test", source, video_dir)
    ),
))  # fmt: skip
register_dataset(DatasetSpec(
    "ferv39k", FERV39K_CLASSES, (),
    lambda root, fold, source, video_dir: (
        parse_ferv39k(root, "train", video_dir=video_dir), parse_ferv39k(root, "test", video_dir=video_dir)
    ),
))  # fmt: skip
register_dataset(DatasetSpec(
    "mafw", MAFW_CLASSES, (1, 2, 3, 4, 5),
    lambda root, fold, source, video_dir: (
        parse_mafw(root, fold, "train", source, video_dir), parse_mafw(root, fold, "test", source, video_dir)
    ),
))  # fmt: skip
