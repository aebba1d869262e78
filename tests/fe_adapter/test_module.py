"""FEAdapterClassifier: UAR/WAR against scikit-learn, optimizer groups, trainable-only checkpoint round trip."""

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, recall_score
from torch.utils.data import DataLoader, TensorDataset

from lightning_papers.fe_adapter import FEAdapterClassifier, FEAdapterConfig, fe_adapters

TINY = dict(patch_size=8, embed_dim=64, depth=2, num_heads=2)


def tiny_model(**kw):
    args = dict(
        backbone="vit_tiny_patch16_224", img_size=32, num_frames=2, num_classes=3, backbone_kwargs=TINY,
        adapter=FEAdapterConfig(bottleneck=8), head_dropout=0.0,
    )  # fmt: skip
    args.update(kw)
    return FEAdapterClassifier(**args)


def test_uar_war_match_sklearn_on_imbalanced_labels():
    model = tiny_model()
    y = torch.tensor([0] * 8 + [1] * 3 + [2] * 1)
    pred = torch.tensor(
        [0] * 7 + [1] + [1, 0, 0] + [0]
    )  # majority class right, minority classes mostly wrong
    logits = torch.nn.functional.one_hot(pred, 3).float()
    model.val_metrics.update(logits, y)
    values = model.val_metrics.compute()
    uar = recall_score(y.numpy(), pred.numpy(), average="macro")
    war = accuracy_score(y.numpy(), pred.numpy())
    assert float(values["uar"]) == pytest.approx(uar)
    assert float(values["war"]) == pytest.approx(war)
    assert abs(uar - war) > 0.1  # on imbalanced data the two differ: a WAR computed as macro would be wrong
    np.testing.assert_allclose(values["recall"].numpy(), recall_score(y.numpy(), pred.numpy(), average=None))


def test_no_weight_decay_on_biases_and_norms():
    model = tiny_model(mode="full_finetune")
    groups = model.parameter_groups()
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[1]["weight_decay"] == 0.0
    for name, p in model.named_parameters():
        assert (id(p) in no_decay) == (p.ndim < 2 or name.endswith(".bias") or "norm" in name), name


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="mode"):
        tiny_model(mode="lora")
    with pytest.raises(ValueError, match="unknown timm model"):
        tiny_model(backbone="no_such_vit")
    with pytest.raises(ValueError, match="class_names"):
        tiny_model(class_names=["a"])


def _loader(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 3, 32, 32, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4)


def test_checkpoint_stores_only_trainable_weights_and_round_trips(tmp_path):
    L.seed_everything(0)
    model = tiny_model(backbone_seed=7)
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, _loader(), _loader(seed=1))
    path = tmp_path / "fe.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=False)
    keys = set(raw["state_dict"])
    assert keys and all(".fe_adapter." in k or k.startswith("head.") for k in keys)
    assert raw["fe_adapter"]["backbone"] == "vit_tiny_patch16_224"
    assert not any(k.endswith("attn.qkv.weight") for k in keys)

    clips = torch.randn(3, 2, 3, 32, 32)
    model.eval()
    restored = FEAdapterClassifier.load_from_checkpoint(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(clips), model(clips), rtol=0, atol=0)
    assert any(
        not torch.equal(a.up.weight, torch.zeros_like(a.up.weight)) for a in fe_adapters(restored.backbone)
    )

    # a different random backbone cannot silently take the trained adapters
    raw["hyper_parameters"]["backbone_seed"] = 8
    torch.save(raw, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="differs"):
        FEAdapterClassifier.load_from_checkpoint(tmp_path / "other.ckpt")
