import pytest
import torch
from torch import nn

from lightning_papers.spikellm import (
    SpikeLinear,
    SpikeLLMConfig,
    load_quantized,
    perplexity,
    plant_outliers,
    quantize,
    quantized_linears,
    save_quantized,
)
from lightning_papers.spikellm.quantization import capture_layer_inputs, find_decoder_layers

SEQ = 64


def _cfg(**kw):
    return SpikeLLMConfig(nsamples=16, seqlen=SEQ, **kw)


def test_captured_layer_inputs_replay_the_model(trained_model, text_data):
    # inputs of layer 0 incl. attention mask / rotary embeddings, replayed layer by layer, reproduce the model
    ids = text_data["calib"][:4]
    layers = find_decoder_layers(trained_model)
    hidden, kwargs = capture_layer_inputs(trained_model, layers, [ids])
    h = hidden[0]
    with torch.no_grad():
        for layer in layers:
            out = layer(h, **kwargs[0])
            h = out[0] if isinstance(out, tuple) else out
        ref = trained_model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    assert torch.allclose(trained_model.model.norm(h), ref[-1], atol=1e-5)


def test_w8a8_close_to_full_precision_and_lm_head_untouched(trained_model, text_data):
    fp = perplexity(trained_model, text_data["val"], SEQ)
    head = trained_model.lm_head.weight.detach().clone()
    emb = trained_model.model.embed_tokens.weight.detach().clone()
    report = quantize(trained_model, text_data["calib"], _cfg(w_bits=8, a_bits=8, extra_bits=0), progress=False)
    q = perplexity(trained_model, text_data["val"], SEQ)
    assert fp < 12  # the model did learn the corpus (bytes: uniform would be 256)
    assert abs(q - fp) / fp < 0.02
    assert type(trained_model.lm_head) is nn.Linear and torch.equal(trained_model.lm_head.weight, head)
    assert torch.equal(trained_model.model.embed_tokens.weight, emb)
    assert len(report.linears) == 14 and all("lm_head" not in row["name"] for row in report.linears)
    assert report.avg_weight_bits == 8 and report.avg_activation_bits == 8
    # every decoder linear is now a SpikeLinear whose weights lie on an 8-bit per-row grid
    w = trained_model.model.layers[0].mlp.up_proj.weight
    for row in w[:4]:
        assert torch.unique(row).numel() <= 256


def _fresh(trained_model, state):
    model = type(trained_model)(trained_model.config)
    model.load_state_dict(state)
    return model.eval()


def test_w4a4_spiking_beats_plain_w4a4_on_outlier_model(trained_model, text_data):
    # function-preserving outlier channels (as trained LLMs have; the 2-layer toy does not develop them)
    fp = perplexity(trained_model, text_data["val"], SEQ)
    plant_outliers(trained_model)
    assert perplexity(trained_model, text_data["val"], SEQ) == pytest.approx(fp, rel=1e-4)
    state = {k: v.clone() for k, v in trained_model.state_dict().items()}

    def run(**kw):
        model = _fresh(trained_model, state)
        report = quantize(model, text_data["calib"], _cfg(**kw), progress=False)
        return perplexity(model, text_data["val"], SEQ), report

    plain, r0 = run(w_bits=4, a_bits=4, extra_bits=0)
    spike, r1 = run(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1)
    assert spike < plain
    assert sum(r["rel_error"] for r in r1.layers) < sum(r["rel_error"] for r in r0.layers)
    assert r0.avg_activation_bits == 4.0
    assert 4.0 < r1.avg_activation_bits <= 4.1  # 10% of channels on a 31-level grid: log2(31) = 4.95 bits
    assert r1.avg_activation_steps == pytest.approx(1.1, abs=0.01)


