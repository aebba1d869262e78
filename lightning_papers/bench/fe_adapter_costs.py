"""FE-Adapter benchmark costs: trainable-parameter counts on CLIP ViT-B/16 and interleaved training-step times.

The parameter counts use a randomly initialised ViT-B/16 (``pretrained=False``, no download) at the paper's
settings; step times compare FE-Adapter with full fine-tuning on the benchmark's tiny model and on ViT-B/16.
"""

from __future__ import annotations

import copy

from lightning_papers.bench.measure import interleaved_times, training_step

__all__ = ["tiny_step_times", "vitb_parameter_counts", "vitb_step_times"]


def vitb_parameter_counts(fe_default: dict, time_steps: bool) -> tuple[list[list], dict]:
    """Trainable-parameter counts on CLIP ViT-B/16 (random init), computed from the modules themselves."""
    from torch import nn

    from lightning_papers.fe_adapter import (
        FEAdapterConfig,
        count_parameters,
        inject_fe_adapters,
        remove_fe_adapters,
    )
    from lightning_papers.fe_adapter.module import build_backbone

    vit = build_backbone("vit_base_patch16_clip_224", pretrained=False, img_size=224)
    dim, depth, classes = vit.embed_dim, len(vit.blocks), 7
    head = dim * classes + classes
    full = count_parameters(vit, trainable_only=False)

    def adapters(cfg: FEAdapterConfig) -> int:
        inject_fe_adapters(vit, num_frames=8, config=cfg)
        n = count_parameters(vit, trainable_only=True)
        remove_fe_adapters(vit)
        return n

    fe_cfg = FEAdapterConfig(**{**fe_default, "bottleneck": 24})
    fe = adapters(fe_cfg)
    fe_frame = adapters(fe_cfg.frame_only())
    st = adapters(
        FEAdapterConfig(bottleneck=384, dilations=(1,), dynamic=False, activation="none", bias=True)
    )
    # AIM-style: per block a temporal, a spatial and a joint (MLP-parallel) bottleneck adapter D -> D/4 -> D
    aim = count_parameters(
        nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, dim))
            for _ in range(3 * depth)
        )
    )
    rows = []
    for name, n in [
        ("full fine-tuning", full), ("AIM-style (3 adapters/block, D/4)", aim),
        ("ST-Adapter-style (width 384, k=3 temporal)", st), ("FE-Adapter (ours, width 24, d={1,2,3}, dynamic)", fe),
        ("frame adapter (width 24, no temporal)", fe_frame), ("linear probe", 0),
    ]:  # fmt: skip
        rows.append([name, n + head, (n + head) / (full + head), (st + head) / (n + head)])
    info = dict(fe=fe + head, st=st + head, full=full + head, fe_adapters=fe, st_adapters=st)
    if time_steps:
        info["vitb_times"] = vitb_step_times(vit, fe_cfg)
    return rows, info


def tiny_step_times(s: dict, rounds: int = 7, per_round: int = 15) -> dict[str, list[float]]:
    """Interleaved step times of FE-Adapter and full fine-tuning on the benchmark's tiny model (one thread,
    like each training worker), on one training batch of the benchmark's shape."""
    import torch

    from lightning_papers.fe_adapter import FEAdapterClassifier, FEAdapterConfig

    m = s["model"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        clips = torch.randn(s["batch_size"], m["num_frames"], 3, m["img_size"], m["img_size"])
        labels = torch.randint(0, m["num_classes"], (s["batch_size"],))
        steps = {}
        for mode in ("adapter", "full_finetune"):
            model = FEAdapterClassifier(
                m["backbone"], pretrained=False, backbone_kwargs=m["backbone_kwargs"], img_size=m["img_size"],
                num_frames=m["num_frames"], num_classes=m["num_classes"], mode=mode,
                adapter=FEAdapterConfig(**m["adapter"]),
            ).train()  # fmt: skip
            params = [p for p in model.parameters() if p.requires_grad]
            steps[mode] = training_step(model, params, clips, labels)
        return interleaved_times(steps, rounds, per_round, warmup=3)
    finally:
        torch.set_num_threads(threads)


def vitb_step_times(vit, cfg, rounds: int = 3) -> dict[str, list[float]]:
    """Interleaved seconds per training step of ViT-B/16 on one 8-frame 224-px clip: FE-Adapter vs full FT."""
    import torch
    from torch import nn

    from lightning_papers.fe_adapter import inject_fe_adapters

    torch.manual_seed(0)
    clips, labels = torch.randn(8, 3, 224, 224), torch.tensor([0])

    class ClipModel(nn.Module):  # frames -> per-frame features -> mean over time -> head
        def __init__(self, backbone):
            super().__init__()
            self.backbone, self.head = backbone, nn.Linear(backbone.embed_dim, 7)

        def forward(self, frames):
            return self.head(self.backbone(frames).mean(0, keepdim=True))

    full = ClipModel(copy.deepcopy(vit).requires_grad_(True)).train()
    fe = ClipModel(inject_fe_adapters(copy.deepcopy(vit), num_frames=8, config=cfg)).train()
    steps = {
        name: training_step(model, [p for p in model.parameters() if p.requires_grad], clips, labels)
        for name, model in (("full", full), ("fe", fe))
    }
    return interleaved_times(steps, rounds, per_round=1)
