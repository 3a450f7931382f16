"""`lcfast export RUN --out DIR`: a `lcfast train` checkpoint as a transformers GPT-Neo folder —
config.json, model.safetensors (transformers' key names), tokenizer.json — that
`AutoModelForCausalLM.from_pretrained(DIR)` loads with lcfast's logits, and that lcfast itself reads
back through its GPT-Neo fast path as the very same model (same config, weights and fingerprint),
so `lcfast collect DIR --data …` gives the statistics `lcfast collect RUN` gives. The tokenizer shipped
must be the one the run was trained with (the fingerprint its config.json records).

The inverse of `lcfast.model.load_hf` (hf_config_to_ours / hf_key_to_ours). No transformers needed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from lcfast.errors import DataError, UsageError
from lcfast.model.gptneo import GPTNeoConfig

EXPORT_MARK = "lcfast_export"


def ours_to_hf_config(cfg: GPTNeoConfig, eos_id: int | None = None) -> dict:
    """A transformers GPTNeoConfig dict for our config (hf_config_to_ours gives `cfg` back)."""
    eos = 0 if eos_id is None else int(eos_id)
    return {
        "model_type": "gpt_neo",
        "architectures": ["GPTNeoForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.context,
        "hidden_size": cfg.width,
        "num_layers": cfg.layers,
        "num_heads": cfg.heads,
        "attention_types": [[[kind], 1] for kind in cfg.attention_layers],
        "attention_layers": list(cfg.attention_layers),
        "window_size": cfg.window_size,
        "intermediate_size": cfg.mlp_dim,
        "activation_function": cfg.activation,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings,
        "embed_dropout": 0.0,
        "attention_dropout": 0.0,
        "resid_dropout": 0.0,
        "classifier_dropout": 0.0,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def ours_key_to_hf(key: str) -> str:
    """Our state-dict key -> transformers' (GPTNeoForCausalLM)."""
    if key.startswith("lm_head."):
        return key
    return "transformer." + key.replace(".attn.", ".attn.attention.")


def _tokenizer_of(run_cfg: dict, run: Path, tokenizer: str | os.PathLike | None) -> Path:
    if tokenizer is not None:
        p = Path(tokenizer)
        p = p / "tokenizer.json" if p.is_dir() else p
        if not p.is_file():
            raise UsageError(f"--tokenizer {tokenizer}: no such tokenizer.json")
        return p
    d = run_cfg.get("data", {}).get("dir") if isinstance(run_cfg.get("data"), dict) else None
    p = Path(d) / "tokenizer.json" if d else None
    if p is None or not p.is_file():
        raise DataError(f"{run}: the tokenizer.json of its data dir ({d or 'not recorded'}) is gone: "
                        "pass --tokenizer PATH")
    return p


def _check_tokenizer(tok: Path, run_cfg: dict, run: Path, given) -> None:
    """DataError when `tok` is not the tokenizer the run was trained with (its fingerprint, recorded
    in config.json): the folder would pair the model with another vocabulary's strings, and
    `lcfast collect` of it would refuse shards of the run's own data."""
    data = run_cfg.get("data") if isinstance(run_cfg.get("data"), dict) else {}
    want = data.get("tokenizer_fingerprint")
    if not want:  # a run that recorded none: nothing to compare with
        return
    from lcfast.data.shards import _core

    try:
        got = str(_core().tokenizer_fingerprint(str(tok)))
    except Exception as e:  # noqa: BLE001 - the Rust core raises plain errors for unreadable files
        raise DataError(f"{tok}: unreadable tokenizer ({' '.join(str(e).split())[:200]})") from None
    if got != want:
        what = f"--tokenizer {given}" if given is not None else f"{tok} (the tokenizer of its data dir now)"
        raise DataError(f"{what}: not the tokenizer {run} was trained with (fingerprint {got}, the run's {want}); "
                        + ("pass the run's tokenizer.json" if given is not None
                           else "pass --tokenizer with the tokenizer.json the run was trained with"))


def export_run(run: str | os.PathLike, out: str | os.PathLike, checkpoint: str | int = "last",
               tokenizer: str | os.PathLike | None = None) -> dict:
    """Write checkpoint `checkpoint` of run `run` as a transformers GPT-Neo folder `out` (atomically;
    a folder that holds anything but an earlier export is refused). Returns a summary dict."""
    from lcfast.io import atomic_dir, read_json, save_tensors
    from lcfast.model.checkpoint import load_run
    from lcfast.model.sources import is_run_dir

    run, out = Path(run), Path(out)
    if not run.is_dir() or not is_run_dir(run):
        raise UsageError(f"RUN {run}: not a lcfast train run (config.json + checkpoints/)")
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out}: exists and is not a directory")
        prev = out / "config.json"
        earlier = prev.is_file() and EXPORT_MARK in read_json(prev, "model config")
        if any(out.iterdir()) and not earlier:
            raise UsageError(f"--out {out}: exists and holds other files; export into a new or empty folder")
    ck = str(checkpoint).strip().lower()
    if ck not in ("last",):
        ck = ck[len("epoch_"):] if ck.startswith("epoch_") else ck
        if not ck.isdigit():
            raise UsageError(f"--checkpoint {checkpoint}: expected an epoch number or 'last'")
    model, cfg = load_run(run, "last" if ck == "last" else int(ck))
    tok = _tokenizer_of(cfg, run, tokenizer)
    _check_tokenizer(tok, cfg, run, tokenizer)
    from tokenizers import Tokenizer

    try:
        vocab = Tokenizer.from_file(str(tok)).get_vocab_size(with_added_tokens=True)
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
        raise DataError(f"{tok}: unreadable tokenizer ({' '.join(str(e).split())[:200]})") from None
    if vocab > model.config.vocab_size:
        raise DataError(f"{tok}: a tokenizer of {vocab} tokens for a model of {model.config.vocab_size} classes")
    meta = tok.parent / "meta.json"  # lcfast tokenize's summary beside the tokenizer names the end-of-text id
    eos = read_json(meta, "tokenize summary").get("eos_id") if meta.is_file() else None
    hf_cfg = ours_to_hf_config(model.config, eos)
    epoch = cfg["checkpoint"]["epoch"]
    hf_cfg[EXPORT_MARK] = {"run": str(run.resolve()), "epoch": epoch, "fingerprint": model.fingerprint()}
    sd = model.state_dict()
    tensors = {ours_key_to_hf(k): v.detach().to(torch.float32) for k, v in sd.items()}
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n", encoding="utf-8")
        save_tensors(tmp / "model.safetensors", tensors, {"format": "pt"})
        shutil.copyfile(tok, tmp / "tokenizer.json")
        gen = {"bos_token_id": hf_cfg["bos_token_id"], "eos_token_id": hf_cfg["eos_token_id"]}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
    return {"run": str(run), "checkpoint": f"epoch_{epoch}", "out": str(out), "fingerprint": model.fingerprint(),
            "n_params": int(model.n_params()), "files": ["config.json", "model.safetensors", "tokenizer.json",
                                                         "generation_config.json"]}


__all__ = ["export_run", "ours_to_hf_config", "ours_key_to_hf", "EXPORT_MARK"]
