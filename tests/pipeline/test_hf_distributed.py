"""A transformers model collected with --layers under torchrun (gloo, 2 CPU processes): the ranks
take disjoint windows and their all-reduced statistics (every slot) equal a single-process run."""

from __future__ import annotations

import json
import subprocess

import pytest

pytest.importorskip("transformers")

from helpers import assert_same_stats, one_thread, save_hf_model, torchrun  # noqa: E402

ARGS = ["--device", "cpu", "--no-progress", "--batch-size", "4", "--context", "32", "--layers", "all", "--json"]


def test_torchrun_collect_of_a_transformers_model(tiny_shards, tiny_bpe_tokenizer, tmp_path):
    save_hf_model("gpt2", tmp_path / "gpt2", tiny_bpe_tokenizer, seed=7)
    common = [str(tmp_path / "gpt2"), "--data", str(tiny_shards), *ARGS]
    try:
        r = torchrun(["collect", *common, "--out", str(tmp_path / "ddp")], timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun collect timed out")
    assert r.returncode == 0, r.stderr[-3000:]
    from lcfast.cli.app import main

    with one_thread():
        main(["collect", *common, "--out", str(tmp_path / "one")])
    assert_same_stats(tmp_path / "one", tmp_path / "ddp")  # all slots: they share one ClassStats
    s = json.loads((tmp_path / "ddp" / "collect.json").read_text())
    assert s["world_size"] == 2 and s["layout"]["slots"] == ["head", 0, 1]
