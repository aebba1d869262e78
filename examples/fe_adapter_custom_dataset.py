"""Adapt a timm image ViT to your own folder of emotion videos with FE-Adapter.

Layout: ``ROOT/<class name>/<clip>.mp4`` (or ``ROOT/<class>/<clip>/<frame>.jpg``); optional
``ROOT/{train,val,test}/<class>/...`` sub-splits. Without ``--root`` the script writes a small folder of
synthetic clips first, so it runs as is in about a minute on a CPU core:

    python examples/fe_adapter_custom_dataset.py                      # demo on synthetic clips
    python examples/fe_adapter_custom_dataset.py --root ~/my_videos \\
        --backbone vit_base_patch16_clip_224.openai --pretrained --img-size 224 --frames 16
"""

import argparse
import tempfile

import lightning.pytorch as L
import torch

from lightning_papers.fe_adapter import (
    FEAdapterClassifier,
    FEAdapterConfig,
    SyntheticEmotionVideos,
    VideoEmotionDataModule,
    load_adapter,
    save_adapter,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", help="folder of videos, ROOT/<class>/<clip>.mp4 (default: a synthetic demo)"
    )
    parser.add_argument("--backbone", default="vit_tiny_patch16_224", help="any timm ViT name")
    parser.add_argument(
        "--pretrained", action="store_true", help="load timm's pretrained weights (downloads once)"
    )
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    L.seed_everything(0)

    root = args.root
    tiny = dict(patch_size=8, embed_dim=64, depth=2, num_heads=2, global_pool="avg")
    if root is None:  # demo data: 4 classes that differ only in the timing of a smile and a frown
        root = str(SyntheticEmotionVideos(tempfile.mkdtemp(), num_clips=384, clip_len=8, size=32).prepare())
    data = VideoEmotionDataModule(
        "folder", root=root, num_frames=args.frames, img_size=args.img_size, batch_size=16
    )
    data.setup()
    print(f"{len(data.train_dataset)} training clips, classes: {data.class_names}")

    model = FEAdapterClassifier(
        backbone=args.backbone,
        pretrained=args.pretrained,
        backbone_kwargs=tiny if args.backbone == "vit_tiny_patch16_224" and not args.pretrained else {},
        img_size=args.img_size,
        num_frames=args.frames,
        num_classes=data.num_classes,
        class_names=data.class_names,
        adapter=FEAdapterConfig(bottleneck=2),  # width 24 is the ViT-B/16 default
        head_dropout=0.0,
        warmup_fraction=0.05,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01),
    )
    print(f"trainable parameters: {model.trainable_parameters():,} of {model.total_parameters():,}")
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="auto", devices=1, logger=False, enable_model_summary=False
    )
    trainer.fit(model, data)  # validation: 15% of the clips; the test split is only scored below
    trainer.test(model, data)
    # share only what was trained: adapters + head (a few KB), with the backbone's name and fingerprint
    save_adapter(model, "fe_adapter_custom.safetensors")
    fresh = FEAdapterClassifier(
        **{k: v for k, v in model.hparams.items() if k != "adapter"},
        adapter=FEAdapterConfig(**model.hparams.adapter),
    )
    load_adapter(fresh, "fe_adapter_custom.safetensors")  # refuses a backbone with other frozen weights
    clips = next(iter(data.test_dataloader()))[0]
    with torch.no_grad():
        same = torch.equal(fresh.eval()(clips), model.eval()(clips))
    print(f"saved fe_adapter_custom.safetensors; reloaded into a fresh model: identical logits = {same}")


if __name__ == "__main__":
    main()
