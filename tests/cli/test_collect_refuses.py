"""`lcfast collect` refuses what it cannot measure truthfully (issue 20 §2): one test per row of the
"Models collect refuses" table of docs/bad-input.md, each through the installed console script in a
subprocess: the exit code, stderr one line naming the folder or file (or, where collect goes on, one
warning line), and nothing written.

Every case used to exit 0 with numbers that mean nothing, or with a traceback: an encoder measured
with bidirectional attention, a random LM head or random blocks, a corrupt weight file, a tokenizer
check skipped in silence, a tokenizer fetched from the hub."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

from helpers import HF_ARCHS, child_env, console, save_hf_model, tokenizer_vocab  # noqa: E402

COLLECT = ["--device", "cpu", "--no-progress", "--context", "32", "--max-tokens", "128"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_shards, tiny_bpe_tokenizer):
    """The shards, a tiny Llama and GPT-Neo folder with their tokenizer, and the models' vocabulary."""
    root = tmp_path_factory.mktemp("collect_refuses")
    shutil.copytree(tiny_shards, root / "data")
    save_hf_model("llama", root / "llama", tiny_bpe_tokenizer, seed=0)
    save_hf_model("gpt_neo", root / "neo", tiny_bpe_tokenizer, seed=0)
    (root / "vocab").write_text(str(tokenizer_vocab(tiny_bpe_tokenizer)))
    return root


def _vocab(base: Path) -> int:
    return int((base / "vocab").read_text())


def _copy(base: Path, name: str, w: Path, to: str, **config) -> Path:
    """A copy of base/name at w/to with config.json keys set (None: removed)."""
    shutil.copytree(base / name, w / to)
    cfg = json.loads((w / to / "config.json").read_text())
    for k, v in config.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (w / to / "config.json").write_text(json.dumps(cfg))
    return w / to


def _save(model, folder: Path, base: Path) -> Path:
    model.save_pretrained(str(folder), safe_serialization=True)
    shutil.copyfile(base / "llama" / "tokenizer.json", folder / "tokenizer.json")
    return folder


def _bert(w: Path, base: Path) -> Path:
    import torch

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=_vocab(base), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64)
    return _save(transformers.BertForMaskedLM(cfg).eval(), w / "bert", base)


def _collect(model: Path, w: Path, base: Path) -> list:
    return ["collect", model, "--data", base / "data", "--out", w / "c", *COLLECT]


# -- the cases: (argv, exit code, text of the one line[, env]) -----------------------------------------
def case_encoder_masked_lm(w, base):
    """A BertForMaskedLM folder: transformers loads it as BertLMHeadModel, bidirectional."""
    return _collect(_bert(w, base), w, base), 1, (
        "BertLMHeadModel is not a causal language model (config.json: model_type 'bert' is an encoder with "
        "bidirectional attention (architectures: BertForMaskedLM), and is_decoder is not set)",
        "(transformers said: If you want to use `BertLMHeadModel` as a standalone, add `is_decoder=True.`)")


def case_encoder_caught_by_the_probe(w, base):
    """The same folder with the config check switched off (sitecustomize): the direct check on the
    first window refuses it alone."""
    site = w / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import lcfast.model.hf as hf\nhf.non_causal_reason = lambda cfg, transformers: None\n")
    env = child_env(PYTHONPATH=os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p))
    return _collect(_bert(w, base), w, base), 1, (
        "BertLMHeadModel is not causal: changing token 15 of the first window of",
        "moved the LM-head input at 15 of the 15 earlier positions"), env


def case_bidirectional_flag(w, base):
    """A decoder architecture whose config.json turns on bidirectional attention (EmbeddingGemma's switch)."""
    m = _copy(base, "llama", w, "bidi", use_bidirectional_attention=True)
    return _collect(m, w, base), 1, ("LlamaForCausalLM is not a causal language model (config.json sets "
                                     "use_bidirectional_attention",)


def case_base_model_without_head(w, base):
    """A LlamaModel folder: no lm_head.weight, embeddings not tied."""
    kw, _ = HF_ARCHS["llama"]
    cfg = transformers.LlamaConfig(vocab_size=_vocab(base), **kw)
    m = _save(transformers.LlamaModel(cfg).eval(), w / "base", base)
    return _collect(m, w, base), 1, (
        "the weights do not match config.json: 1 weight of LlamaForCausalLM missing (lm_head.weight) — the LM head, "
        "which config.json does not tie to the embeddings",)


def case_config_more_layers(w, base):
    """config.json edited to 4 layers, the weights hold 2: 2 random blocks."""
    m = _copy(base, "llama", w, "more", num_hidden_layers=4)
    return _collect(m, w, base), 1, (
        "the weights do not match config.json: 18 weights of LlamaForCausalLM missing (model.layers.2.",)


def case_config_fewer_layers(w, base):
    m = _copy(base, "llama", w, "fewer", num_hidden_layers=1)
    return _collect(m, w, base), 1, (
        "the weights do not match config.json: 9 checkpoint tensors that LlamaForCausalLM has no place for "
        "(model.layers.1.",)


def case_config_other_shape(w, base):
    v = _vocab(base)
    m = _copy(base, "llama", w, "wider", vocab_size=v + 50)
    return _collect(m, w, base), 1, (
        f"the weights do not match config.json: 2 of another shape (lm_head.weight [{v}, 16] in the checkpoint, "
        f"[{v + 50}, 16] in config.json",)


def case_weights_truncated(w, base):
    m = _copy(base, "llama", w, "trunc")
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 2])
    return _collect(m, w, base), 1, (
        "trunc/model.safetensors: unreadable model weights (SafetensorError: Error while deserializing header: "
        "incomplete metadata, file not fully covered); the file is damaged",)


