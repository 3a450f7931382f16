"""Any transformers causal LM, measured at every depth: tiny random models of eight architectures
(built from configs here, saved with save_pretrained beside the test tokenizer) are collected with
`--layers all`, and everything is checked against features read independently from transformers:

- the head slot's class means = means of the input of `get_output_embeddings()` (a forward hook
  written here, over the same windows); every layer's = those of `hidden_states[i]`;
- W (and b) are the head module's own parameters;
- collect's val loss = transformers' own loss (its logits, soft-capping included) on the same windows;
- `lcfast measure` per-layer rows = `measure_embeddings` on the independent hidden states.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from lcfast.data.shards import TokenShard  # noqa: E402
from lcfast.pipeline.collect import CollectOptions, collect  # noqa: E402

from helpers import HF_ARCHS, build_hf_model, cli, make_docs, save_hf_model  # noqa: E402

T = 32
MAX_TOKENS = 2048
OPTS = dict(device="cpu", batch_size=16, max_tokens=MAX_TOKENS, context=T)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def windows(shard: TokenShard, n: int):
    """(x [n, T], y [n, T], valid [n, T]) exactly as collect reads them: the n windows of its
    --max-tokens sample (seed 0; lcfast.model.features.plan_windows), in shard order, each read on
    its own with the shard's own seq_windows."""
    from lcfast.model.features import plan_windows

    ids = plan_windows(shard, T, MAX_TOKENS).ids
    assert len(ids) == n
    parts = [shard.seq_windows(T, int(k), 1) for k in ids]
    win = torch.from_numpy(np.concatenate([w for w, _ in parts]).astype(np.int64))
    lengths = torch.from_numpy(np.concatenate([v for _, v in parts]).astype(np.int64))
    valid = torch.arange(T)[None, :] < (lengths[:, None] - 1)
    return win[:, :-1], win[:, 1:], valid


def n_windows(shard: TokenShard) -> int:
    return min(int(shard.n_seq_windows(T)), math.ceil(MAX_TOKENS / T))


def independent(model, x: torch.Tensor):
    """(head inputs, hidden_states tuple, logits) of a plain transformers forward, the head input
    taken by a forward hook on get_output_embeddings()."""
    got = {}
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: got.__setitem__("h", a[0]))
    try:
        with torch.no_grad():
            out = model(input_ids=x, output_hidden_states=True, use_cache=False)
    finally:
        hook.remove()
    return got["h"], out.hidden_states, out.logits


