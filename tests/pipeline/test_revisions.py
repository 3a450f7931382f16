"""A training history from the local Hugging Face cache: `hf:ORG/NAME@REV` and `collect --revisions`.

The cache is built here, as huggingface_hub lays it out (blobs/, snapshots/<commit>/ linking into
them, refs/<revision>): a tiny random GPT-NeoX (Pythia's architecture, padded vocabulary) at
revisions step0, step1000, step2000 (each its own weights), main → step2000's commit, and a bare
snapshot that no ref names; HF_HUB_CACHE points at it and HF_HUB_OFFLINE=1.

- `@REV` loads that revision's weights (by ref, full commit, unique prefix; an ambiguous prefix refused);
- a sweep (`--revisions all`, with `--layers all`) equals collecting each revision on its own:
  the statistics and measure's metrics are identical; rows carry `revision` and `step`;
- an interrupted sweep resumes at the revision it was on, skipping those done (not reloaded);
- a revision not in the cache is a one-line error naming those that are, through the console script;
- `lcfast analyze` plots each metric against step and, per step, against depth.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")

from lcfast.pipeline.collect import CollectOptions, collect  # noqa: E402

from helpers import (  # noqa: E402
    Killed,
    assert_same_stats,
    build_hf_model,
    child_env,
    cli,
    console,
    save_hub_model,
    tokenizer_vocab,
)

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = "EleutherAI/pythia-tiny"
SEEDS = {"step0": 0, "step1000": 1, "step2000": 2}
BARE = {"orphan": 7}  # a snapshot no ref names (listed by its commit)
#: two commits sharing the prefix "abcd" (an ambiguous prefix), the others hashes of their names
COMMITS = {"step1000": "abcd" + "1" * 36, "orphan": "abcd" + "2" * 36}
T = 32
COLLECT = ["--device", "cpu", "--no-progress", "--context", str(T), "--max-tokens", "1536", "--batch-size", "8"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_bpe_tokenizer):
    """{cache, commits}: the local hub cache of REPO."""
    cache = tmp_path_factory.mktemp("revisions") / "hub"
    commits = save_hub_model(cache, REPO, "gpt_neox", tiny_bpe_tokenizer, SEEDS, refs={"main": "step2000"},
                             commits=COMMITS)
    bare = save_hub_model(cache, REPO, "gpt_neox", tiny_bpe_tokenizer, BARE, commits=COMMITS)
    (cache / f"models--{REPO.replace('/', '--')}" / "refs" / "orphan").unlink()  # only its snapshot stays
    return {"cache": cache, "commits": {**commits, **bare}}


@pytest.fixture(autouse=True)
def _env(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _head(seed: int, vocab: int) -> torch.Tensor:
    return build_hf_model("gpt_neox", vocab, seed).get_output_embeddings().weight.detach()


def test_at_revision_loads_its_weights(hub, tiny_bpe_tokenizer):
    import lcfast
    from lcfast.errors import UsageError
    from lcfast.hub import cached_revisions
    from lcfast.model.sources import resolve_sources

    vocab = tokenizer_vocab(tiny_bpe_tokenizer)
    c = hub["commits"]
    for spec, seed in [("@step0", 0), ("@step1000", 1), ("@step2000", 2), ("@main", 2), ("", 2),
                       (f"@{c['step0']}", 0), (f"@{c['step1000'][:12]}", 1), (f"@{c['orphan'][:6]}", 7)]:
        model = lcfast.load_model(f"hf:{REPO}{spec}")
        assert torch.equal(model.lm_head_weight.detach(), _head(seed, vocab)), spec
    # names: a ref as asked; a commit under the stepN ref that points to it; a bare commit by its hash
    (s1,) = resolve_sources(f"hf:{REPO}@{c['step1000'][:8]}", data=".")
    assert (s1.revision, s1.commit, s1.checkpoint) == ("step1000", c["step1000"], "step1000")
    (sm,) = resolve_sources(f"hf:{REPO}@main", data=".")
    assert (sm.revision, sm.commit) == ("main", c["step2000"])
    (plain,) = resolve_sources(f"hf:{REPO}", data=".")
    assert (plain.revision, plain.checkpoint) == ("main", "model")  # plain hf:ORG/NAME: as before revisions
    with pytest.raises(UsageError, match="ambiguous: the prefix of 2 cached commits"):
        resolve_sources(f"hf:{REPO}@abcd", data=".")
    # one per commit, steps in order (main is step2000's commit), the bare snapshot last
    assert [r.name for r in cached_revisions(REPO)] == ["step0", "step1000", "step2000", c["orphan"]]
    assert cached_revisions(REPO)[2].refs == ("main", "step2000")


def test_cache_reads_as_the_hub_client_reads_it(hub):
    """The test cache is what huggingface_hub itself reads as one (its scanner and its cache lookup,
    offline), and lcfast resolves every revision to the snapshot the hub client gives."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from lcfast.hub import cached_revisions, resolve_revision

    info = huggingface_hub.scan_cache_dir(hub["cache"])
    (repo,) = [r for r in info.repos if r.repo_id == REPO]
    theirs = {r.commit_hash: (sorted(r.refs), Path(r.snapshot_path)) for r in repo.revisions}
    ours = {r.commit: (list(r.refs), r.path) for r in cached_revisions(REPO)}
    assert ours == theirs
    for rev in ["step0", "step1000", "step2000", "main", hub["commits"]["orphan"]]:
        got = huggingface_hub.try_to_load_from_cache(REPO, "config.json", cache_dir=hub["cache"], revision=rev)
        assert isinstance(got, str) and Path(got).parent == resolve_revision(REPO, rev).path, rev


