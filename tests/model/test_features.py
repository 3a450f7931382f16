"""lcfast.load_model / lcfast.features (the Python API's model → features step): the same positions,
labels and head inputs as collect's train pass (its class statistics rebuilt from them), a lcfast run
and a transformers folder alike, max_tokens, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lcfast
from lcfast.errors import DataError, UsageError
from lcfast.pipeline.collect import CollectOptions, collect

from helpers import features_of, make_tiny, save_hf_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("features"), epochs=1)


def test_features_are_collects(tiny):
    """Every train position once, the obvious features, and collect's statistics rebuilt exactly."""
    shard = lcfast.TokenShard(str(tiny["data"] / "train.lcshard"))
    model = lcfast.load_model(tiny["run"])
    H, Y = lcfast.features(model, shard, batch_size=5)  # a batch size that does not divide the windows
    assert H.dtype == torch.float32 and Y.dtype == torch.int64 and H.shape == (shard.n_tokens - 1, 16)
    H0, Y0 = features_of(model, shard, model.config.context)
    assert torch.equal(Y, Y0)
    torch.testing.assert_close(H.double(), H0, rtol=1e-5, atol=1e-5)
    (s,) = collect(str(tiny["run"]), opts=CollectOptions(batch_size=8, device="cpu"), progress=False)
    from lcfast.stats.classstats import ClassStats

    st = ClassStats.load(str(tiny["run"] / "collect" / "epoch_1" / "train_stats.safetensors"))
    mine = ClassStats(n_classes=shard.vocab_size, dim=16)
    mine.update(H, Y)
    assert torch.equal(mine.counts, st.counts) and s["passes"]["train"]["tokens"] == len(Y)
    seen = st.counts > 0
    torch.testing.assert_close(mine.means[seen], st.means[seen], rtol=1e-5, atol=1e-6)


def test_max_tokens_path_arguments_and_measure(tiny):
    """A run path and a shard path work too; max_tokens takes whole windows (about N positions) drawn
    at random over the shard (collect's --max-tokens sample, lcfast.model.features.plan_windows);
    the result goes straight into measure_embeddings with the model's head (a Parameter)."""
    from lcfast.model.features import plan_windows

    T = lcfast.load_model(tiny["run"]).config.context
    shard = lcfast.TokenShard(str(tiny["data"] / "train.lcshard"))
    H, Y = lcfast.features(tiny["run"], tiny["data"] / "train.lcshard", max_tokens=3 * T - 1)
    plan = plan_windows(shard, T, 3 * T - 1)
    assert len(plan) == 3 and plan.ids.max() >= 3  # three windows, not the first three
    tok = torch.from_numpy(np.asarray(shard.tokens, dtype=np.int64))
    want = torch.cat([tok[k * T + 1 : k * T + T + 1] for k in plan.ids.tolist()])
    assert torch.equal(Y, want) and H.shape[0] == len(Y)
    model = lcfast.load_model(tiny["run"], checkpoint=1)
    Hv, Yv = lcfast.features(model, tiny["data"] / "val.lcshard", max_tokens=4 * T)
    m = lcfast.measure_embeddings(H, Y, W=model.lm_head_weight, H_val=Hv, Y_val=Yv)
    assert 0 <= m["nc4_agreement"] <= 1 and m["nc1_cdnv"] > 0


def test_transformers_folder(tiny, tmp_path):
    """A transformers model's head input (the hook) over the same windows; its context is its own."""
    pytest.importorskip("transformers")

    folder = tmp_path / "gpt2"
    hf = save_hf_model("gpt2", folder, tiny["data"] / "tokenizer.json")
    from lcfast.model.features import plan_windows

    shard = lcfast.TokenShard(str(tiny["data"] / "train.lcshard"))
    H, Y = lcfast.features(folder, shard, max_tokens=100)
    T = 64  # the tiny gpt2's n_positions
    ids = plan_windows(shard, T, 100).ids.tolist()
    assert len(ids) == 2 and len(Y) == 2 * T
    tok = torch.from_numpy(np.asarray(shard.tokens, dtype=np.int64))
    win = torch.stack([tok[k * T : k * T + T + 1] for k in ids])
    with torch.no_grad():
        out = hf(win[:, :-1], output_hidden_states=True)
    torch.testing.assert_close(H, out.hidden_states[-1].reshape(2 * T, -1), rtol=1e-5, atol=1e-5)
    assert torch.equal(Y, win[:, 1:].reshape(-1))


def test_errors(tiny, tmp_path):
    shard = tiny["data"] / "train.lcshard"
    with pytest.raises(UsageError, match="not 'all'"):
        lcfast.load_model(tiny["run"], checkpoint="all")
    with pytest.raises(UsageError, match="no checkpoint for epoch 7"):
        lcfast.load_model(tiny["run"], checkpoint=7)
    for kw in (dict(max_tokens=0), dict(batch_size=0), dict(context=-1)):
        with pytest.raises(UsageError, match=f"{next(iter(kw))} -?[0-9]+: must be an integer ≥ 1"):
            lcfast.features(tiny["run"], shard, **kw)
    small = make_tiny(tmp_path / "v", epochs=1, vocab=280)  # another vocabulary than the shard's
    with pytest.raises(DataError, match="vocab mismatch"):
        lcfast.features(small["run"], shard)
