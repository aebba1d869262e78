"""SpikeLLM benchmark: perplexity of a tiny Llama trained on CPython's docs under each quantization setting."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from lightning_papers.bench.report import BenchReport, mean_std

# (label, SpikeLLMConfig kwargs), quantized from the same trained weights.
_BASE, _SPIKE = "OmniQuant-style W4A4", "SpikeLLM W4A4 (OmniQuant, first-order, 10% salient, +1 bit)"
_RTN, _RTN_SPIKE, _RTN_ALL = (
    "RTN W4A4", "SpikeLLM W4A4 (RTN, first-order, 10% salient, +1 bit)", "ablation: every channel +1 bit (RTN, salient fraction 1)",
)  # fmt: skip
_SETTINGS: list[tuple[str, dict]] = [
    ("RTN W4A4", dict(w_bits=4, a_bits=4, extra_bits=0, salient_fraction=0.0, pipeline="rtn")),
    ("OmniQuant-style W4A4", dict(w_bits=4, a_bits=4, extra_bits=0, salient_fraction=0.0, pipeline="omniquant")),
    ("SpikeLLM W4A4 (OmniQuant, first-order, 10% salient, +1 bit)",
     dict(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, saliency="first_order", pipeline="omniquant")),
    ("control: random saliency W4A4 (OmniQuant, 10%, +1 bit)",
     dict(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, saliency="random", pipeline="omniquant")),
    ("SpikeLLM W4A4 (RTN, first-order, 10% salient, +1 bit)",
     dict(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, saliency="first_order", pipeline="rtn")),
    ("ablation: every channel +1 bit (RTN, salient fraction 1)",
     dict(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=1.0, pipeline="rtn")),
    ("GPTQ W3A16", dict(w_bits=3, a_bits=16, extra_bits=0, salient_fraction=0.0, pipeline="gptq")),
    ("GPTQ W2A16", dict(w_bits=2, a_bits=16, extra_bits=0, salient_fraction=0.0, pipeline="gptq")),
    ("GPTQ + spiking W2A16 (hessian, 10%, +1 bit)",
     dict(w_bits=2, a_bits=16, extra_bits=1, salient_fraction=0.1, saliency="hessian", pipeline="gptq",
          spike="weights")),
    ("ternary (GPTQ, hessian, 10% salient)",
     dict(w_bits=2, a_bits=16, extra_bits=1, salient_fraction=0.1, saliency="hessian", pipeline="gptq",
          spike="weights", ternary=True)),
]


# The outlier stress test: the same weights with a few activation-outlier channels planted without
# changing the function (``plant_outliers``), as trained LLMs have and a 2-layer toy model does not.
_OUTLIER_SETTINGS: list[tuple[str, dict]] = [
    ("outliers: RTN W4A4", dict(w_bits=4, a_bits=4, extra_bits=0, salient_fraction=0.0, pipeline="rtn")),
    ("outliers: SpikeLLM W4A4 (RTN, first-order, 10% salient, +1 bit)",
     dict(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, saliency="first_order", pipeline="rtn")),
    ("outliers: control: random saliency W4A4 (RTN, 10%, +1 bit)",
     dict(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, saliency="random", pipeline="rtn")),
    ("outliers: OmniQuant-style W4A4", dict(w_bits=4, a_bits=4, extra_bits=0, salient_fraction=0.0, pipeline="omniquant")),
    ("outliers: SpikeLLM W4A4 (OmniQuant, first-order, 10% salient, +1 bit)",
     dict(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, saliency="first_order", pipeline="omniquant")),
]

# Paper, LLaMA-2-7B WikiText-2 (fp 5.47): OmniQuant W4A4 15.25 -> SpikeLLM 11.36.
_PAPER_FP, _PAPER_BASE, _PAPER_SPIKE = 5.47, 15.25, 11.36


def _reduction(base: float, spike: float) -> float:
    return 100.0 * (base - spike) / base


def _gap_closed(fp: float, base: float, spike: float) -> float:
    """Share of the quantization gap ``base - fp`` that spiking recovers, in percent."""
    return 100.0 * (base - spike) / max(base - fp, 1e-12)


def run(quick: bool = False, out_dir: Path | None = None) -> BenchReport:
    """Train the tiny model once, then quantize a copy per setting and measure validation perplexity."""
    from lightning_papers.data import TextDataModule
    from lightning_papers.spikellm import (
        SpikeLLMConfig,
        perplexity,
        plant_outliers,
        quantize,
        train_tiny_llama,
    )

    torch.manual_seed(0)
    seqlen = 64
    dm = TextDataModule(seq_len=seqlen, seed=0)
    dm.setup()
    start = time.perf_counter()
    model = train_tiny_llama(steps=150 if quick else 600, seq_len=seqlen, tokens=dm.tokens("train"), seed=0)
    train_s = time.perf_counter() - start
    model.eval()
    val = dm.tokens("val")[: (16 if quick else 256) * seqlen]
    nsamples = 16 if quick else 64
    # several calibration draws (and random-saliency seeds): the W4A4 differences are small on this model
    seeds = [2] if quick else [2, 3, 4]
    calibs = {seed: dm.calibration_batches(nsamples=nsamples, seqlen=seqlen, seed=seed) for seed in seeds}
    fp = perplexity(model, val, seqlen=seqlen)
    outlier_model = plant_outliers(copy.deepcopy(model))
    fp_outliers = perplexity(outlier_model, val, seqlen=seqlen)
    rows: list[list] = [["full precision", 16.0, 16.0, f"{fp:.3f}", 1.0, 0.0]]
    ppl: dict[str, list[float]] = {}
    act_bits: dict[str, float] = {}

    def avg(label: str) -> float:
        return sum(ppl[label]) / len(ppl[label])

    settings = _SETTINGS if not quick else [s for s in _SETTINGS if s[0] in (_RTN, _BASE, _SPIKE)]
    outlier_settings = _OUTLIER_SETTINGS if not quick else _OUTLIER_SETTINGS[:2]
    for source, group in ((model, settings), (outlier_model, outlier_settings)):
        if source is outlier_model:
            rows.append(["outliers: full precision (planted, function unchanged)", 16.0, 16.0, f"{fp_outliers:.3f}",
                         fp_outliers / fp, 0.0])  # fmt: skip
        for label, kwargs in group:
            extra = dict(epochs=2) if quick and kwargs["pipeline"] == "omniquant" else {}
            ppl[label], seconds = [], []
            for seed in seeds:
                config = SpikeLLMConfig(nsamples=nsamples, seqlen=seqlen, seed=seed, **kwargs, **extra)
                qmodel = copy.deepcopy(source)
                report = quantize(qmodel, calibs[seed], config, progress=False)
                ppl[label].append(perplexity(qmodel, val, seqlen=seqlen))
                seconds.append(report.seconds)
            act_bits[label] = report.avg_activation_bits
            rows.append([label, report.avg_weight_bits, report.avg_activation_bits, mean_std(ppl[label]),
                         avg(label) / fp, sum(seconds) / len(seeds)])  # fmt: skip

    base, spike = avg(_BASE), avg(_SPIKE)
    reduction = _reduction(base, spike)
    per_seed = [_reduction(b, q) for b, q in zip(ppl[_BASE], ppl[_SPIKE])]
    bound = _reduction(base, fp)  # spiking cannot beat full precision
    met = reduction >= 25.51 and act_bits[_SPIKE] <= 4.1
    paper_red = _reduction(_PAPER_BASE, _PAPER_SPIKE)
    paper_gap = _gap_closed(_PAPER_FP, _PAPER_BASE, _PAPER_SPIKE)
    o_base, o_spike = avg(outlier_settings[0][0]), avg(outlier_settings[1][0])
    outlier_line = (
        f"With planted outliers and the RTN pipeline, SpikeLLM lowers W4A4 perplexity by "
        f"{_reduction(o_base, o_spike):.1f} % ({o_base:.3f} → {o_spike:.3f}; "
        f"{_gap_closed(fp_outliers, o_base, o_spike):.0f} % of the gap closed)"
    )
    if not quick:
        o_rand = avg(outlier_settings[2][0])
        o_omni, o_omni_spike = avg(outlier_settings[3][0]), avg(outlier_settings[4][0])
        outlier_line += (
            f"; the random-saliency control gets {_reduction(o_base, o_rand):.1f} %. OmniQuant's LET removes"
            f" these outliers by itself ({o_omni:.3f}), and spiking then changes perplexity by "
            f"{-_reduction(o_omni, o_omni_spike):+.1f} %"
        )
    spread_line = ""
    if not quick:
        rtn, rtn_spike, rtn_all = avg(_RTN), avg(_RTN_SPIKE), avg(_RTN_ALL)
        spread_line = (
            f" With RTN, giving *every* channel the extra bit (4.95 bits) lowers W4A4 perplexity by only "
            f"{_reduction(rtn, rtn_all):.1f} %; the 10 % first-order-salient channels get "
            f"{100 * (rtn - rtn_spike) / max(rtn - rtn_all, 1e-12):.0f} % of that gain: this model's activation error "
            "is spread over its channels, not concentrated in a few outliers, which is what OBSpiking exploits."
        )
    notes = f"""Tiny Llama (hidden 64, 2 layers, 4 heads, byte vocabulary) trained for {150 if quick else 600} steps
