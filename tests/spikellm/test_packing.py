"""Packed checkpoints: codes at their bit width, exact round trips, atomic saves, clear errors."""

import json

import pytest
import torch
from torch import nn

from lightning_papers.spikellm import SpikeLinear, SpikeLLMConfig, load_quantized, quantize, save_quantized
from lightning_papers.spikellm.io import CONFIG_FILE, MODEL_FILE
from lightning_papers.spikellm.pack import pack_codes, pack_linear, unpack_codes, unpack_linear
from tests.spikellm.archs import build


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8, 12])
def test_codes_round_trip_and_take_bits_per_value(bits):
    codes = torch.randint(0, 2**bits, (7, 96), generator=torch.Generator().manual_seed(bits))
    packed = pack_codes(codes, bits)
    assert torch.equal(unpack_codes(packed, bits, (7, 96)), codes)
    if bits <= 8:  # 32 values in `bits` int32 words: exactly `bits` bits per value
        assert packed.dtype == torch.int32 and packed.numel() * 32 == 7 * 96 * bits


CASES = {
    "w4": dict(w_bits=4, a_bits=4),
    "w3_group": dict(w_bits=3, a_bits=16, extra_bits=0, group_size=16),
    "w2_weight_spikes": dict(w_bits=2, a_bits=16, extra_bits=2, salient_fraction=0.1, spike="weights"),
    "w4_weight_spikes_gptq": dict(w_bits=4, a_bits=16, extra_bits=1, salient_fraction=0.2, spike="weights", pipeline="gptq"),
    "ternary": dict(w_bits=2, a_bits=16, extra_bits=1, salient_fraction=0.1, spike="weights", ternary=True, pipeline="gptq"),
    "w8_omniquant": dict(w_bits=8, a_bits=8, pipeline="omniquant", epochs=1),
    "a4_only": dict(w_bits=16, a_bits=4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_linear_pack_round_trip_is_exact(case):
    torch.manual_seed(0)
    model = build("llama")
    ids = torch.randint(0, 256, (4, 16))
    quantize(model, ids, SpikeLLMConfig(nsamples=4, seqlen=16, **CASES[case]), progress=False)
    layer = model.model.layers[0].mlp.down_proj
    tensors, meta = pack_linear(layer, "down_proj")
    fresh = SpikeLinear.from_linear(nn.Linear(layer.in_features, layer.out_features, bias=False), layer.config)
    unpack_linear(fresh, tensors, meta)
    assert torch.equal(fresh.weight, layer.weight) and torch.equal(fresh.salient_mask, layer.salient_mask)
    cfg = layer.config
    if cfg.quantize_weights:
        bits = 2 if cfg.ternary else cfg.w_bits
        n = layer.weight.numel()
        assert tensors["weight_packed"].numel() * 4 == n * bits // 8  # the base codes take `bits` bits each
        if cfg.spike_weights and cfg.extra_bits:  # T - 1 residual spikes of `w_bits` bits for each salient weight
            k = int(layer.salient_mask.sum()) * layer.out_features
            assert tensors["weight_spike_residual"].numel() * 4 * 8 >= (2**cfg.extra_bits - 1) * k * cfg.w_bits
    else:
        assert "weight_packed" not in tensors and torch.equal(tensors["weight"], layer.weight)


def test_bf16_model_packs_exactly_and_file_is_small(tmp_path):
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                                         num_attention_heads=4)).eval()  # fmt: skip
    ids = torch.randint(0, 256, (4, 16))
    quantize(model, ids, SpikeLLMConfig(w_bits=4, a_bits=16, extra_bits=1, spike="weights", nsamples=4, seqlen=16),
             progress=False)  # fmt: skip
    model.to(torch.bfloat16)  # weights rounded to bf16: codes are recovered by matching, not by division
    save_quantized(model, tmp_path / "q")
    again = load_quantized(tmp_path / "q")
    for name, layer in model.named_modules():
        if isinstance(layer, SpikeLinear):
            assert torch.equal(again.get_submodule(name).weight, layer.weight)
    with torch.no_grad():  # rotary buffers are rebuilt in the saved dtype too: identical bf16 logits
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
    stored = load_file(str(tmp_path / "q" / MODEL_FILE))
    linear_bytes = sum(v.numel() * v.element_size() for k, v in stored.items() if ".layers." in k)
    fp16_bytes = sum(p.numel() * 2 for p in model.model.layers.parameters())
    assert linear_bytes < 0.35 * fp16_bytes  # 4 + 0.1 * 4 bits per weight plus per-row scales


def test_modified_weights_are_refused():
    model = build("llama")
    quantize(model, torch.randint(0, 256, (2, 16)), SpikeLLMConfig(nsamples=2, seqlen=16), progress=False)
    layer = model.model.layers[0].self_attn.q_proj
    layer.weight.data += 1e-3
    with pytest.raises(ValueError, match="not on its quantization grid"):
        pack_linear(layer, "q_proj")


def test_save_is_atomic_and_bad_directories_are_named(tmp_path, monkeypatch):
    model = build("llama")
    quantize(model, torch.randint(0, 256, (2, 16)), SpikeLLMConfig(nsamples=2, seqlen=16), progress=False)
    import lightning_papers.spikellm.io as io

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # interrupted while writing tensors

    monkeypatch.setattr(io.CheckpointWriter, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        save_quantized(model, tmp_path / "q")
    assert list(tmp_path.iterdir()) == []  # nothing left, neither the target nor the temporary directory
    monkeypatch.undo()
    # a directory holding tensors but no (last-written) SpikeLLM config does not load
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / MODEL_FILE).write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="not a SpikeLLM checkpoint"):
        load_quantized(tmp_path / "partial")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_quantized(tmp_path / "missing")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a SpikeLLM checkpoint"):
        save_quantized(model, tmp_path / "user")
    out = save_quantized(model, tmp_path / "q")
    save_quantized(model, out)  # replacing an existing checkpoint is fine
    meta = json.loads((out / CONFIG_FILE).read_text())
    meta["version"] = 99
    (out / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 99"):
        load_quantized(out)


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    model = build("llama")
    quantize(model, torch.randint(0, 256, (2, 16)), SpikeLLMConfig(nsamples=2, seqlen=16), progress=False)
    out = save_quantized(model, tmp_path / "q")
    with pytest.raises(ValueError, match="holds a quantized LlamaForCausalLM, not a Qwen2ForCausalLM"):
        load_quantized(out, model=build("qwen2"))
    from transformers import LlamaConfig, LlamaForCausalLM

    wider = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4))  # fmt: skip
    with pytest.raises(ValueError, match="shape"):
        load_quantized(out, model=wider)


def test_truncated_tensor_file_and_out_of_vocabulary_evaluation_are_named(tmp_path):
    from lightning_papers.spikellm import perplexity

    model = build("llama")
    quantize(model, torch.randint(0, 256, (2, 16)), SpikeLLMConfig(nsamples=2, seqlen=16), progress=False)
    out = save_quantized(model, tmp_path / "q")
    first = sorted(out.glob("*.safetensors"))[0]
    first.write_bytes(first.read_bytes()[:64])  # cut short after a crash or a bad copy
    with pytest.raises(ValueError, match=rf"{first.name} is not a readable safetensors file.*truncated or corrupt"):
        load_quantized(out)
    tokens = torch.randint(0, 256, (64,))
    tokens[37] = 300
    with pytest.raises(ValueError, match=r"evaluation token id 300 at position \(2, 5\) .* vocabulary of size 256"):
        perplexity(model, tokens, seqlen=16)
