"""`lcfast export RUN --out DIR`: a transformers GPT-Neo folder that transformers loads with lcfast's
logits, and that lcfast collects exactly as it collects the run."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import cli, make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("export"), epochs=2)


def test_transformers_loads_the_export(run, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lcfast.model.checkpoint import load_run

    code, err = cli(["export", run["run"], "--out", tmp_path / "neo", "--checkpoint", "1"])
    assert code == 0, err
    assert {p.name for p in (tmp_path / "neo").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    ours, _ = load_run(run["run"], 1)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "neo").eval()
    assert type(hf).__name__ == "GPTNeoForCausalLM"
    T = ours.config.context
    x = torch.randint(0, ours.config.vocab_size, (3, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), rtol=0, atol=2e-5)
    assert (tmp_path / "neo" / "tokenizer.json").read_bytes() == (run["data"] / "tokenizer.json").read_bytes()


def test_export_is_measured_as_the_run(run, tmp_path):
    """collect of the export = collect of the run: same model fingerprint, identical statistics."""
    from lcfast.stats.classstats import ClassStats

    assert cli(["export", run["run"], "--out", tmp_path / "neo"])[0] == 0
    opts = ["--device", "cpu", "--no-progress", "--batch-size", "4"]
    assert cli(["collect", run["run"], "--out", tmp_path / "a", *opts])[0] == 0
    assert cli(["collect", tmp_path / "neo", "--data", run["data"], "--out", tmp_path / "b", *opts])[0] == 0
    sa, sb = (json.loads((tmp_path / d / "collect.json").read_text()) for d in "ab")
    assert sa["model_fingerprint"] == sb["model_fingerprint"] and sa["context"] == sb["context"]
    a, b = (ClassStats.load(tmp_path / d / "train_stats.safetensors") for d in "ab")
    assert torch.equal(a.counts, b.counts) and torch.equal(a.means, b.means) and torch.equal(a.variances, b.variances)
    assert sa["val_pass"] == sb["val_pass"]
    # measure gives the same metrics row
    assert cli(["measure", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "m", "--no-progress"])[0] == 0
    import pandas as pd

    df = pd.read_csv(tmp_path / "m" / "measurements.csv")
    for k in ("nc1_cdnv", "nc2_norm_cov", "gnc2_log_var", "nc3_dual_cos_mean", "nc4_agreement"):
        assert df[k].iloc[0] == df[k].iloc[1], k


def test_export_refuses_a_foreign_folder(run, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, err = cli(["export", run["run"], "--out", tmp_path / "busy"])
    assert code == 2 and "holds other files" in err and (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    # an earlier export is replaced
    assert cli(["export", run["run"], "--out", tmp_path / "neo", "--checkpoint", "1"])[0] == 0
    assert cli(["export", run["run"], "--out", tmp_path / "neo"])[0] == 0
    cfg = json.loads((tmp_path / "neo" / "config.json").read_text())
    assert cfg["lcfast_export"]["epoch"] == 2
