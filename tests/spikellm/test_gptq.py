import pytest
import torch

from lightning_papers.spikellm import (
    SaliencyStats,
    fake_quant_weight,
    gptq_quantize,
    hessian_scores,
    select_salient,
)


def _layer_inputs(model, calib, name):
    store = []
    module = model.get_submodule(name)
    handle = module.register_forward_hook(lambda _m, inp, _o: store.append(inp[0].detach().reshape(-1, inp[0].shape[-1])))
    with torch.no_grad():
        model(input_ids=calib, use_cache=False)
    handle.remove()
    return module.weight.detach().clone(), torch.cat(store)


def _out_err(w, q, x):
    return float(((x @ (w - q).T) ** 2).sum())


def test_gptq_beats_rtn_on_correlated_synthetic_inputs():
    torch.manual_seed(0)
    mix = torch.randn(32, 32)
    x = torch.randn(2048, 32) @ mix  # correlated features: error feedback has something to exploit
    w = torch.randn(16, 32)
    h = 2 * x.T @ x / x.shape[0]
    for bits in (2, 3, 4):
        rtn = fake_quant_weight(w, bits)
        gptq = gptq_quantize(w, h, bits, block_size=8)
        assert _out_err(w, gptq, x) < _out_err(w, rtn, x)


@pytest.mark.parametrize("name", ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"])
def test_per_layer_gptq_le_rtn_and_spiking_le_gptq(trained_model, text_data, name):
    w, x = _layer_inputs(trained_model, text_data["calib"], name)
    stats = SaliencyStats(w, first_order=False, hessian=True)
    stats.add_batch(x)
    h = stats.hessian
    mask = select_salient(hessian_scores(w, h), 0.1)
    assert int(mask.sum()) == round(0.1 * w.shape[1])
    for bits in (2, 3):
        rtn = _out_err(w, fake_quant_weight(w, bits), x)
        gptq = _out_err(w, gptq_quantize(w, h, bits), x)
        spiked = _out_err(w, gptq_quantize(w, h, bits, extra_bits=1, salient=mask), x)
        assert gptq <= rtn
        assert spiked <= gptq
    # ternary (fully additive) with salient GIF columns: GPTQ error feedback still helps
    tern_rtn = _out_err(w, fake_quant_weight(w, 2, 1, mask, ternary=True), x)
    tern_gptq = _out_err(w, gptq_quantize(w, h, 2, 1, mask, ternary=True), x)
    assert tern_gptq <= tern_rtn


def test_hessian_saliency_beats_random_columns(trained_model, text_data):
    w, x = _layer_inputs(trained_model, text_data["calib"], "model.layers.0.mlp.down_proj")
    stats = SaliencyStats(w, first_order=False, hessian=True)
    stats.add_batch(x)
    mask = select_salient(hessian_scores(w, stats.hessian), 0.1)
    salient_err = _out_err(w, gptq_quantize(w, stats.hessian, 2, 2, mask), x)
    gen = torch.Generator().manual_seed(0)
    random_errs = []
    for _ in range(3):
        rnd = torch.zeros_like(mask)
        rnd[torch.randperm(mask.numel(), generator=gen)[: int(mask.sum())]] = True
        random_errs.append(_out_err(w, gptq_quantize(w, stats.hessian, 2, 2, rnd), x))
    assert salient_err < min(random_errs)


def test_gptq_rejects_bad_shapes():
    with pytest.raises(ValueError, match="hessian"):
        gptq_quantize(torch.randn(4, 8), torch.eye(7), 4)
    with pytest.raises(ValueError, match="group_size"):
        gptq_quantize(torch.randn(4, 8), torch.eye(8), 4, group_size=3)


def _naive_obq(w, h, bits, damp=0.01):
    """Independent reference: the original column-by-column OBQ/GPTQ loop with the full inverse Hessian (float64).

    Column j is rounded on its row's grid (min-max over the row of the original weight), its error is spread over
    the remaining columns with row j of the current inverse Hessian, and j is then eliminated from that inverse
    (Frantar & Alistarh 2022, Eq. 3 and Lemma 1)."""
    w = w.double().clone()
    h = h.double() + damp * torch.diag(h.double()).mean() * torch.eye(h.shape[0], dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    qmax = 2**bits - 1
    lo, hi = w.amin(1), w.amax(1)
    scale = (hi - lo) / qmax
    zero = torch.round(-lo / scale)
    q = torch.zeros_like(w)
    for j in range(w.shape[1]):
        q[:, j] = (torch.clamp(torch.round(w[:, j] / scale) + zero, 0, qmax) - zero) * scale
        err = (w[:, j] - q[:, j]) / hinv[j, j]
        w[:, j:] -= err.unsqueeze(1) * hinv[j, j:].unsqueeze(0)
        hinv = hinv - hinv[:, j : j + 1] @ hinv[j : j + 1, :] / hinv[j, j]  # eliminate column j
    return q


def test_gptq_matches_a_naive_column_by_column_reference_for_every_block_size():
    torch.manual_seed(3)
    x = torch.randn(512, 24, dtype=torch.float64) @ torch.randn(24, 24, dtype=torch.float64)  # correlated inputs
    w = torch.randn(6, 24, dtype=torch.float64)
    h = 2 * x.T @ x / x.shape[0]
    for bits in (2, 3, 4):
        ref = _naive_obq(w, h, bits)
        outs = [gptq_quantize(w.float(), h.float(), bits, block_size=b).double() for b in (1, 5, 8, 24, 128)]
        for out in outs:  # lazy batching (block size) changes only the order of the same updates
            assert torch.allclose(out, outs[0], atol=1e-5)
        step = float((w.amax(1) - w.amin(1)).max()) / (2**bits - 1)
        mismatch = (outs[0] - ref).abs() > 1e-3 * step
        assert float(mismatch.float().mean()) == 0.0, f"{int(mismatch.sum())} of {mismatch.numel()} codes differ at {bits} bits"
        # and the error feedback is what makes it better than rounding alone
        rtn = fake_quant_weight(w.float(), bits).double()
        assert _out_err(w, ref, x) < _out_err(w, rtn, x)
