"""FE-Adapter core: config validation, conv equivalence, identity init, dilation reach, freezing, order."""

import pytest
import torch
import torch.nn.functional as F

from lightning_papers.fe_adapter import (
    FEAdapter,
    FEAdapterClassifier,
    FEAdapterConfig,
    fe_adapters,
    inject_fe_adapters,
    remove_fe_adapters,
)

TINY = dict(patch_size=8, embed_dim=64, depth=2, num_heads=2)


def tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, **TINY)


def tiny_model(mode="adapter", **adapter):
    return FEAdapterClassifier(
        "vit_tiny_patch16_224", img_size=32, num_frames=4, num_classes=3, backbone_kwargs=TINY, mode=mode,
        adapter=FEAdapterConfig(bottleneck=8, **adapter), head_dropout=0.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bottleneck=0), "bottleneck"),
        (dict(bottleneck=1.5), "fraction"),
        (dict(dilations=()), "dilations"),
        (dict(dilations=(1, 1)), "dilations"),
        (dict(kernel_size=2), "kernel_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(activation="tanh"), "activation"),
        (dict(init="ones"), "init"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FEAdapterConfig(**kwargs)


def test_float_bottleneck_is_fraction_of_embed_dim():
    assert FEAdapterConfig(bottleneck=0.5).resolve_width(768) == 384
    assert FEAdapterConfig(bottleneck=24).resolve_width(64) == 24


def test_shifted_sum_equals_dilated_depthwise_conv3d():
    torch.manual_seed(0)
    b, t, length, c = 3, 7, 5, 6
    cfg = FEAdapterConfig(
        bottleneck=c, dilations=(1, 2, 3), kernel_size=3, padding="zeros", bias=True, router_hidden=8
    )
    ad = FEAdapter(16, t, cfg)
    with torch.no_grad():
        ad.weight.normal_()
        ad.bias.normal_()
        ad.router[-1].weight.normal_()  # non-uniform, input-dependent mixing
    h = torch.randn(b, t, length, c)
    alpha = ad.mixing_weights(h)
    assert not torch.allclose(alpha, torch.full_like(alpha, 1 / 3))
    ref = 0
    vol = h.permute(0, 3, 1, 2).unsqueeze(-1)  # (B, C, T, L, 1)
    for k, d in enumerate(ad.dilations):
        w = ad.weight[k].t().reshape(c, 1, 3, 1, 1)
        y = F.conv3d(vol, w, ad.bias[k], padding=(d, 0, 0), dilation=(d, 1, 1), groups=c)
        ref = ref + alpha[:, k].view(b, 1, 1, 1, 1) * y
    ref = ref.squeeze(-1).permute(0, 2, 3, 1)
    torch.testing.assert_close(ad.temporal_mix(h), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "init, position",
    [("identity", "before"), ("zero_up", "before"), ("difference", "before"), ("difference", "after")],
)
def test_fresh_adapters_are_identity(init, position):
    vit = tiny_vit()
    x = torch.randn(2 * 4, 3, 32, 32)
    with torch.no_grad():
        frozen = vit(x)
        inject_fe_adapters(
            vit, num_frames=4, config=FEAdapterConfig(bottleneck=8, init=init, position=position)
        )
        adapted = vit(x)
    assert len(fe_adapters(vit)) == 2
    torch.testing.assert_close(adapted, frozen, rtol=0, atol=0)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_dilation_branch_reaches_exactly_t_plus_minus_d(d):
    torch.manual_seed(0)
    t, t0 = 9, 4
    ad = FEAdapter(16, t, FEAdapterConfig(bottleneck=4, dilations=(d,), dynamic=False), num_prefix_tokens=1)
    with torch.no_grad():
        ad.weight.normal_()
        ad.up.weight.normal_()
    x = torch.randn(t, 1 + 3, 16)
    x2 = x.clone()
    x2[t0, 1:] += 1.0  # perturb the patch tokens of frame t0
    changed = ((ad(x2) - ad(x)) - (x2 - x)).abs().amax(dim=(1, 2)) > 1e-6
    assert changed.nonzero().flatten().tolist() == sorted({t0 - d, t0, t0 + d})
    # prefix (CLS) tokens pass through untouched
    torch.testing.assert_close(ad(x2)[:, :1], x2[:, :1], rtol=0, atol=0)


def test_only_adapters_and_head_train_and_ratio_to_full_finetune():
    model = tiny_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".fe_adapter." in n or n.startswith("head.") for n in trainable)
    full = tiny_model("full_finetune")
    # width 8, D 64, no biases: per adapter down 64*8, taps 3*3*8, linear router 8*3+3, up 8*64
    per_adapter = 64 * 8 + 72 + 27 + 8 * 64
    head = 64 * 3 + 3
    assert model.trainable_parameters() == 2 * per_adapter + head
    assert full.trainable_parameters() == full.total_parameters()
    assert model.trainable_parameters() / full.trainable_parameters() < 0.03
    assert tiny_model("linear_probe").trainable_parameters() == head


def test_step_changes_adapters_not_backbone():
    torch.manual_seed(0)
    model = tiny_model()
    frozen = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(model.parameter_groups(), lr=1e-2)
    model.train()
    loss = F.cross_entropy(model(torch.randn(4, 4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    for n, p in model.backbone.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, adapters[n])]
    assert any(".fe_adapter.up." in n for n in moved) and any(n.startswith("head.") for n in moved)
    assert not model.backbone.training and all(a.training for a in fe_adapters(model.backbone))


def test_frame_order_matters_only_with_temporal_adapters():
    torch.manual_seed(0)
    clips = torch.randn(2, 4, 3, 32, 32)
    for mode in ("adapter", "frame_adapter"):
        model = tiny_model(mode).eval()
        with torch.no_grad():
            for ad in fe_adapters(model.backbone):
                ad.weight.normal_()
                ad.up.weight.normal_()
            model.head[1].weight.normal_()
            delta = (model(clips) - model(clips.flip(1))).abs().max().item()
        if mode == "adapter":
            assert delta > 1e-3
        else:  # per-frame adapters + temporal average: reversing the frames cannot change the logits
            assert delta < 1e-5


def test_inject_twice_raises_and_remove_restores():
    vit = tiny_vit()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = vit(x)
    inject_fe_adapters(vit, num_frames=2, config=FEAdapterConfig(bottleneck=4, blocks=[-1]))
    assert len(fe_adapters(vit)) == 1 and hasattr(vit.blocks[1], "fe_adapter")
    with pytest.raises(ValueError, match="already"):
        inject_fe_adapters(vit, num_frames=2)
    with torch.no_grad():
        fe_adapters(vit)[0].up.weight.normal_()
        assert not torch.allclose(vit(x), ref)
        remove_fe_adapters(vit)
        torch.testing.assert_close(vit(x), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="out of range"):
        inject_fe_adapters(vit, num_frames=2, config=FEAdapterConfig(blocks=[5]))


def test_batch_not_multiple_of_frames_is_clear_error():
    ad = FEAdapter(16, 4, FEAdapterConfig(bottleneck=4))
    with pytest.raises(ValueError, match="multiple of num_frames=4"):
        ad(torch.randn(6, 3, 16))


def test_difference_init_ignores_static_content_and_sees_motion():
    torch.manual_seed(0)
    ad = FEAdapter(16, 6, FEAdapterConfig(bottleneck=4))  # default: difference init, replicate padding
    static = torch.randn(1, 1, 5, 4).expand(1, 6, 5, 4)  # (B, T, L, C'): the same frame six times
    assert ad.temporal_mix(static).abs().max() < 1e-6
    moving = static.clone()
    moving[:, 3:] += 1.0
    assert ad.temporal_mix(moving).abs().max() > 1e-2
    # zero padding (Conv3d's) leaks static content at the clip's ends
    zeros = FEAdapter(16, 6, FEAdapterConfig(bottleneck=4, padding="zeros"))
    assert zeros.temporal_mix(static).abs().max() > 1e-3


@pytest.mark.parametrize("position", ["before", "after"])
def test_position_sets_what_the_adapter_sees_and_is_removable(position):
    vit = tiny_vit()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = vit(x)
        inject_fe_adapters(vit, num_frames=2, config=FEAdapterConfig(bottleneck=4, position=position))
        for ad in fe_adapters(vit):
            ad.up.weight.normal_()
        block_in, adapter_in = [], []
        h1 = vit.blocks[0].register_forward_pre_hook(lambda m, a: block_in.append(a[0]), prepend=True)
        h2 = vit.blocks[0].fe_adapter.register_forward_pre_hook(lambda m, a: adapter_in.append(a[0]))
        changed = vit(x)
        h1.remove(), h2.remove()
        assert not torch.allclose(changed, ref)
        # "before": the adapter rewrites the block input; "after": it rewrites the attention branch's output
        assert torch.equal(adapter_in[0], block_in[0]) == (position == "before")
        remove_fe_adapters(vit)
        torch.testing.assert_close(vit(x), ref, rtol=0, atol=0)
    assert not hasattr(vit.blocks[0].attn, "fe_adapter_ref")