def _measure(coll: Path, out: Path) -> pd.DataFrame:
    code, err = cli(["measure", coll, "--out", out, "--no-progress", "--context-orders", "0"])
    assert code == 0, err
    return pd.read_csv(out / "measurements.csv")


def test_sweep_equals_each_revision_alone(hub, tiny_shards, tmp_path):
    """--revisions step0,step1000,step2000 (with --layers all) = each @REV collected on its own:
    identical statistics and identical metrics, rows with revision and step; analyze plots them."""
    revs = list(SEEDS)
    code, err = cli(["collect", f"hf:{REPO}", "--revisions", ",".join(revs), "--data", tiny_shards,
                     "--out", tmp_path / "sweep", "--layers", "all", *COLLECT])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == revs
    for rev in revs:
        code, err = cli(["collect", f"hf:{REPO}@{rev}", "--data", tiny_shards, "--out", tmp_path / "alone" / rev,
                         "--layers", "all", *COLLECT])
        assert code == 0, err
        assert_same_stats(tmp_path / "alone" / rev, tmp_path / "sweep" / rev)
        s = json.loads((tmp_path / "sweep" / rev / "collect.json").read_text())
        assert (s["checkpoint"], s["revision"], s["commit"], s["step"]) == \
            (rev, rev, hub["commits"][rev], int(rev[4:]))
    a = _measure(tmp_path / "sweep", tmp_path / "m_sweep")
    b = _measure(tmp_path / "alone", tmp_path / "m_alone")
    assert list(a["revision"].unique()) == revs and list(a["step"].unique()) == [0, 1000, 2000]
    assert list(a.columns[:5]) == ["model", "checkpoint", "layer", "revision", "step"]
    metrics = [c for c in a.columns if c.startswith(("nc", "gnc")) and a[c].notna().any()]  # (nc1_pinv: empty)
    assert len(metrics) > 10
    pd.testing.assert_frame_equal(a[["checkpoint", "layer", "step", *metrics]],
                                  b[["checkpoint", "layer", "step", *metrics]])
    assert (a[metrics].loc[a["step"] == 0].to_numpy() != a[metrics].loc[a["step"] == 2000].to_numpy()).any()
    # analyze: each metric against step (log x, step 0 on the linear part of a symlog axis) and
    # through depth, one line per step
    code, err = cli(["analyze", tmp_path / "m_sweep" / "measurements.csv", "--out", tmp_path / "an"])
    assert code == 0, err
    an = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert "steps_nc1_cdnv.png" in an["plots"] and "steps_val_loss.png" in an["plots"]
    assert "depth_nc1_cdnv.png" in an["plots"]
    assert not any(p.startswith("epochs_") for p in an["plots"])  # steps are not epochs
    assert any("symlog" in n for n in an["notes"]), an["notes"]


