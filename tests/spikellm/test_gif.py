import pytest
import torch

from lightning_papers.spikellm import GIFQuantizer, SpikeLinear, SpikeLLMConfig, gif_levels, mixed_fake_quant


def _reference_uniform(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Independent per-token asymmetric quantizer with `levels` levels (for comparison)."""
    lo, hi = x.min(-1, keepdim=True).values, x.max(-1, keepdim=True).values
    step = (hi - lo).clamp(min=1e-8) / (levels - 1)
    zero = torch.round(-lo / step)
    q = torch.clamp(torch.round(x / step) + zero, 0, levels - 1)
    return (q - zero) * step


@pytest.mark.parametrize("bits,extra", [(1, 0), (2, 1), (3, 2), (4, 0), (4, 1), (4, 2), (2, 3)])
def test_every_level_round_trips_and_spikes_stay_in_range(bits, extra):
    quant = GIFQuantizer(bits, extra)
    codes = torch.arange(quant.levels, dtype=torch.float64)
    spikes = quant.spikes_from_codes(codes)
    assert spikes.shape == (2**extra, quant.levels)
    assert torch.equal(spikes.sum(0), codes)  # exact, including the top level
    assert spikes.min() >= 0 and spikes.max() <= 2**bits - 1
    assert quant.levels == gif_levels(bits, extra) == 2**extra * (2**bits - 1) + 1


def test_top_level_that_the_public_code_loses_is_exact():
    # reference code: 5-bit codes with 2 steps capped at 15 -> code 31 decodes as 30; ours caps the grid instead
    quant = GIFQuantizer(4, 1)
    top = torch.tensor([float(quant.qmax)])
    assert float(quant.spikes_from_codes(top).sum()) == quant.qmax == 30
    with pytest.raises(ValueError, match=r"\[0, 30\]"):
        quant.spikes_from_codes(torch.tensor([31.0]))


def test_encode_decode_equals_fake_quant_and_grid_points_are_fixed():
    torch.manual_seed(0)
    quant = GIFQuantizer(3, 2)
    x = torch.randn(64, 33, dtype=torch.float64) * 3
    spikes, scale, zero = quant.encode(x)
    assert spikes.shape == (4, 64, 33)
    fq = quant.fake_quant(x)
    assert torch.allclose(quant.decode(spikes, scale, zero), fq, atol=1e-12)
    # quantized values lie on the grid: quantizing them again changes nothing
    assert torch.allclose(quant.fake_quant(fq), fq, atol=1e-9)
    assert (fq - x).abs().max() <= scale.max() / 2 + 1e-12


@pytest.mark.parametrize("extra", [1, 2])
def test_spike_matmul_equals_fake_quant_matmul_fp64(extra):
    torch.manual_seed(1)
    cfg = SpikeLLMConfig(w_bits=16, a_bits=4, extra_bits=extra)
    layer = SpikeLinear.from_linear(torch.nn.Linear(48, 20), cfg).double()
    layer.salient_mask[torch.randperm(48)[:7]] = True
    x = torch.randn(5, 9, 48, dtype=torch.float64)
    x[..., 3] *= 30  # an outlier channel
    fake = layer(x)
    explicit = layer.spike_forward(x)
    assert explicit.shape == (5, 9, 20)
    assert torch.allclose(fake, explicit, atol=1e-10, rtol=1e-10)
    ref = torch.nn.functional.linear(mixed_fake_quant(x, layer.salient_mask, 4, extra), layer.weight, layer.bias)
    assert torch.allclose(fake, ref, atol=1e-12)


def test_error_non_increasing_in_extra_bits_and_fraction():
    torch.manual_seed(2)
    x = torch.randn(4096, 64, dtype=torch.float64)
    x[:, :4] *= 8
    mask = torch.zeros(64, dtype=torch.bool)
    mask[:16] = True
    errs = [float(((mixed_fake_quant(x, mask, 4, a) - x) ** 2).mean()) for a in (0, 1, 2)]
    assert errs[0] > errs[1] > errs[2]
    by_frac = []
    for frac in (0.0, 0.25, 0.5, 1.0):
        m = torch.zeros(64, dtype=torch.bool)
        m[: int(frac * 64)] = True
        by_frac.append(float(((mixed_fake_quant(x, m, 4, 1) - x) ** 2).mean()))
    assert all(a >= b for a, b in zip(by_frac, by_frac[1:]))
    assert by_frac[0] > by_frac[-1]


def test_fraction_one_equals_plain_wider_quantizer_and_zero_equals_base():
    torch.manual_seed(3)
    x = torch.randn(128, 40, dtype=torch.float64)
    ones = torch.ones(40, dtype=torch.bool)
    assert torch.allclose(mixed_fake_quant(x, ones, 4, 1), _reference_uniform(x, 31), atol=1e-12)
    assert torch.allclose(mixed_fake_quant(x, ones, 3, 2), _reference_uniform(x, 29), atol=1e-12)
    assert torch.allclose(mixed_fake_quant(x, ~ones, 4, 1), _reference_uniform(x, 16), atol=1e-12)
    assert torch.allclose(GIFQuantizer(4, 0).fake_quant(x), _reference_uniform(x, 16), atol=1e-12)


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="bits"):
        GIFQuantizer(0)
    with pytest.raises(ValueError, match="extra_bits"):
        GIFQuantizer(4, -1)
    with pytest.raises(ValueError, match="salient_fraction"):
        SpikeLLMConfig(salient_fraction=1.5)
    with pytest.raises(ValueError, match="saliency"):
        SpikeLLMConfig(saliency="magic")
    with pytest.raises(ValueError, match="pipeline"):
        SpikeLLMConfig(pipeline="awq")
    with pytest.raises(ValueError, match="w_bits"):
        SpikeLLMConfig(w_bits=0)