def case_weights_zero_filled(w, base):
    m = _copy(base, "llama", w, "zeros")
    n = (m / "model.safetensors").stat().st_size
    (m / "model.safetensors").write_bytes(b"\0" * n)
    return _collect(m, w, base), 1, ("zeros/model.safetensors: unreadable model weights (SafetensorError: ",)


def case_weights_shard_missing(w, base):
    """A sharded folder whose index names a file that is not there."""
    m = _copy(base, "llama", w, "sharded")
    from safetensors import safe_open

    (m / "model.safetensors").rename(m / "model-00001-of-00002.safetensors")
    with safe_open(str(m / "model-00001-of-00002.safetensors"), framework="pt") as f:
        keys = sorted(f.keys())
    wm = {k: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    (m / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return _collect(m, w, base), 1, (
        "sharded/model-00002-of-00002.safetensors: model weights (listed in model.safetensors.index.json) not found",)


def case_gptneo_more_layers(w, base):
    """lcfast's own fast path for GPT-Neo folders refuses missing blocks too."""
    m = _copy(base, "neo", w, "neo4", num_layers=4, attention_types=[[["global", "local"], 2]],
              attention_layers=["global", "local"] * 2)
    return _collect(m, w, base), 1, (
        "neo4/model.safetensors: weights do not match the model config: 26 missing (h.2.attn.k_proj.weight, ",)


def case_gptneo_truncated(w, base):
    m = _copy(base, "neo", w, "neotrunc")
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[:100])
    return _collect(m, w, base), 1, ("neotrunc/model.safetensors: unreadable model weights (SafetensorError: ",)


def case_tokenizer_bare_name(w, base):
    """A bare name used to be looked up on the hub."""
    (w / "t.txt").write_text("one two three\n\nfour five\n")
    return ["tokenize", w / "t.txt", "--tokenizer", "someone/tok", "--out", w / "d"], 2, (
        "--tokenizer someone/tok: no such file or folder, and lcfast never downloads; accepted: a tokenizer.json "
        "path, a model folder holding one, hf:ORG/NAME (a model's tokenizer.json in the local Hugging Face cache) "
        "(from the cache: --tokenizer hf:someone/tok), or train:VOCAB",)


CASES = {name[len("case_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def _one_line(r, code: int, texts, kind: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, f"exit {r.returncode}, stderr: {r.stderr[-3000:]}"
    assert len(lines) == 1, f"not one line: {r.stderr[-3000:]!r}"
    assert lines[0].startswith(f"lcfast: {kind}: "), lines[0]
    for t in texts:
        assert t in lines[0], f"{t!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_collect_refuses(name, base, tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    got = CASES[name](w, base)
    argv, code, texts = got[:3]
    env = got[3] if len(got) > 3 else None
    r = console(argv, env=env)
    _one_line(r, code, texts, "usage error" if code == 2 else "error")
    assert not (w / "c").exists() and not (w / "d").exists(), "refused, yet an output folder was made"


@pytest.mark.parametrize("how", ["missing", "unreadable"])
def test_unchecked_tokenizer_is_said(how, base, tmp_path):
    """Without a readable tokenizer.json beside the model, the shards' tokenizer cannot be checked:
    collect goes on (the vocabulary still fits) and says so on one warning line."""
    m = _copy(base, "llama", tmp_path, "notok")
    if how == "missing":
        (m / "tokenizer.json").unlink()
    else:
        (m / "tokenizer.json").write_text("{ not json")
    r = console(_collect(m, tmp_path, base))
    line = _one_line(r, 0, (f"notok/tokenizer.json: {'not found' if how == 'missing' else 'unreadable ('}",
                            "so the shards' tokenizer is not checked against the model's (only that their vocabulary "
                            "fits its"), "warning")
    assert (tmp_path / "c" / "collect.json").is_file(), line


def test_a_tied_head_is_not_missing(base, tmp_path):
    """A LlamaModel folder whose config ties the head to the embeddings has no lm_head.weight, and
    needs none: collected; its head is the embedding matrix."""
    import torch
    from safetensors.torch import load_file

    kw, _ = HF_ARCHS["llama"]
    cfg = transformers.LlamaConfig(vocab_size=_vocab(base), **{**kw, "tie_word_embeddings": True})
    torch.manual_seed(0)
    m = _save(transformers.LlamaModel(cfg).eval(), tmp_path / "tied", base)
    r = console([*_collect(m, tmp_path, base), "--json"])
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr[-3000:]
    assert "lm_head.weight" not in load_file(m / "model.safetensors")
    assert json.loads(r.stdout)[0]["val_pass"]["positions"] > 0


@pytest.mark.skipif(int(transformers.__version__.split(".")[0]) < 5, reason="transformers 4 ties quietly")
def test_what_transformers_says_is_no_longer_silenced(base, tmp_path):
    """A config that ties the head while the checkpoint holds a different one: transformers 5 keeps
    both (the checkpoint's head is measured) and says so; collect passes that on, on one line."""
    m = _copy(base, "llama", tmp_path, "untied", tie_word_embeddings=True)
    r = console(_collect(m, tmp_path, base))
    _one_line(r, 0, ("untied: transformers said while loading: The tied weights mapping and config for this model "
                     "specifies to tie model.embed_tokens.weight to lm_head.weight, but both are present in the "
                     "checkpoints with different values, so we will NOT tie them.",), "warning")


def test_docs_section_lists_every_case():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "bad-input.md").read_text(encoding="utf-8")
    section = doc.split("\n## Models collect refuses", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M))
    assert rows == set(CASES) | {"tokenizer_json_missing", "tokenizer_json_unreadable", "tied_head",
                                 "transformers_warning"}
