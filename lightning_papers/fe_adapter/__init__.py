"""FE-Adapter (arXiv 2408.02421): parameter-efficient image-to-video transfer for video emotion recognition.

``inject_fe_adapters`` turns a frozen timm ViT into a video model with small dynamic dilated temporal
adapters; ``FEAdapterClassifier`` wraps it as a LightningModule (modes adapter / frame_adapter /
linear_probe / full_finetune); ``VideoEmotionDataModule`` reads DFEW, FERV39k, MAFW, a folder of videos,
or the embedded ``SyntheticEmotionVideos``. See ``README.md`` in this folder.
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
from lightning_papers.fe_adapter.data import (
    DFEW_CLASSES,
    FERV39K_CLASSES,
    MAFW_CLASSES,
    SYNTHETIC_CLASSES,
    ClipTransform,
    SyntheticEmotionVideos,
    VideoClipDataset,
    VideoEmotionDataModule,
    VideoSample,
    parse_dfew,
    parse_ferv39k,
    parse_folder,
    parse_mafw,
    sample_indices,
)
from lightning_papers.fe_adapter.module import MODES, FEAdapterClassifier, build_backbone

__all__ = [
    "DFEW_CLASSES",
    "FERV39K_CLASSES",
    "MAFW_CLASSES",
    "MODES",
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
    "FEAdapter",
    "FEAdapterClassifier",
    "FEAdapterConfig",
    "build_backbone",
    "count_parameters",
    "fe_adapters",
    "inject_fe_adapters",
    "remove_fe_adapters",
    "set_num_frames",
]