on the training split of CPython's bundled documentation ({train_s:.0f} s), then quantized per setting from the same
weights; perplexity on {len(val) // seqlen} non-overlapping {seqlen}-token windows of the validation split;
{nsamples} calibration windows; perplexity is the mean ± std over {len(seeds)} calibration draws (seeds
{", ".join(map(str, seeds))}; also the random-saliency seed). `ppl / fp` is the mean's ratio to full precision in this
run; seconds are mean quantization wall time. Rows starting `outliers:` quantize the same weights after
`plant_outliers` (RMSNorm gains of 3 attention and 2 MLP input channels ×20, the matching weight columns ÷20: the
function is unchanged, but the linears now see the few large input channels that trained LLMs have and this toy
model does not develop).

**Goal (issue 7): SpikeLLM's relative W4A4 perplexity reduction over its OmniQuant-style baseline ≥ 25.51 % (the
paper's LLaMA-2-7B number) at ≤ 4.1 average activation bits: {"met" if met else "not met"}** — reduction
{reduction:.1f} % of the mean (per calibration draw: {", ".join(f"{r:+.1f} %" for r in per_seed)}) at
{act_bits[_SPIKE]:.2f} average activation bits.

Why: here the OmniQuant-style W4A4 model is only {100 * (base / fp - 1):.1f} % worse than full precision, so no
method can reduce its perplexity by more than {bound:.1f} %; the goal is out of reach on this model by construction.
The comparable number is the share of the quantization gap that spiking closes: {_gap_closed(fp, base, spike):.0f} %
here vs {paper_gap:.0f} % in the paper (LLaMA-2-7B fp {_PAPER_FP} → OmniQuant W4A4 {_PAPER_BASE} → SpikeLLM
{_PAPER_SPIKE}, −{paper_red:.2f} %).{spread_line} {outlier_line}.

The paper's LLaMA-2-7B numbers, for reference (arXiv 2407.04752; the model here is ~100,000x smaller, so only
relative effects are comparable):

| setting (LLaMA-2-7B) | baseline | SpikeLLM |
|---|---|---|
| W4A4 WikiText-2 perplexity, OmniQuant pipeline (fp {_PAPER_FP}) | {_PAPER_BASE} | {_PAPER_SPIKE} (−{paper_red:.2f} %) |
| W4A4 average zero-shot accuracy, 6 tasks | 47.58 | 50.65 |
| W2A8 WikiText-2 perplexity | 287.64 | 22.13 |
| ternary average zero-shot accuracy (GPTQ pipeline; baseline PB-LLM) | 46.93 | 52.10 |"""
    return BenchReport(
        name="spikellm",
        title="SpikeLLM vs low-bit baselines on a tiny Llama (validation perplexity)",
        columns=["setting", "avg weight bits", "avg activation bits", "perplexity", "ppl / fp", "quant. seconds"],
        rows=rows,
        notes=notes,
        headline=f"W4A4 ppl {spike:.3f} SpikeLLM vs {base:.3f} OmniQuant-style ({reduction:+.1f} % reduction, "
        f"at most {bound:.1f} % possible; paper 25.51 %)",
        goal_met=met,
    )
