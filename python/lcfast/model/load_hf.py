"""Load GPT-Neo checkpoints saved by `transformers` (no transformers needed), and `load_model(path)`,
which opens any model lcfast knows:

- a transformers GPT-Neo folder: config.json (model_type "gpt_neo") + model.safetensors, a sharded
  model.safetensors.index.json, or pytorch_model.bin (read with torch.load(weights_only=True));
- a lcfast run folder (config.json written by `lcfast train`): its last checkpoint;
- a lcfast checkpoint folder (checkpoints/epoch_K) or a lcfast model.safetensors file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from lcfast.errors import DataError
from lcfast.io import load_tensors, read_json
from lcfast.model.checkpoint import load_model_file, load_run, load_state_strict
from lcfast.model.gptneo import GPTNeo, GPTNeoConfig

_HF_ACTIVATIONS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "relu", "silu", "swish"}


def hf_config_to_ours(hf: dict, source: str = "config.json") -> GPTNeoConfig:
    """Translate a transformers GPTNeoConfig dict."""
    if hf.get("model_type") != "gpt_neo":
        raise DataError(f"{source}: model_type {hf.get('model_type')!r} is not supported (only 'gpt_neo')")
    try:
        layers = int(hf["num_layers"])
        if hf.get("attention_layers"):
            attn = list(hf["attention_layers"])
        else:
            attn = []
            for kinds, n in hf.get("attention_types", [[["global", "local"], layers // 2]]):
                attn.extend(list(kinds) * int(n))
        act = hf.get("activation_function", "gelu_new")
        if act not in _HF_ACTIVATIONS:
            raise DataError(f"{source}: activation_function {act!r} is not supported")
        return GPTNeoConfig(
            vocab_size=int(hf["vocab_size"]),
            layers=layers,
            width=int(hf["hidden_size"]),
            heads=int(hf["num_heads"]),
            context=int(hf["max_position_embeddings"]),
            window_size=int(hf.get("window_size", 256)),
            attention_layers=attn,
            mlp_dim=int(hf.get("intermediate_size") or 0),
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            activation=act,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            init_std=float(hf.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise DataError(f"{source}: missing GPT-Neo config key {e}") from None
    except (TypeError, ValueError) as e:
        raise DataError(f"{source}: invalid GPT-Neo config ({e})") from None


_SKIP = re.compile(r"(^|\.)attn\.attention\.(bias|masked_bias)$")  # causal-mask buffers of old checkpoints


def hf_key_to_ours(key: str) -> str | None:
    """transformers state-dict key -> ours (None for buffers we rebuild)."""
    if _SKIP.search(key):
        return None
    if key.startswith("transformer."):
        key = key[len("transformer."):]
    return key.replace(".attn.attention.", ".attn.")


def _read_hf_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    st, st_index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    pt, pt_index = folder / "pytorch_model.bin", folder / "pytorch_model.bin.index.json"
    if st.is_file():
        return load_tensors(st, "model weights")[0], str(st)
    if st_index.is_file() or pt_index.is_file():
        index = st_index if st_index.is_file() else pt_index
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise DataError(f"{index}: corrupt weight index ({e})") from None
        out: dict[str, torch.Tensor] = {}
        for name in files:
            out.update(load_tensors(folder / name, "model weights")[0] if index is st_index
                       else _torch_load(folder / name))
        return out, str(index)
    if pt.is_file():
        return _torch_load(pt), str(pt)
    raise DataError(f"{folder}: no model.safetensors or pytorch_model.bin beside config.json")


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"{path}: weight file not found")
    import warnings

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        msg = " ".join(str(e).split())
        if "WeightsUnpickler error:" in msg:  # torch's long advice to disable the safety net: keep the reason
            msg = ("refused by the weights-only unpickler: "
                   + msg.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation")[0].strip())
        raise DataError(f"{path}: cannot read weights with weights_only=True ({type(e).__name__}: {msg})") from None
    if not isinstance(sd, dict):
        raise DataError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd


def load_hf_gptneo(path: str | os.PathLike, device: str | torch.device = "cpu") -> GPTNeo:
    """A transformers GPT-Neo folder -> our GPTNeo (float32, eval mode)."""
    folder = Path(path)
    cfg = hf_config_to_ours(read_json(folder / "config.json", "model config"), str(folder / "config.json"))
    raw, source = _read_hf_weights(folder)
    sd: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        ours = hf_key_to_ours(k)
        if ours is None:
            continue
        if ours == "lm_head.weight" and cfg.tie_embeddings:
            continue  # tied to wte (older transformers versions saved the copy)
        sd[ours] = v
    with torch.device("meta"):
        model = GPTNeo(cfg)
    load_state_strict(model, sd, source)
    return model.to(device).eval()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> GPTNeo:
    """Open a model from a transformers GPT-Neo folder, a lcfast run or checkpoint folder, or a lcfast
    model.safetensors file (dispatch on what config.json / the safetensors header says)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: model path not found")
    if p.is_file():
        return load_model_file(p, device)
    cfg_path = p / "config.json"
    if cfg_path.is_file():
        cfg = read_json(cfg_path, "model config")
        if cfg.get("model_type") is not None:
            return load_hf_gptneo(p, device)
        if str(cfg.get("format", "")).startswith("lcfast-run"):
            return load_run(p, "last", device=device)[0]
        raise DataError(f"{cfg_path}: neither a transformers config (model_type) nor a lcfast run config")
    if (p / "model.safetensors").is_file():
        return load_model_file(p / "model.safetensors", device)
    raise DataError(f"{p}: no config.json or model.safetensors (expected a GPT-Neo folder or a lcfast run)")
