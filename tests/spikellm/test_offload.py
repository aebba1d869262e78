"""Big-model paths: layer offloading and shard streaming give the same result as on-device quantization;
reduced-precision forward passes; bad inputs are named."""

import pytest
import torch
from torch import nn

from lightning_papers.spikellm import SpikeLLMConfig, load_quantized, quantize, quantize_pretrained
from tests.spikellm.archs import build

CFG = dict(w_bits=4, a_bits=4, nsamples=4, seqlen=16)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("pipeline", ["gptq", "omniquant"])
def test_offloaded_quantization_equals_on_device(pipeline):
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    cfg = SpikeLLMConfig(pipeline=pipeline, epochs=2, **CFG)
    on_device, offloaded = build("llama"), build("llama")
    r1 = quantize(on_device, ids, cfg, progress=False)
    r2 = quantize(offloaded, ids, cfg, progress=False, device="cpu", offload=True)
    assert [row["rel_error"] for row in r1.layers] == [row["rel_error"] for row in r2.layers]
    assert torch.equal(_logits(on_device, ids), _logits(offloaded, ids))
    assert all(p.device.type == "cpu" for p in offloaded.parameters())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_streaming_from_shards_equals_in_memory(arch, tmp_path):
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    cfg = SpikeLLMConfig(pipeline="gptq", **CFG)
    model = build(arch)
    model.save_pretrained(tmp_path / "fp")
    quantize(model, ids, cfg, progress=False)
    report = quantize_pretrained(tmp_path / "fp", ids, cfg, tmp_path / "q", progress=False, attn_implementation="eager")
    assert len(report.linears) == (14 if arch == "llama" else 8)
    streamed = load_quantized(tmp_path / "q")
    assert torch.equal(_logits(model, ids), _logits(streamed, ids))


def test_bfloat16_forward_passes_track_float32():
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(2))
    ref, half = build("llama"), build("llama")
    fp = _logits(ref, ids)
    quantize(ref, ids, SpikeLLMConfig(pipeline="omniquant", epochs=1, w_bits=8, a_bits=8, nsamples=4, seqlen=16),
             progress=False)  # fmt: skip
    quantize(half, ids, SpikeLLMConfig(pipeline="omniquant", epochs=1, w_bits=8, a_bits=8, nsamples=4, seqlen=16),
             progress=False, dtype="bfloat16")  # fmt: skip
    assert half.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    q32, q16 = _logits(ref, ids), _logits(half, ids).float()
    assert float((q16 - q32).norm() / fp.norm()) < 0.05


def test_bad_inputs_are_named():
    model = build("llama")
    with pytest.raises(ValueError, match="calibration data is empty"):
        quantize(model, torch.zeros(0, 16, dtype=torch.long), SpikeLLMConfig(**CFG), progress=False)
    bad = torch.randint(0, 256, (4, 16))
    bad[1, 3] = 300
    with pytest.raises(ValueError, match=r"token id 300 at position \(1, 3\).*vocabulary of size 256"):
        quantize(model, bad, SpikeLLMConfig(**CFG), progress=False)
    with pytest.raises(ValueError, match="w_bits must be an integer in \\[1, 16\\].*got 17"):
        SpikeLLMConfig(w_bits=17)
    with pytest.raises(ValueError, match="extra_bits must be an integer in \\[0, 4\\], got 5"):
        SpikeLLMConfig(extra_bits=5)
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match=f"salient_fraction={fraction} with extra_bits=1"):
            SpikeLLMConfig(salient_fraction=fraction)
    SpikeLLMConfig(extra_bits=0, salient_fraction=0.0)  # no spiking: any fraction is fine
    empty = build("llama")
    empty.model.layers = nn.ModuleList()
    with pytest.raises(ValueError, match="has no decoder layers"):
        quantize(empty, torch.randint(0, 256, (2, 16)), SpikeLLMConfig(**CFG), progress=False)
    with pytest.raises(ValueError, match="dtype must be one of"):
        quantize(build("llama"), torch.randint(0, 256, (2, 16)), SpikeLLMConfig(**CFG), progress=False, dtype="int4")
