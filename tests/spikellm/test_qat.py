"""Quantization-aware training through SpikeLinear (straight-through estimators) in the Lightning callback:
it beats post-training quantization of the same weights, and a run resumed from a checkpoint is bit-exact."""

import copy

import lightning.pytorch as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_papers.spikellm import (
    SpikeLinear,
    SpikeLLMConfig,
    SpikeLLMQuantization,
    load_quantized,
    perplexity,
    plant_massive_activations,
    quantize,
    quantized_linears,
    save_quantized,
)


class TinyLM(L.LightningModule):
    def __init__(self, model, lr=1e-3):
        super().__init__()
        self.model, self.lr = model, lr

    def training_step(self, batch, _idx):
        return self.model(input_ids=batch, labels=batch, use_cache=False).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr)


def _trainer(tmp_path=None, **kw):
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                     enable_checkpointing=tmp_path is not None, default_root_dir=tmp_path, **kw)  # fmt: skip


@pytest.mark.slow
def test_qat_beats_ptq_on_massive_activations(trained_model, text_data):
    windows = text_data["train"][: 64 * 64 * 8].view(-1, 64)
    plant_massive_activations(trained_model, text_data["calib"], factor=100.0, channels=2)
    cfg = SpikeLLMConfig(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, nsamples=16, seqlen=64)
    ptq = copy.deepcopy(trained_model)
    quantize(ptq, text_data["calib"], cfg, progress=False)
    val = text_data["val"][: 32 * 64]
    p_ptq = perplexity(ptq, val, 64)
    lm = TinyLM(copy.deepcopy(trained_model), lr=1e-3)
    cb = SpikeLLMQuantization(cfg, when="fit_start", mode="qat")  # calibrates on the training dataloader
    _trainer(max_steps=40, callbacks=[cb]).fit(lm, DataLoader(windows, batch_size=8, shuffle=False))
    layers = quantized_linears(lm.model)
    assert len(layers) == 14 and all(not layer.qat and layer.weight_quantized for layer in layers.values())
    assert cb.report is not None and cb.report.avg_activation_bits == pytest.approx(4.09, abs=0.01)
    p_qat = perplexity(lm.model, val, 64)
    assert p_qat < 0.9 * p_ptq  # training through the quantizers recovers much of the W4A4 loss


def test_qat_resumes_bit_exactly_from_a_lightning_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_papers.spikellm import tiny_llama

    data = torch.randint(0, 256, (32, 32), generator=torch.Generator().manual_seed(0))
    cfg = SpikeLLMConfig(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, nsamples=8, seqlen=32)

    def run(epochs, ckpt_path=None, save_dir=None):
        lm = TinyLM(tiny_llama(0, hidden_size=32, intermediate_size=64, num_hidden_layers=1))
        callbacks = [SpikeLLMQuantization(cfg, when="fit_start", mode="qat", calibration=data)]
        if save_dir is not None:
            callbacks.append(ModelCheckpoint(dirpath=save_dir, save_top_k=-1, every_n_epochs=1))
        trainer = _trainer(tmp_path if save_dir else None, max_epochs=epochs, callbacks=callbacks)
        trainer.fit(lm, DataLoader(data, batch_size=8, shuffle=False), ckpt_path=ckpt_path)
        return lm

    straight = run(2)
    run(1, save_dir=tmp_path / "ckpt")
    ckpt = next((tmp_path / "ckpt").glob("epoch=0*.ckpt"))
    state = torch.load(ckpt, weights_only=True)
    saved = next(v for k, v in state["callbacks"].items() if "SpikeLLMQuantization" in k)
    assert len(saved["masks"]) == 7 and all(int(m.sum()) > 0 for m in saved["masks"].values())
    resumed = run(2, ckpt_path=str(ckpt))
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    for name, layer in quantized_linears(straight.model).items():
        assert isinstance(layer, SpikeLinear)
        assert torch.equal(layer.salient_mask, resumed.model.get_submodule(name).salient_mask)
    # after fit the trained model packs and reloads like a post-training-quantized one
    out = save_quantized(straight.model, tmp_path / "packed")
    ids = data[:2]
    with torch.no_grad():
        assert torch.equal(straight.model(input_ids=ids).logits, load_quantized(out)(input_ids=ids).logits)


def test_qat_arguments_are_checked():
    with pytest.raises(ValueError, match="when='fit_start'"):
        SpikeLLMQuantization(mode="qat", when="fit_end")
    with pytest.raises(ValueError, match="mode"):
        SpikeLLMQuantization(mode="awq")


def test_qat_calibrates_on_the_trainers_training_dataloader():
    from lightning_papers.spikellm import tiny_llama

    data = torch.randint(0, 256, (32, 32), generator=torch.Generator().manual_seed(1))
    cfg = SpikeLLMConfig(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1, nsamples=8, seqlen=32)
    reference = tiny_llama(0, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    lm = TinyLM(copy.deepcopy(reference))
    quantize(reference, data[:8], cfg, progress=False, qat=True)  # the loader's first 8 windows, unshuffled
    seen = {}

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):  # runs after SpikeLLMQuantization's hook
            seen.update({n: m.salient_mask.clone() for n, m in quantized_linears(pl_module.model).items()})

    cb = SpikeLLMQuantization(cfg, when="fit_start", mode="qat")
    _trainer(max_steps=1, callbacks=[cb, Spy()]).fit(lm, DataLoader(data, batch_size=4, shuffle=False))
    expected = {n: m.salient_mask for n, m in quantized_linears(reference).items()}
    assert seen.keys() == expected.keys() and len(seen) == 7
    for name, mask in expected.items():
        assert torch.equal(seen[name], mask), name


def test_ptq_without_any_calibration_source_names_the_options():
    from lightning_papers.spikellm import tiny_llama

    lm = TinyLM(tiny_llama(0, hidden_size=32, intermediate_size=64, num_hidden_layers=1))
    lm.validation_step = lambda batch, _idx: None
    cb = SpikeLLMQuantization(SpikeLLMConfig(nsamples=2, seqlen=16), when="validate_start")
    with pytest.raises(ValueError, match="no calibration data: pass calibration="):
        _trainer(callbacks=[cb]).validate(lm, DataLoader(torch.randint(0, 256, (4, 16)), batch_size=2))
