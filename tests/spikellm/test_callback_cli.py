from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from lightning_papers.spikellm import SpikeLinear, SpikeLLMConfig, load_quantized, quantized_linears
from lightning_papers.spikellm.callback import SpikeLLMQuantization


def test_callback_quantizes_after_fit_and_logs_perplexity():
    from lightning_papers.data import TextDataModule
    from lightning_papers.models import CausalLM

    torch.manual_seed(0)
    dm = TextDataModule(seq_len=32, batch_size=8, max_chars=40_000, seed=0)
    lm = CausalLM(lr=3e-3, warmup_steps=5)
    cb = SpikeLLMQuantization(SpikeLLMConfig(w_bits=8, a_bits=8, extra_bits=1, nsamples=8, seqlen=32), max_eval_windows=16)
    trainer = L.Trainer(max_steps=30, limit_val_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(lm, dm)
    assert isinstance(lm.model.model.layers[0].mlp.down_proj, SpikeLinear)
    assert type(lm.model.lm_head) is torch.nn.Linear
    before, after = cb.metrics["spikellm/ppl_before"], cb.metrics["spikellm/ppl_after"]
    assert before < 100  # 30 steps already beat the uniform byte model (256)
    assert abs(after - before) / before < 0.05  # W8A8 barely changes it
    assert cb.report is not None and len(cb.report.linears) == 14


def test_callback_rejects_bad_arguments():
    with pytest.raises(ValueError, match="when"):
        SpikeLLMQuantization(when="later")
    with pytest.raises(TypeError, match="SpikeLLMConfig"):
        SpikeLLMQuantization(config={"w_bits": 4})


def test_quantize_subcommand_on_a_local_model(trained_model, tmp_path):
    from lightning_papers.cli import main

    trained_model.save_pretrained(tmp_path / "fp")
    out = tmp_path / "q"
    cfg = tmp_path / "q.yaml"
    cfg.write_text(
        "quantization:\n  w_bits: 4\n  a_bits: 4\n  extra_bits: 1\n  salient_fraction: 0.1\n  nsamples: 8\n  seqlen: 64\n"
        f"model_path: {tmp_path / 'fp'}\neval_seqlen: 64\nmax_eval_windows: 16\noutput_dir: {out}\n"
    )
    main(["quantize", "--config", str(cfg)])
    report = (out / "report.md").read_text()
    assert "perplexity full precision" in report and "W4A4" in report
    model = load_quantized(out)
    assert len(quantized_linears(model)) == 14
    assert model.model.layers[1].self_attn.o_proj.config.extra_bits == 1


@pytest.mark.parametrize("name", ["tiny_w4a4_spike", "tiny_w2a16_gptq_spike", "tiny_ternary", "llama2_7b_w4a4"])
def test_quantize_configs_parse_into_a_validated_config(name):
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_papers.spikellm.commands import quantize

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(quantize, fail_untyped=False)
    cfg = parser.instantiate_classes(parser.parse_args(["--config", str(Path(__file__).resolve().parents[2] / "cli_configs" / "spikellm" / f"{name}.yaml")]))
    q = cfg.quantization
    assert isinstance(q, SpikeLLMConfig)
    assert q.extra_bits == 1 and q.salient_fraction == 0.1
    assert q.spike_weights == (q.a_bits == 16)
