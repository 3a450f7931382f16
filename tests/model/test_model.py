"""GPT-Neo model: parity with transformers, loading, config, fingerprint, masking."""

from __future__ import annotations

import json

import pytest
import torch
import transformers  # test dependency (pyproject [test]); a plain import on purpose: CI must have it

from lcfast.errors import DataError, UsageError
from lcfast.model import GPTNeo, GPTNeoConfig, load_hf_gptneo, load_model
from lcfast.model.checkpoint import load_model_file, save_model

V, CTX, WIN = 97, 24, 5


pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_model(tie=True, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPTNeoConfig(
        vocab_size=V, max_position_embeddings=CTX, hidden_size=32, num_layers=3, num_heads=4,
        attention_types=[[["global", "local"], 1], [["local"], 1]], window_size=WIN, intermediate_size=48,
        tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0,
    )
    m = transformers.GPTNeoForCausalLM(cfg).eval()
    with torch.no_grad():  # bigger than the 0.02 init so that attention patterns (and its unscaled q.k) matter
        for p in m.parameters():
            p.add_(torch.randn_like(p) * (0.15 if p.dim() > 1 else 0.1))
    return m


def _ids(B=3, T=CTX, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tie", [True, False])
def test_hf_parity_safetensors(tmp_path, tie):
    hf = _hf_model(tie)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ours = load_model(tmp_path)
    assert ours.config.attention_layers == ["global", "local", "local"] and ours.config.window_size == WIN
    idx = _ids()
    with torch.no_grad():
        out = hf(idx, output_hidden_states=True)
        logits, feats = ours(idx), ours.features(idx)
    assert out.logits.abs().max() > 1.0  # a non-trivial model
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(feats, out.hidden_states[-1], atol=1e-5, rtol=0)
    W = hf.get_output_embeddings().weight
    assert torch.equal(ours.lm_head_weight, W) and ours.lm_head_bias is None
    assert ours.n_params() == sum(p.numel() for p in hf.parameters())
    # the test can see a wrong window: the same weights with a wider window disagree
    wide = GPTNeo(GPTNeoConfig(**{**ours.config.to_dict(), "window_size": CTX}))
    wide.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (wide(idx) - out.logits).abs().max() > 1e-3


def test_hf_parity_pytorch_bin(tmp_path):
    """Older checkpoints: pytorch_model.bin with the causal-mask buffers and a copy of the tied head."""
    hf = _hf_model(seed=3)
    hf.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    sd = {f"transformer.{k}" if not k.startswith(("transformer.", "lm_head.")) else k: v
          for k, v in hf.state_dict().items()}
    sd["lm_head.weight"] = hf.lm_head.weight.detach().clone()
    for i in range(3):
        sd[f"transformer.h.{i}.attn.attention.bias"] = torch.tril(torch.ones(1, 1, CTX, CTX, dtype=torch.bool))
        sd[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    ours = load_hf_gptneo(tmp_path)
    idx = _ids(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-5, rtol=0)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(DataError, match="gpt2"):
        load_model(tmp_path)
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(DataError, match="model.safetensors"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(DataError, match="no model.safetensors or pytorch_model.bin"):
        load_model(tmp_path / "m")


def _tiny(**kw):
    torch.manual_seed(0)
    cfg = {"vocab_size": 50, "layers": 2, "width": 16, "heads": 2, "context": 12, "window_size": 3, **kw}
    return GPTNeo(GPTNeoConfig(**cfg)).eval()


def test_config_and_interface():
    m = _tiny()
    cfg = m.config
    assert cfg.attention_layers == ["global", "local"] and cfg.mlp_dim == 64
    assert GPTNeoConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(DataError, match="unknown"):
        GPTNeoConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(UsageError, match="divisible"):
        GPTNeoConfig(vocab_size=10, layers=1, width=10, heads=3, context=4)
    with pytest.raises(UsageError, match="layers"):
        GPTNeoConfig(vocab_size=10, layers=0, width=8, heads=2, context=4)
    idx = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        f = m.features(idx)
        assert f.shape == (2, 12, 16)
        torch.testing.assert_close(m(idx), f @ m.lm_head_weight.T)
    assert m.lm_head_weight is m.wte.weight and m.lm_head_weight.shape == (50, 16)
    with pytest.raises(UsageError, match="context"):
        m(torch.zeros(1, 13, dtype=torch.long))
    n = sum(p.numel() for p in m.parameters())
    assert m.n_params() == n and m.n_params(exclude_embeddings=True) == n - 50 * 16 - 12 * 16


def test_causal_and_local_masks():
    m = _tiny(attention_layers=["local", "local"])
    a = torch.randint(0, 50, (1, 12))
    b = a.clone()
    b[0, 5] = (a[0, 5] + 1) % 50
    with torch.no_grad():
        d = (m(a) - m(b)).abs().amax(-1)[0]
    assert torch.all(d[:5] == 0)  # causal
    assert torch.all(d[5:10] > 0)  # two local layers of window 3 reach 4 positions ahead
    assert torch.all(d[10:] == 0)  # ... and no further
    g = _tiny()  # a global layer reaches everything after
    with torch.no_grad():
        assert torch.all((g(a) - g(b)).abs().amax(-1)[0, 5:] > 0)


def test_fingerprint_and_file_roundtrip(tmp_path):
    m = _tiny()
    fp = m.fingerprint()
    assert fp == _tiny().fingerprint()
    save_model(tmp_path / "model.safetensors", m)
    m2 = load_model_file(tmp_path / "model.safetensors")
    assert m2.fingerprint() == fp and load_model(tmp_path).fingerprint() == fp
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    with torch.no_grad():
        m2.h[1].mlp.c_proj.bias[3] += 1e-3
    assert m2.fingerprint() != fp
    assert _tiny(window_size=4).fingerprint() != fp  # config is part of it
