"""The whole pipeline through the CLI, as a user runs it: corpus synth → tokenize (train:VOCAB) →
train (3 one-step epochs) → collect --checkpoint all → measure → analyze; and a GPT-Neo folder
written by transformers' save_pretrained, collected with --data and measured."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import cli, make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_end_to_end(tmp_path):
    c, d, r, m, a = (tmp_path / n for n in ("corpus", "data", "run", "measure", "analysis"))
    steps = [
        ("corpus", "synth", "--out", c, "--stories", "20"),
        ("tokenize", c / "stories.txt", "--tokenizer", "train:300", "--out", d, "--val-fraction", "0.2"),
        ("train", "--data", d, "--layers", "1", "--width", "16", "--heads", "2", "--context", "16", "--window", "8",
         "--batch-size", "4", "--steps-per-epoch", "1", "--epochs", "3", "--eval-tokens", "512", "--device", "cpu",
         "--no-progress", "--out", r),
        ("collect", r, "--checkpoint", "all", "--batch-size", "8", "--device", "cpu", "--no-progress"),
        ("measure", r, "--out", m, "--no-progress"),
        ("analyze", m / "measurements.csv", "--out", a, "--metric", "nc1_cdnv", "--metric", "nc4_agreement",
         "--no-plots"),
    ]
    for args in steps:
        code, err = cli(args)
        assert code == 0, (args[0], err)
    for k in (1, 2, 3):
        s = json.loads((r / "collect" / f"epoch_{k}" / "collect.json").read_text())
        assert s["epoch"] == k and s["passes"]["train"]["tokens"] > 0 and s["timing"]["stats_share_of_forward"] > 0
    df = pd.read_csv(m / "measurements.csv")
    assert list(df["epochs"]) == [1, 2, 3] and df["nc1_cdnv"].gt(0).all() and df["val_loss"].notna().all()
    assert len(list((m / "per_token").glob("*.parquet"))) == 3
    corr = pd.read_csv(a / "correlations.csv").set_index("metric")
    assert corr.loc["nc1_cdnv", "n"] == 3
    # a rerun of collect reuses every pass
    code, _ = cli(["collect", r, "--checkpoint", "all", "--no-progress"])
    assert code == 0
    for k in (1, 2, 3):
        s = json.loads((r / "collect" / f"epoch_{k}" / "collect.json").read_text())
        assert all(p["reused"] for p in s["passes"].values())


def test_transformers_gptneo_folder(tmp_path, capsys):
    """collect + measure on a folder written by transformers (config.json + model.safetensors)."""
    transformers = pytest.importorskip("transformers")
    import torch

    t = make_tiny(tmp_path / "tiny", epochs=1)
    from lcfast.data.shards import TokenShard

    vocab = TokenShard(str(t["data"] / "train.lcshard")).vocab_size
    cfg = transformers.GPTNeoConfig(vocab_size=vocab, max_position_embeddings=32, hidden_size=16, num_layers=2,
                                    num_heads=2, attention_types=[[["global", "local"], 1]], window_size=8,
                                    intermediate_size=32, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPTNeoForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "neo", safe_serialization=True)
    capsys.readouterr()  # transformers' own progress output
    code, err = cli(["collect", tmp_path / "neo", "--no-progress"])
    assert code == 2 and "--data" in err and len(err.strip().splitlines()) == 1
    code, err = cli(["collect", tmp_path / "neo", "--data", t["data"], "--device", "cpu", "--no-progress"])
    assert code == 0, err
    s = json.loads((tmp_path / "neo" / "collect" / "model" / "collect.json").read_text())
    assert s["source"]["kind"] == "hf" and s["context"] == 32 and s["layers"] == 2
    # collect's own val loss equals transformers' loss on the same windows
    toks = torch.from_numpy(TokenShard(str(t["data"] / "val.lcshard")).tokens.astype("int64"))
    n = (len(toks) - 1) // 32
    x, y = toks[: n * 32].reshape(n, 32), toks[1 : n * 32 + 1].reshape(n, 32)
    with torch.no_grad():
        logits = hf(x).logits
        rest = toks[n * 32 :]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1), reduction="sum")
        if len(rest) > 1:
            nll += torch.nn.functional.cross_entropy(hf(rest[:-1][None]).logits[0], rest[1:], reduction="sum")
    assert s["val_pass"]["loss"] == pytest.approx(float(nll) / (len(toks) - 1), rel=1e-4)
    code, err = cli(["measure", tmp_path / "neo", "--out", tmp_path / "m", "--no-progress"])
    assert code == 0, err
    row = pd.read_csv(tmp_path / "m" / "measurements.csv").iloc[0]
    assert row["model"] == "neo" and row["checkpoint"] == "model"
    assert row["val_loss"] == pytest.approx(s["val_pass"]["loss"])
    assert row["n_params"] == sum(p.numel() for p in hf.parameters())
