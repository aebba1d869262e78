"""Embedded, download-free datasets shared by the methods, plus loaders for a user's own files."""

from lightning_papers.data.arrays import DIGITS_ASYMMETRIC_MAP, ArrayDataModule, as_labels, make_label_noise
from lightning_papers.data.digits import DigitsDataModule
from lightning_papers.data.mnist1d import MNIST1DDataModule, make_mnist1d
from lightning_papers.data.text import TextDataModule, TokenWindows, bundled_text, decode_bytes, encode_bytes
from lightning_papers.data.video import decord_available, read_video, video_num_frames, write_video

__all__ = [
    "DIGITS_ASYMMETRIC_MAP",
    "ArrayDataModule",
    "DigitsDataModule",
    "MNIST1DDataModule",
    "TextDataModule",
    "TokenWindows",
    "as_labels",
    "bundled_text",
    "decode_bytes",
    "decord_available",
    "encode_bytes",
    "make_label_noise",
    "make_mnist1d",
    "read_video",
    "video_num_frames",
    "write_video",
]
