"""lcfast.model: the GPT-Neo-style causal LM (gptneo.py) and checkpoint loading (load_hf.py)."""

from lcfast.model.gptneo import GPTNeo, GPTNeoConfig, default_attention_layers
from lcfast.model.load_hf import load_hf_gptneo, load_model

__all__ = ["GPTNeo", "GPTNeoConfig", "default_attention_layers", "load_hf_gptneo", "load_model"]
