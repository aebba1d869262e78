"""``SyntheticEmotionVideos``: procedural face clips whose class is a *multi-scale* temporal pattern.

Each clip shows a cartoon face (random skin tone, background, position, size, pixel noise) with a neutral
expression, one smile and one frown. Each expression is a brief bump of random onset, duration (brief or
sustained) and amplitude (subtle or broad). The class is the *order* of the two expressions and how far
apart they are:

* ``smile_frown_close`` / ``frown_smile_close``: the second expression follows within ~1/5 of the clip;
* ``smile_frown_apart`` / ``frown_smile_apart``: they lie ~2/3 of the clip apart.

Every clip has the same kinds of frames (neutral, one smile, one frown) and the time reverse of a clip is
a clip of the partner class with the same gap, so the *set* of frames carries no class information: a
per-frame model that averages over time is at chance (UAR 0.25) by construction. Telling the four classes
apart needs short-range (close) *and* long-range (apart) temporal relations, at random onsets, speeds and
amplitudes: the multi-scale temporal modelling that dilated temporal convolutions are meant to provide.

Clips are real mp4 files (PyAV) under ``root/<class>/<id>.mp4``, read back through the same decoder as real
data. The folder is written atomically (a temporary folder replaces ``root``), so regenerating with other
settings never leaves clips of an earlier run behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lightning_papers.data import write_video
from lightning_papers.files import atomic_directory

__all__ = ["SYNTHETIC_CLASSES", "SyntheticEmotionVideos"]

#: The embedded synthetic task: order (smile/frown first) x distance (close/apart) of two expressions.
SYNTHETIC_CLASSES = ("smile_frown_close", "frown_smile_close", "smile_frown_apart", "frown_smile_apart")
_VERSION = 2
#: distance between the two expression peaks as a fraction of the clip, per distance class
#: distance between the two expression peaks as a fraction of the clip, per distance class
_GAPS = {"close": (0.17, 0.23), "apart": (0.40, 0.47)}
_MARGIN = 0.04
_HOLDS = (0.0625, 0.08)  # half of an expression's hold time (brief .. sustained)
_RAMPS = (0.01, 0.04)  # onset / offset time (fast .. slow)
_AMPS = (0.6, 1.0)  # expression amplitude (subtle .. broad)


class SyntheticEmotionVideos:
    """Procedural emotion clips whose class lives only in the timing of two expressions (module docstring).

    Args:
        root: output folder (default ``~/.cache/lightning_papers/fe_adapter/synthetic-<hash of settings>``).
        num_clips: total clips (balanced over the four classes).
        clip_len: frames per clip.
        size: frame side in pixels (even, >= 32).
        seed: generator seed.
        fps: frame rate written to the files.
        noise: std of the per-pixel Gaussian noise (0–255 scale).
        amplitude: range of each expression's amplitude (subtle .. broad, at most 1).
        hold: range of half of each expression's hold time, as a fraction of the clip (brief .. sustained).

    Example::

        >>> import tempfile
        >>> gen = SyntheticEmotionVideos(tempfile.mkdtemp(), num_clips=8, clip_len=8, size=32)
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
        amplitude: tuple[float, float] = _AMPS,
        hold: tuple[float, float] = _HOLDS,
    ) -> None:
        if num_clips < len(SYNTHETIC_CLASSES):
            raise ValueError(f"num_clips must be >= {len(SYNTHETIC_CLASSES)}, got {num_clips}")
        if clip_len < 8:
            raise ValueError(f"clip_len must be >= 8 (two expressions and their gap), got {clip_len}")
        if size < 32 or size % 2:  # decord 0.6 mis-copies frames narrower than 32 px
            raise ValueError(f"size must be an even int >= 32, got {size}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        amplitude, hold = _range("amplitude", amplitude, 1.0), _range("hold", hold, 0.15)
        self.settings = dict(
            num_clips=num_clips,
            clip_len=clip_len,
            size=size,
            seed=seed,
            fps=fps,
            noise=noise,
            version=_VERSION,
        )
        # only non-default ranges enter the settings: the defaults keep the cache folders of earlier versions
        if amplitude != _AMPS or hold != _HOLDS:
            self.settings.update(amplitude=list(amplitude), hold=list(hold))
        self.amplitude, self.hold = amplitude, hold
        if root is None:
            digest = hashlib.sha1(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:10]
            root = Path.home() / ".cache" / "lightning_papers" / "fe_adapter" / f"synthetic-{digest}"
        self.root = Path(root)

    @staticmethod
    def intensity(
        label: int,
        t: np.ndarray,
        rng: np.random.Generator,
        amplitude: tuple[float, float] = _AMPS,
        hold: tuple[float, float] = _HOLDS,
    ) -> np.ndarray:
        """Expression intensity ``s(t)`` in [0, 1] (0.5 neutral, 1 smile, 0 frown) for class ``label``.

        Draws the onset, the hold time and rise/fall speed of each expression, their amplitudes and the
        distance between them from ``rng``. Each expression is a trapezoid (ramp up, hold, ramp down); the
        draw is symmetric under time reversal, which swaps the order classes.
        """
        if label not in range(len(SYNTHETIC_CLASSES)):
            raise ValueError(f"label must be 0..{len(SYNTHETIC_CLASSES) - 1}, got {label}")
        half_hold = rng.uniform(*hold, size=2)  # half of the hold time: brief or sustained
        ramp = rng.uniform(*_RAMPS, size=2)  # onset/offset time: fast or slow
        amp = rng.uniform(*amplitude, size=2)  # subtle or broad
        gap = rng.uniform(*_GAPS["close" if label < 2 else "apart"])
        first = rng.uniform(_MARGIN, 1.0 - _MARGIN - gap)  # random onset, both peaks inside the clip
        sign = (1.0, -1.0) if label % 2 == 0 else (-1.0, 1.0)  # smile first or frown first
        s = np.full_like(t, 0.5)
        for c, h, r, a, sg in zip((first, first + gap), half_hold, ramp, amp, sign):
            s = s + sg * 0.5 * a * np.clip((h + r - np.abs(t - c)) / r, 0.0, 1.0)
        return np.clip(s, 0.0, 1.0)

    def render_clip(self, label: int, rng: np.random.Generator) -> np.ndarray:
        """One clip as uint8 ``(clip_len, size, size, 3)``."""
        n = self.settings["clip_len"]
        t = (np.arange(n) + 0.5) / n
        s = self.intensity(label, t, rng, self.amplitude, self.hold)
        return render_face(s, rng, self.settings["size"], self.settings["noise"])

    def _labels(self) -> np.ndarray:
        return np.arange(self.settings["num_clips"]) % len(SYNTHETIC_CLASSES)

    def is_ready(self) -> bool:
        """True when ``root`` holds a finished set of clips made with these settings."""
        manifest = self.root / "manifest.json"
        try:
            return json.loads(manifest.read_text()).get("settings") == self.settings
        except (OSError, json.JSONDecodeError):
            return False

    def prepare(self, progress: bool = False) -> Path:
        """Write the clips (once per settings) and return the folder-layout root ``root/<class>/<id>.mp4``.

        The clips are written into a temporary folder that then replaces ``root`` in one step, so a crash
        leaves no half-written set and a regeneration never keeps clips of earlier settings.
        """
        if self.is_ready():
            return self.root
        rng = np.random.default_rng(self.settings["seed"])
        labels = self._labels()
        iterator = range(len(labels))
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="synthetic emotion clips")
        with atomic_directory(self.root) as tmp:
            for i in iterator:
                label = int(labels[i])
                path = tmp / SYNTHETIC_CLASSES[label] / f"{i:05d}.mp4"
                write_video(path, self.render_clip(label, rng), fps=self.settings["fps"])
            (tmp / "manifest.json").write_text(
                json.dumps({"settings": self.settings, "classes": list(SYNTHETIC_CLASSES)})
            )
        return self.root