def class_means(H: torch.Tensor, Y: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force float64 per-class means [C, d] and counts [C]."""
    H = H.to(torch.float64)
    sums = torch.zeros(C, H.shape[1], dtype=torch.float64).index_add_(0, Y, H)
    n = torch.bincount(Y, minlength=C).to(torch.float64)
    return sums / n.clamp_min(1)[:, None], n


def slots_of(cdir: Path):
    from lcfast.io import load_tensors
    from lcfast.pipeline.collect.layers import SlotLayout
    from lcfast.stats.classstats import ClassStats

    s = json.loads((cdir / "collect.json").read_text())
    f = s["layout"]["classes_file"]
    ids = load_tensors(cdir / f)[0]["class_ids"] if f else None
    return s, SlotLayout.from_json(s["layout"], ids), ClassStats.load(cdir / "train_stats.safetensors")


@pytest.mark.parametrize("arch", sorted(HF_ARCHS))
def test_architecture_matches_transformers(arch, tmp_path, tiny_shards, tiny_bpe_tokenizer):
    model = save_hf_model(arch, tmp_path / arch, tiny_bpe_tokenizer, seed=1)
    (s,) = collect(tmp_path / arch, data=tiny_shards, out=tmp_path / "c", opts=CollectOptions(**OPTS, layers="all"),
                   progress=False)
    assert s["source"]["kind"] == "hf" and s["context"] == T
    L = model.config.get_text_config().num_hidden_layers
    s, layout, stats = slots_of(tmp_path / "c")
    C = model.get_output_embeddings().weight.shape[0]
    assert layout.n_classes == C == s["n_classes"]

    train = TokenShard(str(tiny_shards / "train.lcshard"))
    x, y, valid = windows(train, n_windows(train))
    h, hs, _ = independent(model, x)
    Y = y[valid]
    assert len(hs) == L + 1
    # the head input is transformers' last hidden state for every architecture here (the final norm
    # and OPT's projection are applied to hidden_states[L]); collect checked it and shares slot 0
    assert torch.equal(h, hs[L]) and layout.head_layer == L
    assert layout.slots == ["head", *range(L)]
    for j, slot in enumerate(layout.slots):
        feats = h if slot == "head" else hs[slot]
        mu, n = class_means(feats[valid], Y, C)
        st = layout.slot_stats(stats, j)
        assert st.dim == feats.shape[-1]
        assert torch.equal(st.counts, n.to(torch.int64))
        seen = n > 0
        # transformers' own forward: identical features; GPT-Neo runs on lcfast's fast path (float32 rounding)
        tol = 1e-9 if arch != "gpt_neo" else 2e-5
        torch.testing.assert_close(st.means[seen], mu[seen], rtol=tol, atol=tol,
                                   msg=lambda m: f"{arch} slot {slot}: {m}")  # noqa: B023 (called here)

    # W (and b) are the head's own parameters
    from lcfast.model.sources import ModelSource, load_source, model_head

    W, b = model_head(load_source(ModelSource("hf", tmp_path / arch, "model", None, tiny_shards,
                                              json.loads((tmp_path / arch / "config.json").read_text()))))
    head = model.get_output_embeddings()
    assert torch.equal(W, head.weight.detach())
    assert (b is None) == (getattr(head, "bias", None) is None)
    if b is not None:
        assert torch.equal(b, head.bias.detach())

    # collect's val loss = transformers' loss on the same windows
    val = TokenShard(str(tiny_shards / "val.lcshard"))
    xv, yv, vv = windows(val, n_windows(val))
    _, _, logits = independent(model, xv)
    nll = torch.nn.functional.cross_entropy(logits[vv].double(), yv[vv], reduction="sum")
    assert s["val_pass"]["positions"] == int(vv.sum())
    assert s["val_pass"]["loss"] == pytest.approx(float(nll) / int(vv.sum()), rel=1e-5)


def test_per_layer_metrics_match_hidden_states(tmp_path, tiny_shards, tiny_bpe_tokenizer):
    """`lcfast measure` rows of a --layers collection = the metrics of the hidden states read
    independently (measure_embeddings on them), NC3/NC4 only at the head."""
    from lcfast.metrics.embeddings import measure_embeddings
    from lcfast.pipeline.measure import measure

    model = save_hf_model("llama", tmp_path / "llama", tiny_bpe_tokenizer, seed=2)
    collect(tmp_path / "llama", data=tiny_shards, out=tmp_path / "c", opts=CollectOptions(**OPTS, layers="0,1,2"),
            progress=False)
    df = measure([tmp_path / "c"], tmp_path / "m", backend="torch", device="cpu", progress=False)
    assert list(df.columns[:3]) == ["model", "checkpoint", "layer"]
    assert list(df["layer"]) == [0, 1, 2] and list(df["head"]) == [False, False, True]
    train = TokenShard(str(tiny_shards / "train.lcshard"))
    x, y, valid = windows(train, n_windows(train))
    h, hs, _ = independent(model, x)
    W = model.get_output_embeddings().weight.detach()
    for i in (0, 1, 2):
        ref = measure_embeddings(hs[i][valid].double(), y[valid], W=W if i == 2 else None, backend="torch")
        row = df[df["layer"] == i].iloc[0]
        for k in ("nc1_cdnv", "nc1_trace_ratio", "nc2_norm_cov", "nc2_interference_mean", "gnc2_log_var"):
            assert row[k] == pytest.approx(ref[k], rel=1e-7), (i, k)
        if i == 2:
            assert row["nc3_dual_cos_mean"] == pytest.approx(ref["nc3_dual_cos_mean"], rel=1e-7)
            assert 0 <= row["nc4_agreement"] <= 1
        else:
            assert math.isnan(row["nc3_dual_cos_mean"]) and math.isnan(row["nc4_agreement"])
    # --exact: the second pass about each slot's means gives the population variances of every layer
    collect(tmp_path / "llama", data=tiny_shards, out=tmp_path / "cx",
            opts=CollectOptions(**OPTS, layers="0,2", exact=True), progress=False)
    from lcfast.stats.classstats import ClassStats

    sx = json.loads((tmp_path / "cx" / "collect.json").read_text())
    from lcfast.pipeline.collect.layers import SlotLayout

    lx = SlotLayout.from_json(sx["layout"])
    ex = ClassStats.load(tmp_path / "cx" / "train_exact.safetensors")
    for j, slot in enumerate(lx.slots):
        feats = (h if slot == "head" else hs[slot])[valid].double()
        mu, n = class_means(feats, y[valid], lx.n_classes)
        var = torch.zeros(lx.n_classes, dtype=torch.float64).index_add_(0, y[valid],
                                                                        ((feats - mu[y[valid]]) ** 2).sum(1))
        var = var / n.clamp_min(1)
        torch.testing.assert_close(lx.slot_stats(ex, j).variances, var, rtol=1e-9, atol=1e-12)
    # without --layers nothing changes: no layer column, the head row only
    collect(tmp_path / "llama", data=tiny_shards, out=tmp_path / "c0", opts=CollectOptions(**OPTS), progress=False)
    df0 = measure([tmp_path / "c0"], tmp_path / "m0", backend="torch", device="cpu", progress=False)
    assert "layer" not in df0.columns and len(df0) == 1
    assert df0.iloc[0]["nc1_cdnv"] == pytest.approx(df[df["layer"] == 2].iloc[0]["nc1_cdnv"], rel=1e-9)


def test_classes_top_k(tmp_path, tiny_shards, tiny_bpe_tokenizer):
    """--classes top:K: the K most frequent classes of the train shard, same means as without it;
    measure maps the per-token ids back to token ids."""
    import pandas as pd

    from lcfast.pipeline.measure import measure

    save_hf_model("gpt2", tmp_path / "g", tiny_bpe_tokenizer, seed=3)
    full = CollectOptions(**OPTS, layers="0")
    collect(tmp_path / "g", data=tiny_shards, out=tmp_path / "full", opts=full, progress=False)
    collect(tmp_path / "g", data=tiny_shards, out=tmp_path / "top",
            opts=CollectOptions(**OPTS, layers="0", classes="top:40"), progress=False)
    _, lf, sf = slots_of(tmp_path / "full")
    s, lt, st = slots_of(tmp_path / "top")
    from lcfast.io import load_tensors

    ids = load_tensors(tmp_path / "top" / "classes.safetensors")[0]["class_ids"]
    counts = torch.from_numpy(TokenShard(str(tiny_shards / "train.lcshard")).counts().astype(np.int64))
    assert ids.numel() == 40 and torch.equal(ids, torch.sort(torch.argsort(-counts, stable=True)[:40]).values)
    for j in range(2):
        a, b = lf.slot_stats(sf, j), lt.slot_stats(st, j)
        assert torch.equal(a.counts[ids], b.counts)
        torch.testing.assert_close(a.means[ids], b.means, rtol=1e-10, atol=1e-12)
    df = measure([tmp_path / "top"], tmp_path / "m", backend="torch", device="cpu", progress=False)
    head = df[df["head"]].iloc[0]
    assert head["classes"] == "top:40" and head["n_classes"] <= 40
    assert head["layer"] == 2 and list(df["layer"]) == [0, 2]  # the head is hidden_states[2], even unasked
    tab = pd.read_parquet(tmp_path / "m" / head["per_token"])
    assert set(tab["id"]) <= set(ids.tolist()) and (tab["n"].to_numpy() == counts_of(sf, lf, tab["id"])).all()
    # per_class.parquet: the kept classes under their token ids, beside every other label of the shard
    pc = pd.read_parquet(tmp_path / "m" / "per_class.parquet")
    assert pc["id"].is_unique and set(pc.loc[pc["kept"], "id"]) == set(tab["id"])
    assert int(pc["shard_count"].sum()) == TokenShard(str(tiny_shards / "train.lcshard")).n_tokens - 1
    assert (pc.set_index("id").loc[tab["id"], "n"].to_numpy() == tab["n"].to_numpy()).all()


def counts_of(stats, layout, ids) -> np.ndarray:
    return layout.slot_stats(stats, 0).counts[torch.as_tensor(np.array(ids, dtype=np.int64))].numpy()


def test_bfloat16_forward(tmp_path, tiny_shards, tiny_bpe_tokenizer):
    """--dtype bfloat16: the forward runs in bf16 (W is the bf16 head), the statistics in float64."""
    model = save_hf_model("qwen2", tmp_path / "q", tiny_bpe_tokenizer, seed=4)
    (s,) = collect(tmp_path / "q", data=tiny_shards, out=tmp_path / "c",
                   opts=CollectOptions(**OPTS, dtype="bfloat16"), progress=False)
    from lcfast.stats.classstats import ClassStats

    st = ClassStats.load(tmp_path / "c" / "train_stats.safetensors")
    assert s["options"]["dtype"] == "bfloat16" and st.means.dtype == torch.float64
    train = TokenShard(str(tiny_shards / "train.lcshard"))
    x, y, valid = windows(train, n_windows(train))
    # as a user loads it (model.to(bfloat16) would also round the float32 rotary buffers)
    from lcfast.model.hf import (
        _dtype_kwargs,  # `dtype` since transformers 4.56, `torch_dtype` before
        attention_kwargs,  # eager on torch < 2.5, as lcfast loads it
    )

    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "q", **_dtype_kwargs(transformers, torch.bfloat16), **attention_kwargs()).eval()
    h = independent(model, x)[0]
    assert h.dtype == torch.bfloat16
    mu, n = class_means(h[valid], y[valid], st.n_classes)
    seen = n > 0
    torch.testing.assert_close(st.means[seen], mu[seen], rtol=1e-9, atol=1e-9)


def test_shards_parts_merge_with_layers(tmp_path, tiny_shards, tiny_bpe_tokenizer):
    """--shard i/n + merge of a per-layer collection = the single-process one."""
    from lcfast.data.tokenize import tokenize_files
    from lcfast.stats.classstats import ClassStats

    save_hf_model("gpt_neox", tmp_path / "n", tiny_bpe_tokenizer, seed=5)
    small = tmp_path / "small"  # a few thousand tokens: --shard parts cannot be capped with --max-tokens
    tokenize_files([_corpus(tmp_path)], tiny_bpe_tokenizer, small, val_fraction=0.2)
    base = ["--data", str(small), "--device", "cpu", "--no-progress", "--context", str(T), "--layers", "all"]
    for args in ([str(tmp_path / "n"), "--out", str(tmp_path / "one")],
                 [str(tmp_path / "n"), "--out", str(tmp_path / "parts"), "--shard", "0/2"],
                 [str(tmp_path / "n"), "--out", str(tmp_path / "parts"), "--shard", "1/2"]):
        assert cli(["collect", *args, *base])[0] == 0
    assert cli(["merge", tmp_path / "parts"])[0] == 0
    a = ClassStats.load(tmp_path / "one" / "train_stats.safetensors")
    b = ClassStats.load(tmp_path / "parts" / "train_stats.safetensors")
    assert torch.equal(a.counts, b.counts)
    torch.testing.assert_close(a.means, b.means, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.variances, b.variances, rtol=1e-8, atol=1e-12)


def test_hub_cache_model(tmp_path, tiny_shards, tiny_bpe_tokenizer, monkeypatch, capsys):
    """hf:ORG/NAME resolves to its snapshot in the local hub cache (HF_HUB_CACHE), never downloads."""
    snap = tmp_path / "hub" / "models--someone--tiny-llama" / "snapshots" / "0123abcd"
    save_hf_model("llama", snap, tiny_bpe_tokenizer, seed=6)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert cli(["collect", "hf:someone/tiny-llama", "--data", tiny_shards, "--out", tmp_path / "c",
               "--device", "cpu", "--no-progress", "--context", T, "--max-tokens", 256, "--json"])[0] == 0
    s = json.loads((tmp_path / "c" / "collect.json").read_text())
    assert s["model"] == "someone--tiny-llama" and Path(s["source"]["path"]) == snap.resolve()
    # the tokenizer of a cached model, for lcfast tokenize
    from lcfast.data.tokenize import tokenize_files

    meta = tokenize_files([_corpus(tmp_path)], "hf:someone/tiny-llama", tmp_path / "d", val_fraction=0.2)
    assert meta["tokenizer_fingerprint"] == TokenShard(str(tiny_shards / "train.lcshard")).tokenizer_fingerprint
    shutil.rmtree(tmp_path / "hub")


def _corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text("\n\n".join(make_docs(40, seed=9)) + "\n", encoding="utf-8")
    return p


def test_default_context_is_capped():
    from lcfast.model.sources import ModelSource
    from lcfast.pipeline.collect import window_length

    src = ModelSource("hf", Path("m"), "model", None, Path("d"))
    assert window_length(None, 131072, src) == 2048
    assert window_length(None, 64, src) == 64
    assert window_length(100, 131072, src) == 100
    from lcfast.errors import UsageError

    with pytest.raises(UsageError, match="--context 65: longer"):
        window_length(65, 64, src)
    with pytest.raises(UsageError, match="pass --context"):
        window_length(None, None, src)


def test_sharded_safetensors_folder(tmp_path, tiny_shards, tiny_bpe_tokenizer):
    """A checkpoint saved in several safetensors shards (model.safetensors.index.json) collects like
    the single-file one."""
    from lcfast.stats.classstats import ClassStats

    model = save_hf_model("llama", tmp_path / "one", tiny_bpe_tokenizer, seed=8)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shutil.copyfile(tiny_bpe_tokenizer, tmp_path / "sharded" / "tokenizer.json")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    for name in ("one", "sharded"):
        collect(tmp_path / name, data=tiny_shards, out=tmp_path / f"c_{name}", opts=CollectOptions(**OPTS),
                progress=False)
    a, b = (ClassStats.load(tmp_path / f"c_{n}" / "train_stats.safetensors") for n in ("one", "sharded"))
    assert torch.equal(a.counts, b.counts) and torch.equal(a.means, b.means)


def test_paper_profile_on_layers_and_top_k(tmp_path, tiny_shards, tiny_bpe_tokenizer):
    """`--profile paper` on a --layers collection: the head row equals the paper row of a plain
    collection (hits/misses over all C means included); hidden layers carry no NC3/NC4 columns.
    With --classes top:K only K means exist, so the all-C NC4 is left empty, never guessed."""
    import pandas as pd

    from lcfast.pipeline.measure import measure

    save_hf_model("qwen2", tmp_path / "q", tiny_bpe_tokenizer, seed=4)
    collect(tmp_path / "q", data=tiny_shards, out=tmp_path / "lay", opts=CollectOptions(**OPTS, layers="all"),
            progress=False)
    collect(tmp_path / "q", data=tiny_shards, out=tmp_path / "plain", opts=CollectOptions(**OPTS), progress=False)
    lay = measure([tmp_path / "lay"], tmp_path / "ml", backend="torch", device="cpu", progress=False, profile="paper")
    plain = measure([tmp_path / "plain"], tmp_path / "mp", backend="torch", device="cpu", progress=False,
                    profile="paper")
    head, ref = lay[lay["head"]].iloc[0], plain.iloc[0]
    assert int(ref["hits"]) + int(ref["misses"]) > 0
    for k in ("cdnv", "norms_mean", "interfere_mean", "dual_error", "hits", "misses"):
        assert head[k] == pytest.approx(ref[k], rel=1e-9), k
    hidden = lay[~lay["head"]].iloc[0]
    assert pd.isna(hidden["hits"]) and pd.isna(hidden["dual_error"]) and hidden["cdnv"] > 0
    collect(tmp_path / "q", data=tiny_shards, out=tmp_path / "top",
            opts=CollectOptions(**OPTS, layers="0", classes="top:40"), progress=False)
    top = measure([tmp_path / "top"], tmp_path / "mt", backend="torch", device="cpu", progress=False, profile="paper")
    assert pd.isna(top[top["head"]].iloc[0]["hits"]) and top[top["head"]].iloc[0]["cdnv"] > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_causality_probe(dtype):
    """The direct check collect runs on its first window: a causal model's earlier head inputs do
    not move when the last token changes (bitwise, in every dtype); a bidirectional BERT's all move,
    by more than the dtype's tolerance, though a random tiny BERT moves them by ~1e-3 only."""
    from lcfast.errors import DataError
    from lcfast.model.hf import HFCausalLM, check_causal

    x = torch.randint(0, 300, (40,), generator=torch.Generator().manual_seed(0))
    for arch in ("llama", "gpt2", "gemma2"):
        model = HFCausalLM(build_hf_model(arch, 300).to(dtype), Path(arch), {})
        check_causal(model, x, 300, "a window")
    torch.manual_seed(0)
    bert = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=300, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64)).eval()
    lm = transformers.BertLMHeadModel(bert.config)
    lm.load_state_dict(bert.state_dict(), strict=False)
    model = HFCausalLM(lm.eval().to(dtype), Path("bert"), {})
    with pytest.raises(DataError, match=r"bert: BertLMHeadModel is not causal: changing token 15 of a window moved "
                                        r"the LM-head input at 1[0-5] of the 15 earlier positions"):
        check_causal(model, x, 300, "a window")
