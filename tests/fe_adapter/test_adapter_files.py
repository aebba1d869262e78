"""Adapter-only files: only adapter + head tensors, identical logits in a fresh process, wrong backbones refused."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open

from lightning_papers.fe_adapter import (
    FEAdapterConfig,
    fe_adapters,
    load_adapter,
    read_adapter_metadata,
    save_adapter,
)

TINY = dict(patch_size=8, embed_dim=64, depth=2, num_heads=2)
BUILD = """
import torch
from lightning_papers.fe_adapter import FEAdapterClassifier, FEAdapterConfig
def build(seed=3, **kw):
    args = dict(backbone="vit_tiny_patch16_224", img_size=32, num_frames=2, num_classes=3,
                backbone_kwargs=dict(patch_size=8, embed_dim=64, depth=2, num_heads=2),
                adapter=FEAdapterConfig(bottleneck=4), head_dropout=0.0, backbone_seed=seed)
    args.update(kw)
    return FEAdapterClassifier(**args).eval()
"""


def build(seed=3, **kw):
    namespace: dict = {}
    exec(BUILD, namespace)
    return namespace["build"](seed, **kw)


def test_file_made_in_another_process_loads_with_identical_logits(tmp_path):
    # a separate Python process trains nothing but perturbs the adapters and head, saves them and its logits
    script = BUILD + textwrap.dedent(f"""
        from lightning_papers.fe_adapter import fe_adapters, save_adapter
        model = build()
        torch.manual_seed(1)
        with torch.no_grad():
            for ad in fe_adapters(model.backbone):
                ad.up.weight.normal_(); ad.weight.normal_()
            model.head[1].weight.normal_()
        save_adapter(model, r"{tmp_path / "fe.safetensors"}")
        torch.manual_seed(2)
        clips = torch.randn(3, 2, 3, 32, 32)
        with torch.no_grad():
            torch.save({{"clips": clips, "logits": model(clips)}}, r"{tmp_path / "ref.pt"}")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = tmp_path / "fe.safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert keys and all(".fe_adapter." in k or k.startswith("head.") for k in keys)
    assert not any("attn.qkv" in k for k in keys)
    assert not list(tmp_path.glob(".*.tmp"))  # written via a temporary name, nothing left behind
    meta = read_adapter_metadata(path)
    assert meta["backbone"] == "vit_tiny_patch16_224" and meta["config"]["bottleneck"] == 4

    ref = torch.load(tmp_path / "ref.pt", weights_only=True)
    fresh = build()
    with torch.no_grad():
        before = fresh(ref["clips"])
        load_adapter(fresh, path)
        after = fresh(ref["clips"])
    assert not torch.allclose(before, ref["logits"])
    torch.testing.assert_close(after, ref["logits"], rtol=0, atol=0)


def test_other_backbone_weights_or_config_are_refused(tmp_path):
    model = build()
    with torch.no_grad():
        for ad in fe_adapters(model.backbone):
            ad.up.weight.normal_()
    path = save_adapter(model, tmp_path / "fe.safetensors")
    with pytest.raises(ValueError, match="frozen weights differ"):
        load_adapter(build(seed=4), path)  # same architecture, other frozen weights
    with pytest.raises(ValueError, match="adapter config"):
        load_adapter(build(adapter=FEAdapterConfig(bottleneck=4, dilations=(1, 2))), path)
    with pytest.raises(ValueError, match="num_classes"):
        load_adapter(build(num_classes=4), path)
    other = build(seed=4)
    load_adapter(other, path, check_backbone=False)  # explicit opt-out loads the tensors
    torch.testing.assert_close(other.head[1].weight, model.head[1].weight, rtol=0, atol=0)


def test_bare_vit_adapters_round_trip(tmp_path):
    import timm

    def vit():
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, **TINY)

    from lightning_papers.fe_adapter import inject_fe_adapters

    src = inject_fe_adapters(vit(), num_frames=2, config=FEAdapterConfig(bottleneck=3, dilations=(1, 2)))
    with torch.no_grad():
        for ad in fe_adapters(src):
            ad.up.weight.normal_()
    path = save_adapter(src, tmp_path / "bare.safetensors")
    dst = load_adapter(vit(), path)  # injects from the stored config
    assert len(fe_adapters(dst)) == 2 and fe_adapters(dst)[0].dilations == (1, 2)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="classifier"):
        load_adapter(build(), path)
    assert json.loads(json.dumps(read_adapter_metadata(path)["config"]))["dilations"] == [1, 2]


def test_truncated_or_foreign_files_name_the_file(tmp_path):
    model = build()
    path = save_adapter(model, tmp_path / "fe.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut_header.safetensors"
    cut.write_bytes(data[:20])  # the header itself is cut short
    with pytest.raises(ValueError, match=r"cut_header\.safetensors is not a readable safetensors file"):
        load_adapter(build(), cut)
    short = tmp_path / "cut_data.safetensors"
    short.write_bytes(data[:-16])  # header intact, tensor bytes missing
    with pytest.raises(ValueError, match=r"cut_data\.safetensors"):
        load_adapter(build(), short)
    other = tmp_path / "notes.safetensors"
    other.write_text("not a tensor file")
    with pytest.raises(ValueError, match=r"notes\.safetensors .*expected an FE-Adapter file"):
        read_adapter_metadata(other)
