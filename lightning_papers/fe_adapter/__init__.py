"""FE-Adapter (arXiv 2408.02421): parameter-efficient image-to-video transfer for video emotion recognition.

``inject_fe_adapters`` turns a frozen timm ViT into a video model with small dynamic dilated temporal
adapters; ``FEAdapterClassifier`` wraps it as a LightningModule (modes adapter / frame_adapter /
linear_probe / full_finetune); ``save_adapter`` / ``load_adapter`` write and read adapter-only files;
``VideoEmotionDataModule`` reads DFEW, FERV39k, MAFW (see ``DATASETS``), a folder of videos, or the
embedded ``SyntheticEmotionVideos``; ``cross_validate`` runs and summarises the published folds.
See ``README.md`` in this folder.
"""

from lightning_papers.fe_adapter.adapter import (
    FEAdapter,
    FEAdapterConfig,
    count_parameters,
    fe_adapters,
    inject_fe_adapters,
    remove_fe_adapters,
    set_num_frames,
)
from lightning_papers.fe_adapter.adapter_io import (
    frozen_fingerprint,
    load_adapter,
    read_adapter_metadata,
    save_adapter,
)
from lightning_papers.fe_adapter.datamodule import VideoEmotionDataModule, split_stratified
from lightning_papers.fe_adapter.dataset import ClipDecodeError, VideoClipDataset, collate_clips
from lightning_papers.fe_adapter.folds import cross_validate, summarize_folds
from lightning_papers.fe_adapter.module import MODES, FEAdapterClassifier, build_backbone
from lightning_papers.fe_adapter.parsers import (
    DATASETS,
    DFEW_CLASSES,
    FERV39K_CLASSES,
    MAFW_CLASSES,
    DatasetSpec,
    VideoSample,
    parse_dfew,
    parse_ferv39k,
    parse_folder,
    parse_mafw,
    register_dataset,
)
from lightning_papers.fe_adapter.synthetic import SYNTHETIC_CLASSES, SyntheticEmotionVideos
from lightning_papers.fe_adapter.transforms import ClipTransform, sample_indices

__all__ = [
    "DATASETS",
    "DFEW_CLASSES",
    "FERV39K_CLASSES",
    "MAFW_CLASSES",
    "MODES",
    "SYNTHETIC_CLASSES",
    "ClipDecodeError",
    "ClipTransform",
    "DatasetSpec",
    "FEAdapter",
    "FEAdapterClassifier",
    "FEAdapterConfig",
    "SyntheticEmotionVideos",
    "VideoClipDataset",
    "VideoEmotionDataModule",
    "VideoSample",
    "build_backbone",
    "collate_clips",
    "count_parameters",
    "cross_validate",
    "fe_adapters",
    "frozen_fingerprint",
    "inject_fe_adapters",
    "load_adapter",
    "parse_dfew",
    "parse_ferv39k",
    "parse_folder",
    "parse_mafw",
    "read_adapter_metadata",
    "register_dataset",
    "remove_fe_adapters",
    "sample_indices",
    "save_adapter",
    "set_num_frames",
    "split_stratified",
    "summarize_folds",
]
