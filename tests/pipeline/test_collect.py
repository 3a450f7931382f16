"""Collection (lcfast collect): statistics against a direct computation, bit-identical resume,
--exact vs one pass, --checkpoint all, refusal of foreign states, transformers dirs, CLI errors.

Everything runs on a tiny real pipeline (synthetic corpus → BPE train:300 → shards → a 1-layer
model trained 2 steps), built once per module by `helpers.make_tiny`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lcfast.errors import DataError, UsageError
from lcfast.pipeline.collect import CollectOptions, collect

from helpers import Killed, cli, features_of, kill_after, make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("collect"))


OPTS = dict(batch_size=8, device="cpu")


def _tensors(path):
    from lcfast.io import load_tensors

    return load_tensors(path)[0]


def test_collect_matches_direct_computation(tiny, tmp_path):
    from lcfast.data.shards import TokenShard
    from lcfast.model.checkpoint import load_run
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.ncc import NCCStats

    (s,) = collect(tiny["run"], out=tmp_path / "c", opts=CollectOptions(**OPTS), progress=False)
    assert s["checkpoint"] == "epoch_2" and s["epoch"] == 2
    model, cfg = load_run(tiny["run"], 2)
    T = cfg["model"]["context"]
    train = TokenShard(str(tiny["data"] / "train.lcshard"))
    val = TokenShard(str(tiny["data"] / "val.lcshard"))
    H, Y = features_of(model, train, T)
    st = ClassStats.load(tmp_path / "c" / "train_stats.safetensors")
    # every label position of the train shard exactly once
    assert int(st.counts.sum()) == train.n_tokens - 1 == s["passes"]["train"]["tokens"]
    counts = torch.bincount(Y, minlength=st.n_classes)
    assert torch.equal(st.counts, counts)
    seen = counts > 0
    mu = torch.zeros(st.n_classes, H.shape[1], dtype=torch.float64).index_add_(0, Y, H) / counts.clamp_min(1)[:, None]
    var = torch.zeros(st.n_classes, dtype=torch.float64).index_add_(0, Y, ((H - mu[Y]) ** 2).sum(1))
    var = var / counts.clamp_min(1)
    # (float32 features: another batch shape may round the last bits differently)
    torch.testing.assert_close(st.means[seen], mu[seen], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.variances[seen], var[seen], rtol=1e-4, atol=1e-6)
    # NC4 over the val positions with a kept label; val loss from the same pass
    Hv, Yv = features_of(model, val, T)
    W = model.lm_head_weight.detach().double()
    kept = seen.nonzero().squeeze(1)
    d2 = torch.cdist(Hv, mu[kept])
    ncc = kept[d2.argmin(1)]
    lm = (Hv @ W.T).argmax(1)
    sel = seen[Yv]
    ncc_st = NCCStats.load(tmp_path / "c" / "val_ncc.safetensors")
    assert int(ncc_st.totals.sum()) == int(sel.sum())
    assert int(ncc_st.hits.sum()) == int((ncc == lm)[sel].sum())
    loss = torch.nn.functional.cross_entropy(Hv @ W.T, Yv).item()
    assert s["val_pass"]["loss"] == pytest.approx(loss, rel=1e-5)
    # timings recorded: forward and statistics separately
    t = s["timing"]
    assert t["forward_s"] > 0 and t["stats_s"] > 0
    assert t["stats_share_of_forward"] == pytest.approx(t["stats_s"] / t["forward_s"])
    assert json.loads((tmp_path / "c" / "collect.json").read_text())["model_fingerprint"] == model.fingerprint()


@pytest.mark.parametrize("kind", ["train", "val"])
def test_resume_is_bit_identical(tiny, tmp_path, kind):
    opts = CollectOptions(save_every_windows=1, **OPTS)  # a save after every batch
    ref = collect(tiny["run"], out=tmp_path / "ref", opts=opts, progress=False)[0]
    with pytest.raises(Killed):
        collect(tiny["run"], out=tmp_path / "cut", opts=opts, progress=False, on_save=kill_after(kind, 2))
    state = "train_stats.safetensors" if kind == "train" else "val_ncc.safetensors"
    meta = json.loads(json.dumps(_state_meta(tmp_path / "cut" / state)))
    assert meta["windows_done"] == "16" and meta["pass"] == kind  # the state on disk is the 2nd save
    # a rerun, even with another --batch-size, continues from the save with the saved batches
    again = collect(tiny["run"], out=tmp_path / "cut",
                    opts=CollectOptions(save_every_windows=1, batch_size=5, device="cpu"), progress=False)[0]
    assert again["passes"][kind]["resumed_from"] == 16
    for name in ("train_stats.safetensors", "val_ncc.safetensors"):
        a, b = _tensors(tmp_path / "ref" / name), _tensors(tmp_path / "cut" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    if kind == "val":  # resumed within the val pass: same batches, same sum
        assert again["val_pass"]["loss"] == ref["val_pass"]["loss"]
    else:  # the val pass ran afresh with --batch-size 5: the loss sum is added in another order
        assert again["val_pass"]["loss"] == pytest.approx(ref["val_pass"]["loss"], rel=1e-6)
    # a third run reuses both passes
    third = collect(tiny["run"], out=tmp_path / "cut", opts=opts, progress=False)[0]
    assert all(p["reused"] for p in third["passes"].values())


def _state_meta(path):
    from lcfast.pipeline.collect.state import read_state_meta

    return read_state_meta(path)


def test_exact_two_pass_agrees_with_one_pass(tiny, tmp_path):
    from lcfast.stats.classstats import ClassStats

    one = collect(tiny["run"], out=tmp_path / "one", opts=CollectOptions(**OPTS), progress=False)[0]
    ex = collect(tiny["run"], out=tmp_path / "ex", opts=CollectOptions(exact=True, **OPTS), progress=False)[0]
    assert set(ex["passes"]) == {"train", "train_exact", "val"}
    a = ClassStats.load(tmp_path / "one" / "train_stats.safetensors")
    b = ClassStats.load(tmp_path / "ex" / "train_exact.safetensors")
    assert b.pass_kind == "two-pass"
    assert torch.equal(a.counts, b.counts)
    torch.testing.assert_close(b.means, a.means, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b.variances, a.variances, rtol=1e-8, atol=1e-10)
    assert ex["val_pass"] == one["val_pass"]
    meta = _state_meta(tmp_path / "ex" / "train_exact.safetensors")
    assert meta["means_fingerprint"] and meta["pass"] == "train_exact"


def test_checkpoint_all_and_foreign_states(tiny, tmp_path):
    res = collect(tiny["run"], checkpoint="all", out=tmp_path / "all", opts=CollectOptions(**OPTS), progress=False)
    assert [r["checkpoint"] for r in res] == ["epoch_1", "epoch_2"]
    assert res[0]["model_fingerprint"] != res[1]["model_fingerprint"]
    assert (tmp_path / "all" / "epoch_1" / "collect.json").is_file()
    # default output folder: RUN/collect/<checkpoint>
    (cut,) = collect(tiny["run"], checkpoint="1", opts=CollectOptions(max_tokens=64, **OPTS), progress=False)
    assert (tiny["run"] / "collect" / "epoch_1" / "collect.json").is_file()
    assert cut["passes"]["train"]["tokens"] == cut["passes"]["val"]["tokens"] == 64  # --max-tokens: 4 windows of 16
    shutil.rmtree(tiny["run"] / "collect")
    # a state of another model (epoch 1) in the output of epoch 2: refused, then --restart
    with pytest.raises(DataError, match="another model"):
        collect(tiny["run"], checkpoint="2", out=tmp_path / "all" / "epoch_1", opts=CollectOptions(**OPTS),
                progress=False)
    r = collect(tiny["run"], checkpoint="2", out=tmp_path / "all" / "epoch_1",
                opts=CollectOptions(restart=True, **OPTS), progress=False)[0]
    assert r["model_fingerprint"] == res[1]["model_fingerprint"]
    # a state of another shard (same tokenizer, other tokens): refused
    other = tmp_path / "swapped"
    other.mkdir()
    for n in ("tokenizer.json", "meta.json"):
        if (tiny["data"] / n).exists():
            shutil.copy(tiny["data"] / n, other / n)
    shutil.copy(tiny["data"] / "val.lcshard", other / "train.lcshard")
    shutil.copy(tiny["data"] / "train.lcshard", other / "val.lcshard")
    with pytest.raises(DataError, match="another shard"):
        collect(tiny["run"], data=other, out=tmp_path / "all" / "epoch_2", opts=CollectOptions(**OPTS), progress=False)


def _save_as_transformers(model, folder: Path):
    """A GPT-Neo folder as transformers writes it (config.json + model.safetensors, its key names)."""
    from safetensors.torch import save_file

    cfg = model.config
    folder.mkdir(parents=True)
    hf = {
        "model_type": "gpt_neo", "vocab_size": cfg.vocab_size, "num_layers": cfg.layers, "hidden_size": cfg.width,
        "num_heads": cfg.heads, "max_position_embeddings": cfg.context, "window_size": cfg.window_size,
        "attention_types": [[["global", "local"], max(1, cfg.layers // 2)]] if cfg.layers > 1 else [[["global"], 1]],
        "intermediate_size": cfg.mlp_dim, "layer_norm_epsilon": cfg.layer_norm_eps, "activation_function": "gelu_new",
    }
    (folder / "config.json").write_text(json.dumps(hf))
    sd = {}
    for k, v in model.state_dict().items():
        sd["transformer." + k.replace(".attn.", ".attn.attention.")] = v.contiguous()
    save_file(sd, str(folder / "model.safetensors"))


def test_transformers_checkpoint_dir(tiny, tmp_path):
    from lcfast.model.checkpoint import load_run

    model, _ = load_run(tiny["run"], 2)
    hf = tmp_path / "hf-model"
    _save_as_transformers(model, hf)
    with pytest.raises(UsageError, match="--data"):
        collect(hf, opts=CollectOptions(**OPTS), progress=False)
    (s,) = collect(hf, data=tiny["data"], opts=CollectOptions(**OPTS), progress=False)
    assert s["source"]["kind"] == "hf" and s["checkpoint"] == "model"
    assert (hf / "collect" / "model" / "collect.json").is_file()
    ref = collect(tiny["run"], out=tmp_path / "ref", opts=CollectOptions(**OPTS), progress=False)[0]
    a = _tensors(hf / "collect" / "model" / "train_stats.safetensors")
    b = _tensors(tmp_path / "ref" / "train_stats.safetensors")
    assert torch.equal(a["counts"], b["counts"])
    torch.testing.assert_close(a["s1"], b["s1"])
    assert s["val_pass"]["loss"] == pytest.approx(ref["val_pass"]["loss"], rel=1e-6)


def test_cli_collect_and_errors(tiny, tmp_path):
    code, err = cli(["collect", tmp_path / "nope", "--no-progress"])
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    code, err = cli(["collect", tiny["run"], "--checkpoint", "7", "--no-progress"])
    assert code == 2 and "--checkpoint" in err and len(err.strip().splitlines()) == 1
    code, err = cli(["collect", tiny["run"], "--batch-size", "0", "--out", tmp_path / "x", "--no-progress"])
    assert code == 2 and "--batch-size" in err
    # vocab mismatch: shards of another tokenizer (vocab 320) for a model of vocab 300
    other = make_tiny(tiny["root"], vocab=320, epochs=1, name="run320")
    code, err = cli(["collect", tiny["run"], "--data", other["data"], "--out", tmp_path / "x", "--no-progress"])
    assert code == 1 and "vocab" in err and "train.lcshard" in err and len(err.strip().splitlines()) == 1
    # an empty val shard
    empty = tmp_path / "empty"
    shutil.copytree(tiny["data"], empty)
    _write_empty_shard(tiny["data"] / "val.lcshard", empty / "val.lcshard")
    code, err = cli(["collect", tiny["run"], "--data", empty, "--out", tmp_path / "y", "--no-progress"])
    assert code == 1 and "val.lcshard" in err and "empty" in err.lower() and len(err.strip().splitlines()) == 1
    # success, machine-readable summary
    code, _ = cli(["collect", tiny["run"], "--out", tmp_path / "ok", "--no-progress", "--batch-size", "8"])
    assert code == 0 and json.loads((tmp_path / "ok" / "collect.json").read_text())["passes"]["train"]["tokens"] > 0


def _write_empty_shard(like: Path, path: Path):
    """A valid shard with the tokenizer of `like` and no tokens."""
    from lcfast.data.shards import TokenShard, write_shard

    ref = TokenShard(str(like))
    write_shard(str(path), [], vocab_size=ref.vocab_size, tokenizer_fingerprint=ref.tokenizer_fingerprint)
