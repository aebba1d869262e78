"""``VideoEmotionDataModule``: DFEW, FERV39k, MAFW, a folder of clips, or the embedded synthetic task.

Model selection never sees test data: the validation split is always carved (seeded, stratified) out of
the *training* list, for the published datasets too (whose papers often pick their best epoch on the test
fold). The test split is the published one (DFEW / MAFW: fold 1–5; FERV39k: its single split).
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import numpy as np
from torch.utils.data import DataLoader

from lightning_papers.fe_adapter.dataset import ClipDecodeError, VideoClipDataset, collate_clips, count_frames
from lightning_papers.fe_adapter.parsers import DATASETS, VideoSample, parse_folder
from lightning_papers.fe_adapter.synthetic import SYNTHETIC_CLASSES, SyntheticEmotionVideos
from lightning_papers.fe_adapter.transforms import CLIP_MEAN, CLIP_STD, ClipTransform

__all__ = ["VideoEmotionDataModule", "split_stratified"]


class VideoEmotionDataModule(L.LightningDataModule):
    """Video emotion recognition data (clips ``(B, T, 3, S, S)`` and integer labels).

    Args:
        dataset: ``synthetic`` (embedded default, generated into a cache), ``folder`` (``root/<class>/<clip>``;
            optional ``root/{train,val,test}/<class>/`` sub-splits) or a registered layout (``dfew``,
            ``ferv39k``, ``mafw``; see :data:`~lightning_papers.fe_adapter.parsers.DATASETS`).
        root: dataset root (for ``synthetic``: the cache folder, default under ``~/.cache``).
        fold: the fold of datasets with folds (DFEW / MAFW: 1–5; the protocol averages all five).
        source: ``auto`` | ``video`` | ``frames``: which DFEW/MAFW copy to read.
        video_dir: override the clip folder relative to ``root``.
        num_frames: frames per clip T.
        img_size: frame side after the transform.
        batch_size: clips per batch.
        num_workers: DataLoader workers.
        val_fraction: fraction of the *training* clips held out (per class) for validation / model selection;
            0 turns validation off. Never taken from the test split.
        test_fraction: held-out test fraction for ``synthetic`` / ``folder`` without a ``test`` sub-folder.
        seed: split seed.
        mean: normalisation mean (CLIP's by default; match your backbone).
        std: normalisation std.
        train_scale: random-resized-crop area range.
        hflip: horizontal flip probability.
        crop_pct: evaluation centre-crop fraction.
        backend: ``auto`` | ``decord`` | ``pyav`` video decoder.
        scan_files: open every clip once during ``setup`` to count its frames and drop undecodable files
            early (otherwise they are skipped when loaded).
        cache_decoded: keep every decoded clip in memory after its first read (default: only for
            ``synthetic``; small datasets only).
        synthetic: keyword arguments of :class:`SyntheticEmotionVideos` (``num_clips``, ``clip_len``, ...).

    Attributes (after ``setup``): ``train_dataset``, ``val_dataset``, ``test_dataset``, ``class_names``,
    ``num_classes``, ``skipped_files`` (undecodable files found so far, by the scan and by the loaders'
    workers, with how often each was hit in ``skip_counts``).

    Example::

        >>> dm = VideoEmotionDataModule("dfew", root="/data/DFEW", fold=3)  # validation: 10% of fold 3's train list
        >>> dm.val_fraction, dm.num_classes
        (0.1, 7)
    """

    def __init__(
        self,
        dataset: str = "synthetic",
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
        names = ("synthetic", "folder", *DATASETS)
        if dataset not in names:
            raise ValueError(f"dataset must be one of {names}, got {dataset!r}")
        if dataset != "synthetic" and not root:
            raise ValueError(f"dataset={dataset!r} needs root= the folder where you unpacked it")
        spec = DATASETS.get(dataset)
        if spec is not None and spec.folds and fold not in spec.folds:
            raise ValueError(f"fold must be one of {spec.folds} for {dataset}, got {fold!r}")
        if num_frames < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"need num_frames >= 1, batch_size >= 1, num_workers >= 0; got {num_frames}, {batch_size}, {num_workers}"
            )
        if val_fraction is None:
            val_fraction = 0.15 if dataset in ("synthetic", "folder") else 0.1
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
        self.num_frames, self.img_size = num_frames, img_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.backend, self.scan_files = backend, scan_files
        self.cache_decoded = dataset == "synthetic" if cache_decoded is None else cache_decoded
        self.synthetic = dict(synthetic or {})
        self._tf = dict(
            mean=tuple(mean), std=tuple(std), scale=tuple(train_scale), hflip=hflip, crop_pct=crop_pct
        )
        if dataset == "synthetic":
            self.class_names: list[str] = list(SYNTHETIC_CLASSES)
        else:
            self.class_names = list(spec.classes) if spec is not None else []
        self.train_dataset: VideoClipDataset | None = None
        self.val_dataset: VideoClipDataset | None = None
        self.test_dataset: VideoClipDataset | None = None
        self.skip_counts: Counter[str] = Counter()
        self._frame_counts: dict[Path, int] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def skipped_files(self) -> list[str]:
        """Undecodable files found so far by the scan and by every loader worker (merged in this process)."""
        return list(self.skip_counts)

    def prepare_data(self) -> None:
        if self.dataset == "synthetic":
            SyntheticEmotionVideos(self.root, **self.synthetic).prepare(progress=True)

    # -- splits
    def splits(self) -> tuple[list[VideoSample], list[VideoSample], list[VideoSample]]:
        """``(train, val, test)`` sample lists; validation always comes out of the training list."""
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
                    train, val = split_stratified(train, self.val_fraction, self.seed)
                self.class_names = classes
                return train, val, test
            samples, classes = parse_folder(root)
            self.class_names = classes
            rest, test = split_stratified(samples, self.test_fraction, self.seed)
            frac = self.val_fraction / max(1e-9, 1.0 - self.test_fraction)
            train, val = split_stratified(rest, frac, self.seed + 1)
            return train, val, test
        spec = DATASETS[self.dataset]
        train, test = spec.splits(Path(self.root), self.fold, self.source, self.video_dir)
        train, val = split_stratified(train, self.val_fraction, self.seed)
        return train, val, test

    def _scan(self, samples: list[VideoSample]) -> list[VideoSample]:
        if not self.scan_files:
            return samples
        kept = []
        for s in samples:
            if s.path not in self._frame_counts:
                try:
                    self._frame_counts[s.path] = count_frames(s, self.backend)
                except ClipDecodeError as err:
                    self.skip_counts[err.path] += 1
                    warnings.warn(f"skipping undecodable clip: {err}", stacklevel=2)
                    continue
            kept.append(s)
        return kept

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train, val, test = self.splits()
        if not train:
            raise ValueError(f"no training clips found for dataset={self.dataset!r} under root={self.root!r}")
        train, val, test = self._scan(train), self._scan(val), self._scan(test)
        if self.skip_counts:
            warnings.warn(f"{len(self.skip_counts)} undecodable clip(s) dropped by the scan", stacklevel=2)

        def make(items: list[VideoSample], is_train: bool) -> VideoClipDataset:
            return VideoClipDataset(
                items, self.num_frames, is_train, ClipTransform(self.img_size, is_train, **self._tf),
                self.backend, self._frame_counts, self.cache_decoded,
            )  # fmt: skip

        self.train_dataset, self.val_dataset, self.test_dataset = (
            make(train, True),
            make(val, False),
            make(test, False),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Record the paths of undecodable clips carried by a batch (from any worker) in this process."""
        if isinstance(batch, (list, tuple)) and len(batch) == 3 and isinstance(batch[2], list):
            for path in batch[2]:
                if path not in self.skip_counts:
                    warnings.warn(f"undecodable clip skipped by a loader: {path}", stacklevel=2)
                self.skip_counts[path] += 1
        return batch

    def _loader(self, ds: VideoClipDataset | None, shuffle: bool, what: str) -> DataLoader | list:
        if ds is None:
            raise RuntimeError("call setup() before asking for data loaders")
        if len(ds) == 0:
            if what == "val":
                return []  # validation turned off (val_fraction=0)
            raise ValueError(f"dataset={self.dataset!r} has no {what} clips (root={self.root!r})")
        return DataLoader(
            ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=collate_clips, persistent_workers=self.num_workers > 0, drop_last=False,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, True, "train")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_dataset, False, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, False, "test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, False, "test")


def split_stratified(
    samples: list[VideoSample], fraction: float, seed: int
) -> tuple[list[VideoSample], list[VideoSample]]:
    """Seeded stratified split ``(kept, held_out)`` with ~``fraction`` of each class held out.

    Example::

        >>> s = [VideoSample(Path(f"{i}.mp4"), i % 2) for i in range(10)]
        >>> kept, held = split_stratified(s, 0.2, seed=0)
        >>> len(kept), len(held), sorted(x.label for x in held)
        (8, 2, [0, 1])
    """
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
        n_held = min(max(int(round(fraction * len(group))), 1), len(group) - 1) if len(group) > 1 else 0
        held += [group[i] for i in order[:n_held]]
        kept += [group[i] for i in order[n_held:]]
    return kept, held
