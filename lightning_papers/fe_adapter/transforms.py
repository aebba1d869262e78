"""Clip sampling and transforms: TSN segment sampling and a timm-style transform shared by all frames."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipTransform", "sample_indices"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