def test_first_order_saliency_beats_random_on_planted_outliers(trained_model, text_data):
    plant_outliers(trained_model)
    state = {k: v.clone() for k, v in trained_model.state_dict().items()}

    def total_error(saliency, seed=0):
        model = _fresh(trained_model, state)
        cfg = _cfg(w_bits=16, a_bits=4, extra_bits=1, salient_fraction=0.1, saliency=saliency, seed=seed)
        report = quantize(model, text_data["calib"], cfg, progress=False)
        return sum(row["rel_error"] for row in report.layers), model

    first, model = total_error("first_order")
    randoms = [total_error("random", seed)[0] for seed in range(3)]
    assert first < min(randoms)
    # masks are buffers with round(0.1 * in_features) channels
    assert int(model.model.layers[0].self_attn.q_proj.salient_mask.sum()) == 6
    assert int(model.model.layers[0].mlp.down_proj.salient_mask.sum()) == 17


def test_save_reload_identical_and_generate_runs(trained_model, text_data, tmp_path):
    quantize(trained_model, text_data["calib"], _cfg(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1), progress=False)
    ids = text_data["calib"][:2, :32]
    with torch.no_grad():
        ref = trained_model(input_ids=ids, use_cache=False).logits
    save_quantized(trained_model, tmp_path / "q")
    assert (tmp_path / "q" / "config.json").is_file()
    loaded = load_quantized(tmp_path / "q")
    assert len(quantized_linears(loaded)) == 14
    for name, layer in quantized_linears(trained_model).items():
        assert torch.equal(loaded.get_submodule(name).salient_mask, layer.salient_mask)
    with torch.no_grad():
        again = loaded(input_ids=ids, use_cache=False).logits
    assert torch.equal(ref, again)
    # generate() runs through the spiking layers (with a KV cache) and is greedy-consistent
    prompt = ids[:1, :16]
    out = loaded.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 22) and torch.equal(out[:, :16], prompt)
    with torch.no_grad():
        first = loaded(input_ids=prompt, use_cache=False).logits[0, -1].argmax()
    assert int(out[0, 16]) == int(first)


def test_bad_inputs_raise_clear_errors(trained_model, text_data):
    with pytest.raises(ValueError, match="unsupported architecture"):
        quantize(nn.Sequential(nn.Linear(4, 4)), text_data["calib"], _cfg(), progress=False)
    with pytest.raises(ValueError, match="no supported linear"):
        quantize(trained_model, text_data["calib"], _cfg(targets=["no_such_proj"]), progress=False)
    with pytest.raises(ValueError, match="salient_fraction"):
        _cfg(salient_fraction=-0.1)
    with pytest.raises(ValueError, match="seqlen=128"):
        quantize(trained_model, text_data["calib"], SpikeLLMConfig(nsamples=4, seqlen=128), progress=False)
    with pytest.raises(TypeError, match="calibration"):
        quantize(trained_model, "some text", _cfg(), progress=False)
    assert not quantized_linears(trained_model)  # nothing was changed by the failed calls


def test_gptq_and_omniquant_pipelines_reduce_error(trained_model, text_data):
    state = {k: v.clone() for k, v in trained_model.state_dict().items()}

    def run(**kw):
        model = type(trained_model)(trained_model.config)
        model.load_state_dict(state)
        report = quantize(model, text_data["calib"], _cfg(**kw), progress=False)
        return sum(row["rel_error"] for row in report.layers), model, report

    rtn_w2 = run(w_bits=2, a_bits=16, extra_bits=0, pipeline="rtn")[0]
    gptq_w2 = run(w_bits=2, a_bits=16, extra_bits=0, pipeline="gptq")[0]
    gptq_w2_spike, _, rep = run(w_bits=2, a_bits=16, extra_bits=1, salient_fraction=0.1, saliency="hessian", pipeline="gptq")
    assert gptq_w2 < rtn_w2 and gptq_w2_spike < gptq_w2
    assert 2.0 < rep.avg_weight_bits < 2.3
    rtn_w4a4 = run(w_bits=4, a_bits=4, extra_bits=0)[0]
    omni, model, _ = run(w_bits=4, a_bits=4, extra_bits=0, pipeline="omniquant", epochs=3)
    assert omni < rtn_w4a4
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, SpikeLinear) and not layer._calib  # LET/LWC folded away
