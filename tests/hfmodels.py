"""Tiny randomly initialised transformers causal LMs of several architectures, built from configs
(no download), saved with save_pretrained beside a tokenizer.json — what a researcher's model
folder looks like, in miniature (hidden 16–32, 1–2 layers)."""

from __future__ import annotations

import shutil
from pathlib import Path

#: architecture -> (config kwargs, extra vocabulary rows beyond the tokenizer's: padded embeddings)
ARCHS: dict[str, tuple[dict, int]] = {
    "gpt2": (dict(n_embd=16, n_layer=2, n_head=2, n_positions=64), 0),
    "gpt_neox": (dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=64, tie_word_embeddings=False), 24),  # Pythia pads its vocabulary
    "llama": (dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                   intermediate_size=32, max_position_embeddings=4096), 0),
    "qwen2": (dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                   intermediate_size=32, max_position_embeddings=64, tie_word_embeddings=True), 8),
    # word_embed_proj_dim < hidden_size: the head reads a projected (narrower) feature
    "opt": (dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32, max_position_embeddings=64,
                 word_embed_proj_dim=8), 0),
    "gpt_neo": (dict(hidden_size=16, num_layers=2, num_heads=2, max_position_embeddings=64, window_size=8,
                     attention_types=[[["global", "local"], 1]], intermediate_size=32), 0),
    "phi": (dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=64), 0),  # an LM head with a bias
    "gemma2": (dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                    intermediate_size=32, max_position_embeddings=64, final_logit_softcapping=3.0,
                    sliding_window=8), 0),  # logits soft-capped after the head
}


def tokenizer_vocab(tokenizer_json: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_json)).get_vocab_size(with_added_tokens=True)


def build(arch: str, vocab: int, seed: int = 0):
    """A tiny random `arch` model (eval mode, float32) whose embedding has `vocab` rows plus the
    architecture's padding."""
    import torch
    import transformers

    kwargs, pad = ARCHS[arch]
    torch.manual_seed(seed)
    cfg = transformers.AutoConfig.for_model(arch, vocab_size=vocab + pad, bos_token_id=0, eos_token_id=0,
                                            pad_token_id=0, **kwargs)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # random, not-quite-zero biases and norm scales: every parameter matters
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def save(arch: str, folder: Path, tokenizer_json: Path, seed: int = 0):
    """Build and save a tiny `arch` model into `folder` (config.json, model.safetensors,
    tokenizer.json); returns the in-memory model."""
    model = build(arch, tokenizer_vocab(tokenizer_json), seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    return model
