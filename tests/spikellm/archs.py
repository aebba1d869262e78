"""Small random configs of every supported architecture (no downloads)."""

from __future__ import annotations


def arch_configs() -> dict:
    import transformers as T

    common = dict(vocab_size=256, num_hidden_layers=2, num_attention_heads=4)
    cfgs = {
        "llama": T.LlamaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **common),
        "qwen2": T.Qwen2Config(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **common),
        "mistral": T.MistralConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **common),
        "gemma": T.GemmaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=1, head_dim=8, **common),
        "phi3": T.Phi3Config(hidden_size=32, intermediate_size=64, num_key_value_heads=4, pad_token_id=0, **common),
        "opt": T.OPTConfig(hidden_size=32, ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64, **common),
        "gpt_neox": T.GPTNeoXConfig(hidden_size=32, intermediate_size=64, **common),
        "gpt2": T.GPT2Config(vocab_size=256, n_embd=32, n_layer=2, n_head=4, n_positions=64),
    }
    for cfg in cfgs.values():
        cfg._attn_implementation = "eager"
        for key in ("bos_token_id", "eos_token_id"):
            if isinstance(getattr(cfg, key, None), int) and getattr(cfg, key) >= 256:
                setattr(cfg, key, 0)
    return cfgs


def build(name: str, seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(arch_configs()[name]).eval()