def test_interrupted_sweep_resumes_at_its_revision(hub, tiny_shards, tmp_path):
    """Killed in step1000's train pass: the rerun skips step0 (not reloaded, its files untouched),
    resumes step1000 from its saved state, collects step2000; the totals equal an uninterrupted
    sweep's."""
    opts = CollectOptions(device="cpu", context=T, max_tokens=1536, batch_size=8, save_every_windows=2)
    out = tmp_path / "sweep"

    def kill(kind, done, total):
        if kind == "train" and done < total and (out / "step1000" / "train_stats.safetensors").exists():
            raise Killed(f"{kind} {done}/{total}")

    with pytest.raises(Killed):
        collect(f"hf:{REPO}", revisions="all", data=tiny_shards, out=out, opts=opts, progress=False, on_save=kill)
    assert (out / "step0" / "collect.json").is_file() and not (out / "step1000" / "collect.json").exists()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "step0").iterdir()}

    import lcfast.pipeline.collect.run as pc

    loaded = []
    real = pc.load_source
    pc.load_source = lambda src, *a, **k: (loaded.append(src.revision), real(src, *a, **k))[1]
    try:
        res = collect(f"hf:{REPO}", revisions="all", data=tiny_shards, out=out, opts=opts, progress=False)
    finally:
        pc.load_source = real
    assert [r["checkpoint"] for r in res] == ["step0", "step1000", "step2000", hub["commits"]["orphan"]]
    assert res[0].get("skipped") and not res[1].get("skipped")
    assert res[1]["passes"]["train"]["resumed_from"] > 0
    assert loaded == ["step1000", "step2000", hub["commits"]["orphan"]]  # step0 not even loaded
    assert {p.name: p.stat().st_mtime_ns for p in (out / "step0").iterdir()} == before
    ref = collect(f"hf:{REPO}", revisions="all", data=tiny_shards, out=tmp_path / "ref", opts=opts, progress=False)
    assert len(ref) == 4
    for rev in ("step0", "step1000", "step2000"):
        assert_same_stats(tmp_path / "ref" / rev, out / rev)
    # other options: the done revision is not skipped (the ordinary path refuses its states)
    from lcfast.errors import DataError

    with pytest.raises(DataError, match="rerun with --restart"):
        collect(f"hf:{REPO}", revisions="step0", data=tiny_shards, out=out,
                opts=CollectOptions(device="cpu", context=T, max_tokens=1024, batch_size=8), progress=False)


@pytest.mark.parametrize("args", [["hf:{repo}@step1500"], ["hf:{repo}", "--revisions", "step0,step1500"]])
def test_missing_revision_through_the_console_script(hub, tiny_shards, tmp_path, args):
    env = child_env(HF_HUB_CACHE=str(hub["cache"]), HF_HUB_OFFLINE="1")
    r = console(["collect", *(a.format(repo=REPO) for a in args), "--data", tiny_shards, "--out", tmp_path / "c",
                 *COLLECT], env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert f"MODEL hf:{REPO}@step1500: no revision step1500 in the local Hugging Face cache" in lines[0]
    assert f"(cached: step0, step1000, step2000, {hub['commits']['orphan']})" in lines[0]
    assert f"huggingface-cli download {REPO} --revision step1500" in lines[0]
    assert not (tmp_path / "c").exists()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
