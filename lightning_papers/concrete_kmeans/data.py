"""Loaders for the paper's image benchmarks from files you already have (nothing is downloaded).

* :class:`MNISTDataModule`: the four IDX files of MNIST (``train-images-idx3-ubyte`` etc., optionally
  ``.gz``), train + test pooled by default (70,000 images), as deep-clustering papers do.
* :class:`NewsgroupsDataModule`: 20 Newsgroups from its unpacked folders (``20news-bydate-train`` /
  ``-test``, one sub-folder per newsgroup), as TF-IDF vectors of the most frequent words (DEC's protocol).
* :class:`USPSDataModule`: USPS (9,298 16x16 digits) as the common ``usps.h5`` (groups ``train`` / ``test``
  with ``data`` and ``target``; needs ``h5py``), an ``.npz`` (``x`` / ``y``), or the LIBSVM text files
  (``usps``, ``usps.t``, optionally ``.bz2``; pixels in [-1, 1], labels 1..10).

Both scale pixels to [0, 1] and are :class:`~lightning_papers.data.ArrayDataModule` subclasses (seeded
splits, ``batch_size`` ...).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import numpy as np

from lightning_papers.data import ArrayDataModule

__all__ = ["MNISTDataModule", "NewsgroupsDataModule", "USPSDataModule", "read_idx"]

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format; ``.gz`` is decompressed on the fly).

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when the header is not IDX or the payload is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() if raw else 'empty'})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    payload = raw[4 + 4 * ndim:]
    if len(payload) != expected:
        raise ValueError(f"{path}: header promises shape {dims} ({expected} bytes), file has {len(payload)} bytes")
    return np.frombuffer(payload, dtype=dtype).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    names = [stem, stem.replace("-idx", ".idx")]
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in names:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(f"no {stem}[.gz] under {root} (also looked in MNIST/raw and raw)")


class MNISTDataModule(ArrayDataModule):
    """MNIST from its IDX files under ``root``, pixels scaled to [0, 1].

    Args:
        root: folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
            ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``; also searched in ``root/MNIST/raw``).
        split: ``"all"`` (train + test, 70k, the clustering protocol), ``"train"`` or ``"test"``.
        flatten: 784-dim vectors (True) or ``(1, 28, 28)`` images.
        batch_size, val_fraction, test_fraction, seed, num_workers: see ``ArrayDataModule``.

    Example::

        >>> dm = MNISTDataModule(root="~/data/mnist")  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str,
        split: Literal["all", "train", "test"] = "all",
        flatten: bool = True,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         num_workers=num_workers)
        if split not in ("all", "train", "test"):
            raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
        self.root, self.split, self.flatten = Path(root).expanduser(), split, flatten

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        parts = {"all": ("train", "t10k"), "train": ("train",), "test": ("t10k",)}[self.split]
        xs, ys = [], []
        for part in parts:
            images = read_idx(_find(self.root, f"{part}-images-idx3-ubyte"))
            labels = read_idx(_find(self.root, f"{part}-labels-idx1-ubyte"))
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise ValueError(f"{part}: expected images (N, H, W) and labels (N,), got {images.shape} and "
                                 f"{labels.shape}")
            xs.append(images)
            ys.append(labels)
        x = np.concatenate(xs).astype(np.float32) / 255.0
        x = x.reshape(len(x), -1) if self.flatten else x[:, None]
        return x, np.concatenate(ys).astype(np.int64)


