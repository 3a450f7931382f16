"""Training pipeline on real shards (lcfast.tokenize_files of a generated text): tiny end-to-end runs,
exact resume, run folder contents, CLI errors, sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lcfast.errors import DataError, UsageError
from lcfast.model.checkpoint import list_checkpoints, load_run
from lcfast.pipeline import train as train_mod
from lcfast.pipeline.sweep import run_name, run_sweep
from lcfast.pipeline.train import is_complete, lr_at, train_run

from helpers import cli

VOCAB = 300
TINY = dict(layers=2, width=16, heads=2, context=8, batch_size=4, lr=1e-2, weight_decay=0.1, seed=0,
            device="cpu", steps_per_epoch=3, eval_tokens=64, progress=False, window_size=4)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- real shards: a small generated text -> byte-level BPE (train:VOCAB) -> lcfast.tokenize_files --------
def _text(n_sentences: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    who = ["Tom", "Lily", "the cat", "a dog", "Mom", "the bird", "Ben", "the little fox"]
    did = ["saw", "liked", "found", "helped", "chased", "hugged", "made", "lost"]
    what = ["a red ball", "the big tree", "a small box", "the blue sky", "a warm cake", "the old park"]
    end = [".", " and smiled.", " and was happy.", " every day."]
    sentences = [
        f"{who[rng.integers(len(who))]} {did[rng.integers(len(did))]} "
        f"{what[rng.integers(len(what))]}{end[rng.integers(len(end))]}"
        for _ in range(n_sentences)
    ]
    return "\n\n".join(" ".join(sentences[i : i + 4]) for i in range(0, n_sentences, 4))  # 4-sentence documents


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import lcfast

    root = tmp_path_factory.mktemp("data")
    (root / "stories.txt").write_text(_text(600, 0))
    lcfast.tokenize_files([str(root / "stories.txt")], f"train:{VOCAB}", str(root / "data"), val_fraction=0.1, seed=0)
    return root / "data"


def _shard(data_dir, split):
    import lcfast

    return lcfast.TokenShard(data_dir / f"{split}.lcshard")


def _weights(run, epoch="last"):
    model, _ = load_run(run, epoch)
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- tests -------------------------------------------------------------------------------------------
def test_tiny_end_to_end(data_dir, tmp_path):
    out = tmp_path / "run"
    m = train_run(data_dir, out, epochs=2, **TINY)
    assert m["epoch"] == 2 and m["step"] == 6
    for k in ("train_loss", "val_loss", "val_acc", "perplexity", "tokens_per_s", "elapsed"):
        assert math.isfinite(m[k]), k
    assert m["perplexity"] == pytest.approx(math.exp(m["val_loss"]))
    assert m["val_loss"] < math.log(VOCAB)  # learned something in 6 steps
    assert m["val_tokens"] == 64
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["vocab_size"] == VOCAB and cfg["train"]["steps_per_epoch"] == 3
    assert cfg["data"]["train_fingerprint"] and cfg["data"]["val_fingerprint"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[-1]["val_loss"] == m["val_loss"]
    cks = list_checkpoints(out)
    assert sorted(cks) == [1, 2]
    assert (cks[2] / "state.safetensors").is_file() and not (cks[1] / "state.safetensors").exists()
    assert is_complete(out)
    model, rc = load_run(out)
    assert rc["checkpoint"]["epoch"] == 2 and model.fingerprint() == m["model_fingerprint"]
    model1, _ = load_run(out, 1)
    assert model1.fingerprint() != model.fingerprint()
    from lcfast.model import load_model

    assert load_model(out).fingerprint() == m["model_fingerprint"]  # a run folder -> its last checkpoint
    assert load_model(cks[1]).fingerprint() == model1.fingerprint()  # a checkpoint folder
    with pytest.raises(DataError, match="no checkpoint for epoch 7"):
        load_run(out, 7)
    # the evaluation is what a reference computation over the val shard gives
    val = _shard(data_dir, "val")
    assert val.n_tokens > 65 and val.vocab_size == VOCAB
    w, _ = val.seq_windows(8, 0, 8)
    with torch.no_grad():
        logits = model(torch.from_numpy(w[:, :-1]))
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.from_numpy(w[:, 1:]).reshape(-1))
    assert m["val_loss"] == pytest.approx(float(ref), rel=1e-5)
    # rerun of a complete run: no training, same answer
    again = train_run(data_dir, out, epochs=2, **TINY)
    assert again["already_complete"] and again["model_fingerprint"] == m["model_fingerprint"]


def test_eval_ragged_last_window(data_dir, tmp_path):
    model, _ = _tiny_model()
    val = _shard(data_dir, "val")
    n = val.n_tokens - 1  # every label position, in windows of 8 (the last one ragged unless 8 | n)
    ev = train_mod.evaluate(model, val, 8, 5, 10**6, torch.device("cpu"))
    assert ev["val_tokens"] == n
    toks = torch.from_numpy(np.asarray(val.tokens, dtype=np.int64))
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(model(toks[s : s + 8][None])[0][: len(toks[s + 1 : s + 9])],
                                                    toks[s + 1 : s + 9], reduction="sum") for s in range(0, n, 8)]
    assert ev["val_loss"] == pytest.approx(float(sum(losses)) / n, rel=1e-5)
    capped = train_mod.evaluate(model, val, 8, 5, 20, torch.device("cpu"))
    assert capped["val_tokens"] == 24  # --eval-tokens 20 -> 3 whole windows


def _tiny_model():
    from lcfast.model import GPTNeo, GPTNeoConfig

    torch.manual_seed(0)
    return GPTNeo(GPTNeoConfig(vocab_size=VOCAB, layers=1, width=16, heads=2, context=8)).eval(), None


def test_resume_is_bit_identical(data_dir, tmp_path):
    full = tmp_path / "full"
    train_run(data_dir, full, epochs=3, **TINY)

    part = tmp_path / "part"

    def crash(info):
        if info["step"] == 5:  # in the middle of epoch 2 (steps 4..6)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(data_dir, part, epochs=3, callback=crash, **TINY)
    assert sorted(list_checkpoints(part)) == [1] and not is_complete(part)
    (part / "checkpoints" / ".epoch_2.abc.tmp").mkdir()  # as left by a kill -9 during a checkpoint write
    m = train_run(data_dir, part, epochs=3, **TINY)  # same command again: continues from epoch 1
    assert m["resumed_from_epoch"] == 1
    assert not list((part / "checkpoints").glob(".epoch_*"))
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    fa = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    fb = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed")} for r in rs]  # noqa: E731
    assert strip(fa) == strip(fb)


def test_different_seed_differs(data_dir, tmp_path, capsys):
    a = train_run(data_dir, tmp_path / "a", epochs=1, **{**TINY, "progress": True})
    assert "val_loss" in capsys.readouterr().err  # the rich progress display and per-epoch line
    b = train_run(data_dir, tmp_path / "b", epochs=1, **{**TINY, "seed": 1})
    assert a["model_fingerprint"] != b["model_fingerprint"]


def test_corrupt_checkpoint_is_a_data_error(data_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_run(data_dir, out, epochs=2, callback=_stop_at(4), **TINY)
    f = list_checkpoints(out)[1] / "state.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="state.safetensors"):
        train_run(data_dir, out, epochs=2, **TINY)


def _stop_at(step):
    def cb(info):
        if info["step"] == step:
            raise KeyboardInterrupt
    return cb


def test_lr_schedule():
    total, lr, warm, lo = 100, 1.0, 10, 0.1
    assert lr_at(0, total, lr, warm, lo) == pytest.approx(0.1)
    assert lr_at(9, total, lr, warm, lo) == pytest.approx(1.0)
    assert lr_at(10, total, lr, warm, lo) == pytest.approx(1.0)
    assert lr_at(55, total, lr, warm, lo) == pytest.approx(0.55)
    assert lr_at(100, total, lr, warm, lo) == pytest.approx(0.1)
    vals = [lr_at(s, total, lr, warm, lo) for s in range(10, 100)]
    assert all(x >= y for x, y in zip(vals, vals[1:]))


def test_api_errors(data_dir, tmp_path):
    with pytest.raises(UsageError, match="--layers"):
        train_run(data_dir, tmp_path / "r", **{**TINY, "layers": 0})
    with pytest.raises(UsageError, match="--batch-size"):
        train_run(data_dir, tmp_path / "r", **{**TINY, "batch_size": -2})
    with pytest.raises(UsageError, match="--heads"):
        train_run(data_dir, tmp_path / "r", **{**TINY, "heads": 3})
    with pytest.raises(UsageError, match="data folder not found"):
        train_run(tmp_path / "nope", tmp_path / "r", **TINY)
    out = tmp_path / "run"
    train_run(data_dir, out, epochs=1, **TINY)
    with pytest.raises(UsageError, match="different config.*lr"):
        train_run(data_dir, out, epochs=1, **{**TINY, "lr": 5e-2})
    # vocabulary of the data changed under an existing run
    cfg = json.loads((out / "config.json").read_text())
    cfg["model"]["vocab_size"] = VOCAB + 1
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="vocab"):
        train_run(data_dir, out, epochs=1, **TINY)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        train_run(data_dir, tmp_path / "junk", **TINY)


def test_cli_errors(data_dir, tmp_path):
    code, err = cli(["train", "--data", str(tmp_path / "missing"), "--layers", "1", "--width", "16",
                     "--out", str(tmp_path / "o")])
    assert code == 2 and "--data" in err and len(err.strip().splitlines()) == 1
    code, err = cli(["train", "--data", str(data_dir), "--layers", "0", "--width", "16", "--out", str(tmp_path / "o")])
    assert code == 2 and "--layers" in err and len(err.strip().splitlines()) == 1
    code, err = cli(["train", "--data", str(data_dir), "--layers", "1", "--width", "16", "--context", "-4",
                     "--out", str(tmp_path / "o")])
    assert code == 2 and "--context" in err
    base = ["train", "--data", str(data_dir), "--layers", "1", "--width", "16", "--context", "8", "--batch-size", "4",
            "--steps-per-epoch", "2", "--eval-tokens", "32", "--device", "cpu", "--no-progress",
            "--out", str(tmp_path / "o")]
    code, _ = cli(base)
    assert code == 0 and is_complete(tmp_path / "o")
    code, err = cli([*base[:-2], "--lr", "0.5", "--out", str(tmp_path / "o")])
    assert code == 2 and "different config" in err
    code, err = cli(["sweep", "--data", str(data_dir), "--layers", "1,x", "--widths", "16",
                     "--out", str(tmp_path / "s")])
    assert code == 2 and "--layers" in err


def test_sweep_skips_complete_runs(data_dir, tmp_path):
    kw = {k: v for k, v in TINY.items() if k not in ("layers", "width", "seed")}
    kw["steps_per_epoch"] = 1
    res = run_sweep(data_dir, tmp_path / "runs", layers=[1], widths=[16, 32], epochs=[1], seeds=[0], **kw)
    assert [r["status"] for r in res] == ["trained", "trained"]
    assert (tmp_path / "runs" / run_name(1, 32, 1, 0) / "config.json").is_file()
    assert run_name(1, 32, 1, 0) == "L1_W32_E1_S0"
    res2 = run_sweep(data_dir, tmp_path / "runs", layers=[1], widths=[16, 32], epochs=[1], seeds=[0], **kw)
    assert [r["status"] for r in res2] == ["skipped", "skipped"]
    assert [r["val_loss"] for r in res2] == [r["val_loss"] for r in res]
    summary = json.loads((tmp_path / "runs" / "sweep.json").read_text())
    assert len(summary["runs"]) == 2 and {r["width"] for r in summary["runs"]} == {16, 32}