def _range(name: str, value: tuple[float, float], upper: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0.0 < lo <= hi <= upper:
        raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high <= {upper}, got {value!r}")
    return lo, hi


def render_face(s: np.ndarray, rng: np.random.Generator, size: int = 32, noise: float = 3.0) -> np.ndarray:
    """Frames of a cartoon face following expression levels ``s`` (0 frown, 0.5 neutral, 1 smile).

    The mouth corners and the brows rise with a smile and drop with a frown. The face's position, size and
    colours are drawn per clip, brightness and pixel noise per frame. Returns uint8 ``(len(s), size, size, 3)``.
    """
    u = size / 32.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx0, cy0 = size / 2 + rng.uniform(-2, 2) * u, size / 2 + rng.uniform(-1.5, 1.5) * u
    scale = rng.uniform(0.9, 1.1)
    rx, ry = 11.0 * u * scale, 13.5 * u * scale
    skin = np.array([rng.uniform(150, 240), rng.uniform(110, 190), rng.uniform(80, 160)], np.float32)
    background = rng.uniform(20, 235, size=3).astype(np.float32)
    ink = np.array([rng.uniform(10, 60)] * 3, np.float32)
    eye_dx = 4.5 * u * scale
    frames = np.empty((len(s), size, size, 3), np.uint8)
    for i, level in enumerate(s):
        cx, cy = cx0, cy0
        face = np.clip(1.0 - (np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) - 1.0) * rx, 0.0, 1.0)
        eye_y = cy - 3.0 * u * scale
        marks = np.zeros_like(face)
        for ex in (cx - eye_dx, cx + eye_dx):
            marks = np.maximum(marks, np.clip(1.6 * u - np.hypot(xx - ex, yy - eye_y), 0.0, 1.0))
        mouth_y, mouth_w = cy + 5.0 * u * scale, 5.5 * u * scale
        rel = (xx - cx) / mouth_w
        curv = (2.0 * level - 1.0) * 3.0 * u  # > 0: corners up (smile)
        curve_y = mouth_y - curv * rel**2 + curv * 0.5
        mouth = np.clip(1.4 * u - np.abs(yy - curve_y), 0.0, 1.0) * np.clip(
            (1.0 - np.abs(rel)) * mouth_w, 0.0, 1.0
        )
        brow_y = eye_y - (3.0 + 2.0 * level) * u
        for ex in (cx - eye_dx, cx + eye_dx):
            brow = np.clip(1.2 * u - np.abs(yy - brow_y), 0.0, 1.0) * np.clip(
                2.5 * u - np.abs(xx - ex), 0.0, 1.0
            )
            marks = np.maximum(marks, brow)
        marks = np.maximum(marks, mouth)[..., None]
        img = background * (1 - face[..., None]) + skin * face[..., None]
        img = img * (1 - marks) + ink * marks
        img = img * rng.uniform(0.95, 1.05) + rng.normal(0.0, noise, size=img.shape)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames
