"""Quantize your own causal LM with SpikeLLM (Optimal Brain Spiking) and check what it costs.

Run: python examples/spikellm_quantize_my_model.py   (CPU, about a minute with the embedded defaults)

Point MODEL_DIR at a local Hugging Face Llama-style model (and TOKENIZER_DIR at its tokenizer) and
TEXT_FILES at your own text (calibration + evaluation). Left as None, the script trains the embedded
tiny Llama on CPython's bundled documentation so that it runs anywhere, offline.

1. Load (or train) the model and tokenize your text.
2. Quantize a copy with plain W4A4 and one with SpikeLLM W4A4 (10% salient channels, +1 GIF bit).
3. Compare perplexity on held-out windows, save the SpikeLLM model as a packed low-bit checkpoint, reload it,
   generate. (For a model larger than your GPU, pass device="cuda", offload=True to quantize(), or use
   quantize_pretrained(MODEL_DIR, ...) to stream it from its safetensors shards.)
"""

import copy
import tempfile

import torch

from lightning_papers.data import TextDataModule, decode_bytes
from lightning_papers.spikellm import (
    SpikeLLMConfig,
    load_quantized,
    perplexity,
    quantize,
    save_quantized,
    train_tiny_llama,
)
from lightning_papers.spikellm.commands import load_causal_lm
from lightning_papers.spikellm.measure import directory_bytes, fp16_file_bytes

MODEL_DIR = None  # e.g. "/models/Llama-2-7b-hf" (a local directory: nothing is downloaded)
TOKENIZER_DIR = None  # e.g. the same directory; None = bytes (vocab 256, the tiny model's)
TEXT_FILES = None  # e.g. ["my_corpus/train.txt"]; None = CPython's bundled docs
SEQLEN = 64  # calibration and evaluation window; use 2048 for a 7B model as the paper does

torch.manual_seed(0)
data = TextDataModule(text_files=TEXT_FILES, tokenizer=TOKENIZER_DIR, seq_len=SEQLEN, seed=0)
data.setup()
if MODEL_DIR is None:
    model = train_tiny_llama(steps=600, seq_len=SEQLEN, tokens=data.tokens("train"), progress=True)
else:
    model = load_causal_lm(MODEL_DIR)
model.eval()

calibration = data.calibration_batches(nsamples=64, seqlen=SEQLEN, seed=2)  # (64, SEQLEN) token ids
held_out = data.tokens("val")[: 128 * SEQLEN]  # non-overlapping windows, as the paper's protocol
print(f"full precision: perplexity {perplexity(model, held_out, seqlen=SEQLEN):.3f}")

# "omniquant" (LET + learnable clipping) is the paper's W4A4 pipeline; "rtn" is the quick one.
common = dict(w_bits=4, a_bits=4, pipeline="rtn", nsamples=64, seqlen=SEQLEN)
settings = {
    "plain W4A4": SpikeLLMConfig(extra_bits=0, salient_fraction=0.0, **common),
    "SpikeLLM W4A4": SpikeLLMConfig(extra_bits=1, salient_fraction=0.1, saliency="first_order", **common),
}
quantized = {}
for name, config in settings.items():
    quantized[name] = copy.deepcopy(model)
    report = quantize(quantized[name], calibration, config, progress=False)  # in place, block by block
    ppl = perplexity(quantized[name], held_out, seqlen=SEQLEN)
    print(
        f"{name:14s}: perplexity {ppl:.3f}  avg bits W{report.avg_weight_bits:.2f} "
        f"A{report.avg_activation_bits:.2f}  ({report.seconds:.1f} s)"
    )

# Save: a packed checkpoint (4-bit codes two per byte, scales, salient channel indices) + config.
spiking = quantized["SpikeLLM W4A4"]
with tempfile.TemporaryDirectory() as tmp:
    out = save_quantized(spiking, f"{tmp}/spikellm-w4a4")
    print(f"packed checkpoint: {directory_bytes(out) / 1024:.0f} KiB (fp16 file: {fp16_file_bytes(model) / 1024:.0f} KiB)")
    reloaded = load_quantized(out)
    probe = calibration[:2]
    same = torch.equal(spiking(input_ids=probe).logits, reloaded(input_ids=probe).logits)
    print(f"reloaded from {tmp}: identical logits = {same}")

prompt = data.encode("The ")[None]
ids = reloaded.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40, do_sample=False)
if TOKENIZER_DIR is None:
    text = decode_bytes(ids[0])
else:
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(TOKENIZER_DIR, local_files_only=True).decode(ids[0])
print("greedy continuation:", repr(text))
