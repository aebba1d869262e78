"""Every listed architecture quantizes (all decoder projections, GPT-2's Conv1D included), stays close to full
precision at 8 bits, and round-trips through a packed checkpoint bit-identically."""

import pytest
import torch

from lightning_papers.spikellm import (
    SpikeLinear,
    SpikeLLMConfig,
    load_quantized,
    quantize,
    quantized_linears,
    save_quantized,
)
from tests.spikellm.archs import arch_configs, build

ARCHS = list(arch_configs())
EXPECTED = {"llama": 14, "qwen2": 14, "mistral": 14, "gemma": 14, "phi3": 8, "opt": 12, "gpt_neox": 8, "gpt2": 8}


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_quantizes_and_round_trips(arch, tmp_path):
    torch.manual_seed(1)
    ids = torch.randint(0, 256, (4, 24))
    model = build(arch)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    near = build(arch)
    quantize(near, ids, SpikeLLMConfig(w_bits=8, a_bits=8, extra_bits=0, nsamples=4, seqlen=24), progress=False)
    with torch.no_grad():
        err8 = float((near(input_ids=ids).logits - ref).norm() / ref.norm())
    report = quantize(model, ids, SpikeLLMConfig(w_bits=4, a_bits=4, nsamples=4, seqlen=24, pipeline="gptq"), progress=False)
    layers = quantized_linears(model)
    assert len(layers) == len(report.linears) == EXPECTED[arch]
    from lightning_papers.spikellm.quantization import find_decoder_layers

    leftover = [n for n, m in find_decoder_layers(model).named_modules() if type(m).__name__ in ("Linear", "Conv1D")]
    assert not leftover  # every projection inside the decoder layers was replaced
    with torch.no_grad():
        out = model(input_ids=ids).logits
    err4 = float((out - ref).norm() / ref.norm())
    assert err8 < 0.02 and 3 * err8 < err4 < 1.0  # 8 bits is nearly lossless, 4 bits visibly not
    save_quantized(model, tmp_path / arch)
    again = load_quantized(tmp_path / arch)
    assert all(isinstance(m, SpikeLinear) for m in quantized_linears(again).values())
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, out)