class USPSDataModule(ArrayDataModule):
    """USPS handwritten digits (16x16) from a local file, pixels scaled to [0, 1], labels 0..9.

    Args:
        path: ``usps.h5`` / ``.hdf5`` (groups ``train`` and ``test`` with ``data`` and ``target``; needs
            ``h5py``), ``.npz`` (arrays ``x`` and ``y``), or a LIBSVM text file (``usps``, ``usps.t``,
            ``.bz2`` allowed; a second path can be given in ``extra_paths`` to pool train and test).
        extra_paths: more files of the same format to append (e.g. the LIBSVM test file).
        split: for ``.h5``: ``"all"`` (train + test, 9,298 images), ``"train"`` or ``"test"``.
        flatten: 256-dim vectors (True) or ``(1, 16, 16)`` images.
        batch_size, val_fraction, test_fraction, seed, num_workers: see ``ArrayDataModule``.
    """

    def __init__(
        self,
        path: str,
        extra_paths: list[str] | None = None,
        split: Literal["all", "train", "test"] = "all",
        flatten: bool = True,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         num_workers=num_workers)
        if split not in ("all", "train", "test"):
            raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
        self.usps_path = Path(path).expanduser()
        self.extra_paths = [Path(p).expanduser() for p in (extra_paths or [])]
        self.split, self.flatten = split, flatten

    def _read(self, file: Path) -> tuple[np.ndarray, np.ndarray]:
        if not file.is_file():
            raise FileNotFoundError(f"USPS file not found: {file}")
        suffix = file.suffix.lower()
        if suffix in (".h5", ".hdf5"):
            try:
                import h5py
            except ImportError as err:
                raise ImportError("reading usps.h5 needs h5py (pip install h5py), or convert it to .npz") from err
            groups = {"all": ("train", "test"), "train": ("train",), "test": ("test",)}[self.split]
            with h5py.File(file, "r") as fh:
                x = np.concatenate([np.asarray(fh[g]["data"][:], dtype=np.float32) for g in groups])
                y = np.concatenate([np.asarray(fh[g]["target"][:]) for g in groups])
        elif suffix == ".npz":
            with np.load(file) as data:
                keys = ("x", "y") if "x" in data else ("data", "target")
                if keys[0] not in data or keys[1] not in data:
                    raise KeyError(f"{file} needs arrays 'x' and 'y' (or 'data' and 'target'), has {data.files}")
                x, y = data[keys[0]].astype(np.float32), data[keys[1]]
        else:  # LIBSVM text: "label idx:value ...", pixels in [-1, 1], labels 1..10
            from sklearn.datasets import load_svmlight_file

            sparse, y = load_svmlight_file(str(file), n_features=256)
            x = (np.asarray(sparse.todense(), dtype=np.float32) + 1.0) / 2.0
            y = y.astype(np.int64) - 1
        return x.reshape(len(x), -1), np.asarray(y).astype(np.int64)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self._read(f) for f in [self.usps_path, *self.extra_paths]))
        x, y = np.concatenate(xs), np.concatenate(ys)
        if x.shape[1] != 256:
            raise ValueError(f"USPS images must have 256 pixels (16x16), got {x.shape[1]}")
        if x.max() > 1.0 + 1e-6:  # 0..255 integer pixels
            x = x / 255.0
        x = x.astype(np.float32)
        return (x if self.flatten else x.reshape(-1, 1, 16, 16)), y


class NewsgroupsDataModule(ArrayDataModule):
    """20 Newsgroups as TF-IDF vectors from the unpacked ``20news-bydate`` folders (nothing is downloaded).

    Args:
        root: folder holding ``20news-bydate-train`` and/or ``20news-bydate-test`` (each with one sub-folder
            of text files per newsgroup), or directly the per-newsgroup sub-folders.
        split: ``"all"`` (train + test, 18,846 posts), ``"train"`` or ``"test"`` (for the bydate layout).
        max_features: vocabulary size (the most frequent words; DEC and the paper use 2,000).
        batch_size, val_fraction, test_fraction, seed, num_workers: see ``ArrayDataModule``.

    Example::

        >>> dm = NewsgroupsDataModule(root="~/data/20news")  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str,
        split: Literal["all", "train", "test"] = "all",
        max_features: int = 2000,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         num_workers=num_workers)
        if split not in ("all", "train", "test"):
            raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
        if int(max_features) < 1:
            raise ValueError(f"max_features must be >= 1, got {max_features}")
        self.root, self.split, self.max_features = Path(root).expanduser(), split, int(max_features)

    def _folders(self) -> list[Path]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"20 Newsgroups folder not found: {self.root}")
        parts = {"all": ("train", "test"), "train": ("train",), "test": ("test",)}[self.split]
        bydate = [self.root / f"20news-bydate-{p}" for p in parts if (self.root / f"20news-bydate-{p}").is_dir()]
        if bydate:
            return bydate
        if any((self.root / f"20news-bydate-{p}").is_dir() for p in ("train", "test")):
            raise FileNotFoundError(f"no 20news-bydate-{' or '.join(parts)} folder under {self.root}")
        return [self.root]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_files
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts, names = [], []
        for folder in self._folders():
            bunch = load_files(str(folder), encoding="latin-1", decode_error="replace", shuffle=False)
            if len(bunch.data) == 0:
                raise ValueError(f"{folder} has no newsgroup sub-folders with text files")
            texts += list(bunch.data)
            names += [bunch.target_names[t] for t in bunch.target]
        classes = sorted(set(names))
        y = np.array([classes.index(n) for n in names], dtype=np.int64)
        tfidf = TfidfVectorizer(max_features=self.max_features, dtype=np.float32)
        x = np.asarray(tfidf.fit_transform(texts).todense(), dtype=np.float32)
        return x, y
