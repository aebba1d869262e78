"""Memory of quantization: flat in the number of decoder layers, beyond the stored weights."""

from __future__ import annotations

import pytest
import torch

from lightning_papers.spikellm import SpikeLLMConfig, quantize, save_quantized
from lightning_papers.spikellm.io import MODEL_FILE

from .archs import build


@pytest.mark.parametrize("pipeline", ["rtn", "gptq", "omniquant"])
def test_quantized_weights_reuse_the_original_storage(pipeline):
    # a second tensor per weight would keep the original alive wherever it is referenced (a memory-mapped
    # checkpoint keeps every page it backs), doubling the weights' memory
    model = build("llama")
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    cfg = SpikeLLMConfig(nsamples=2, seqlen=16, pipeline=pipeline, epochs=1)
    quantize(model, torch.randint(0, 256, (2, 16)), cfg, progress=False)
    after = {n: p.data_ptr() for n, p in model.named_parameters()}
    assert after == before


def test_save_writes_one_file_per_decoder_layer(tmp_path):
    model = build("llama")
    quantize(model, torch.randint(0, 256, (2, 16)), SpikeLLMConfig(nsamples=2, seqlen=16), progress=False)
    out = save_quantized(model, tmp_path / "q")
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) == len(model.model.layers) + 1 and MODEL_FILE in files


@pytest.mark.slow
def test_peak_memory_grows_less_than_one_layer_from_2_to_8_layers(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from lightning_papers.spikellm.measure import peak_memory_of_quantization

    peaks, weights = {}, {}
    for n in (2, 8):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=1024,
                                             num_hidden_layers=n, num_attention_heads=4))  # fmt: skip
        weights[n] = sum(p.numel() * p.element_size() for p in model.parameters())
        layer = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
        model.save_pretrained(tmp_path / f"fp{n}")
        del model
        for mode in ("stream", "memory"):
            peaks[mode, n] = peak_memory_of_quantization(mode, tmp_path / f"fp{n}", tmp_path / f"{mode}{n}")
    stored = weights[8] - weights[2]  # the whole-model run holds every weight once, and nothing more
    assert peaks["stream", 8]["peak_rss"] - peaks["stream", 2]["peak_rss"] < layer
    assert peaks["memory", 8]["peak_rss"] - peaks["memory", 2]["peak_rss"] - stored < layer
    if peaks["stream", 2]["peak_heap"] is not None:  # glibc: live allocations as well
        assert peaks["stream", 8]["peak_heap"] - peaks["stream", 2]["peak_heap"] < layer
