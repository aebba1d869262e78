"""K/V-cache activation spiking behind ``kv_bits`` / ``spike_kv``."""

import pytest
import torch

from lightning_papers.spikellm import SpikeLLMConfig, mixed_fake_quant, quantize
from tests.spikellm.archs import build


def test_kv_outputs_are_quantized_per_head_and_spiking_lowers_the_error():
    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
    errors = {}
    for name, kw in {"kv4": dict(kv_bits=4), "kv4_spike": dict(kv_bits=4, spike_kv=True, extra_bits=2)}.items():
        model = build("llama")
        with torch.no_grad():  # plant two large K channels (one per KV head) so the salient ones matter
            k = model.model.layers[0].self_attn.k_proj
            k.weight[[1, 9]] *= 12
        cfg = SpikeLLMConfig(w_bits=16, a_bits=16, salient_fraction=0.125, nsamples=8, seqlen=32, **kw)
        report = quantize(model, ids, cfg, progress=False)
        errors[name] = report.layers[0]["rel_error"]
        k = model.model.layers[0].self_attn.k_proj
        assert {row["name"].rsplit(".", 1)[-1]: row["output_bits"] for row in report.linears if row["output_bits"] < 16}.keys() == {"k_proj", "v_proj"}
        x = torch.randn(3, 32)
        y = torch.nn.functional.linear(x, k.weight)
        ref = mixed_fake_quant(y.view(3, -1, 8), k.out_salient_mask.view(-1, 8) if cfg.spike_kv else None, 4,
                               cfg.extra_bits if cfg.spike_kv else 0).view(3, -1)  # fmt: skip
        assert torch.allclose(k(x), ref, atol=1e-6)  # per token and per head (head_dim 8)
        if cfg.spike_kv:
            assert bool(k.out_salient_mask[1]) and bool(k.out_salient_mask[9])  # energy saliency finds them
    assert errors["kv4_spike"] < errors["kv4"]


def test_kv_flags_are_validated():
    with pytest.raises(ValueError, match="kv_bits"):
        SpikeLLMConfig(kv_bits=1)
    with pytest.raises(ValueError, match="spike_kv=True needs"):
        SpikeLLMConfig(spike_kv=True)
