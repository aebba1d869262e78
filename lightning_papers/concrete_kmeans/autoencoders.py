"""Default autoencoders of :class:`~lightning_papers.concrete_kmeans.DeepConcreteKMeans` (MLP as in DEC, small conv)."""

from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (used by the doctest examples)
from torch import nn

__all__ = ["make_conv_autoencoder", "make_mlp_autoencoder"]


def make_mlp_autoencoder(
    in_features: int, latent_dim: int = 10, hidden: Sequence[int] = (256, 128)
) -> tuple[nn.Module, nn.Module]:
    """A fully-connected autoencoder ``in -> hidden... -> latent -> reversed(hidden)... -> in`` (ReLU).

    The embedding and the reconstruction layers are linear, as in DEC's ``d-500-500-2000-10`` autoencoder
    (pass ``hidden=(500, 500, 2000)`` for that one).

    Example::

        >>> enc, dec = make_mlp_autoencoder(64, 10, (32,))
        >>> dec(enc(torch.zeros(3, 64))).shape
        torch.Size([3, 64])
    """
    if in_features < 1 or latent_dim < 1:
        raise ValueError(f"in_features and latent_dim must be >= 1, got {in_features} and {latent_dim}")
    widths = [int(in_features), *map(int, hidden), int(latent_dim)]
    enc: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        enc.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            enc.append(nn.ReLU())
    back = widths[::-1]
    dec: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(back[:-1], back[1:])):
        dec.append(nn.Linear(a, b))
        if i < len(back) - 2:
            dec.append(nn.ReLU())
    return nn.Sequential(*enc), nn.Sequential(*dec)


def make_conv_autoencoder(
    input_shape: Sequence[int], latent_dim: int = 10, channels: Sequence[int] = (32, 64)
) -> tuple[nn.Module, nn.Module]:
    """A small convolutional autoencoder for ``(C, H, W)`` images (stride-2 convs, H and W divisible by 2^depth).

    Example::

        >>> enc, dec = make_conv_autoencoder((1, 8, 8), 10, (8, 16))
        >>> dec(enc(torch.zeros(2, 1, 8, 8))).shape
        torch.Size([2, 1, 8, 8])
    """
    c, h, w = (int(v) for v in input_shape)
    scale = 2 ** len(channels)
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} must be divisible by 2^len(channels) = {scale}")
    enc: list[nn.Module] = []
    width = c
    for ch in channels:
        enc += [nn.Conv2d(width, ch, 3, stride=2, padding=1), nn.ReLU()]
        width = ch
    flat = width * (h // scale) * (w // scale)
    enc += [nn.Flatten(), nn.Linear(flat, latent_dim)]
    dec: list[nn.Module] = [nn.Linear(latent_dim, flat), nn.ReLU(), nn.Unflatten(1, (width, h // scale, w // scale))]
    rev = [*channels[::-1][1:], c]
    for i, ch in enumerate(rev):
        dec.append(nn.ConvTranspose2d(width, ch, 3, stride=2, padding=1, output_padding=1))
        if i < len(rev) - 1:
            dec.append(nn.ReLU())
        width = ch
    return nn.Sequential(*enc), nn.Sequential(*dec)
