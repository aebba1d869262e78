"""SpikeLLM / Optimal Brain Spiking (arXiv 2407.04752): saliency-based GIF spiking quantization of LLMs.

Plain PyTorch core (``GIFQuantizer``, ``SpikeLinear``, ``quantize``, ``perplexity``) plus a Lightning
callback (``SpikeLLMQuantization``). ``transformers`` is imported only where a model is built or loaded.

Example::

    >>> from lightning_papers.spikellm import GIFQuantizer
    >>> GIFQuantizer(bits=4, extra_bits=1).levels
    31
"""

from lightning_papers.spikellm.callback import SpikeLLMQuantization, token_windows
from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.eval import perplexity
from lightning_papers.spikellm.gif import GIFQuantizer, gif_levels, mixed_fake_quant
from lightning_papers.spikellm.gptq import gptq_quantize
from lightning_papers.spikellm.io import load_quantized, save_quantized
from lightning_papers.spikellm.linear import SpikeLinear
from lightning_papers.spikellm.quantization import (
    QuantizationReport,
    find_decoder_layers,
    quantize,
    quantized_linears,
)
from lightning_papers.spikellm.saliency import SaliencyStats, hessian_scores, random_mask, select_salient
from lightning_papers.spikellm.stream import quantize_pretrained
from lightning_papers.spikellm.tiny import (
    TINY_LLAMA,
    plant_massive_activations,
    plant_outliers,
    tiny_llama,
    train_tiny_llama,
)
from lightning_papers.spikellm.weight_quant import fake_quant_weight

__all__ = [
    "GIFQuantizer",
    "QuantizationReport",
    "SaliencyStats",
    "SpikeLLMConfig",
    "SpikeLLMQuantization",
    "SpikeLinear",
    "TINY_LLAMA",
    "fake_quant_weight",
    "find_decoder_layers",
    "gif_levels",
    "gptq_quantize",
    "hessian_scores",
    "load_quantized",
    "mixed_fake_quant",
    "perplexity",
    "plant_massive_activations",
    "plant_outliers",
    "quantize",
    "quantize_pretrained",
    "quantized_linears",
    "random_mask",
    "save_quantized",
    "select_salient",
    "tiny_llama",
    "token_windows",
    "train_tiny_llama",
]
