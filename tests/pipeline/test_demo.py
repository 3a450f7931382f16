"""lcfast demo on a miniature profile (in process): every stage, the report with the Spearman
verdict, reuse of finished steps on a rerun, and CLI usage errors. The real --quick / default
profiles are timed by hand (see demo.json of a run) — far too long for the test suite."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lcfast.pipeline.demo import FULL, QUICK, DemoProfile, findings, run_demo

from helpers import cli

pytestmark = pytest.mark.usefixtures("one_thread")

MINI = DemoProfile(name="mini", n_stories=60, seed=0, vocab=300, val_fraction=0.2, context=16, batch_size=8, lr=3e-3,
                   layers=(1,), widths=(8, 16), epochs=(1, 2), steps_per_epoch=4, collect_batch=16,
                   track_training="all", eval_tokens=1024)


def test_demo_mini_and_rerun(tmp_path):
    out = tmp_path / "demo"
    s = run_demo(out, profile=MINI, device="cpu", progress=False, workers=1)
    rep = (out / "report.md").read_text()
    assert "Spearman ρ(val_loss, nc1_cdnv)" in rep and "## Correlation with `val_loss`" in rep
    assert ("the paper's direction" in rep) or ("NOT the paper's direction" in rep) or ("undefined" in rep)
    df = pd.read_csv(out / "measurements.csv")
    assert len(df) == 4 and sorted(df["model"]) == ["L1_W16_E1_S0", "L1_W16_E2_S0", "L1_W8_E1_S0", "L1_W8_E2_S0"]
    # every epoch of the 2-epoch runs is measured: NC over training
    over = pd.read_csv(out / "measurements_over_training.csv")
    assert len(over) == 6 and set(over[over["model"] == "L1_W16_E2_S0"]["epochs"]) == {1, 2}
    assert (out / "measure" / "per_token").is_dir() and list((out / "analysis").rglob("*.png"))
    d = json.loads((out / "demo.json").read_text())
    assert set(d["timings_s"]) >= {"corpus", "tokenize", "train", "collect", "measure", "analyze", "report", "total"}
    assert d["speed"]["collect_tokens_per_s"] > 0 and len(d["speed"]["train_tokens_per_s"]) == 4
    assert d["findings"]["spearman_val_loss_cdnv"] == s["findings"]["spearman_val_loss_cdnv"]
    # every figure written is linked; a glossary; which plots and why; nothing internal
    pngs = {p.relative_to(out).as_posix() for p in out.glob("analysis*/*.png")}
    links = {ln[ln.index("](") + 2 : -1] for ln in rep.splitlines() if ln.startswith("![")}
    assert pngs and pngs == links and any(p.startswith("analysis_over_training/epochs_") for p in pngs)
    # the per-class view: context entropy against per-class variability, said in words, its plot linked
    assert (out / "measure" / "per_class.parquet").is_file() and "## Which classes can collapse" in rep
    assert "analysis/per_class_variability.png" in pngs and d["per_class"]["lines"]
    assert all(line.split()[0] in rep for line in d["per_class"]["lines"])
    assert "## Glossary" in rep and "The scatter plots show" in rep and "target ≤" not in rep and "DESIGN" not in rep
    # every model trained with --track-nc: its curve over training, the exact checkpoints on it
    for m in df["model"]:
        track = pd.read_csv(out / "work" / "mini" / "runs" / m / "nc_track.csv")
        assert list(track["step"]) == list(range(4, 4 * int(m[-4]) + 1, 4))  # (steps_per_epoch 4 < track_every 10)
    assert "epochs_nc1_cdnv.png" in {p.rsplit("/", 1)[-1] for p in d["plots"]}
    assert "tracked during training" in rep.lower() and "Tracked vs exact (collect)" in rep
    # a rerun reuses corpus, shards, runs and collections
    again = run_demo(out, profile=MINI, device="cpu", progress=False, workers=1)
    assert all(again["reused"].values()), again["reused"]
    assert again["findings"] == s["findings"]


def test_demo_over_training_plots_from_tracking_alone(tmp_path):
    """Only the last checkpoints collected (as --quick): the over-training figures come from the
    tracked curves, with the one exact point of each run on its curve."""
    from dataclasses import replace

    out = tmp_path / "demo"
    prof = replace(MINI, name="mini_last", track_training="none", track_every=2)
    s = run_demo(out, profile=prof, device="cpu", progress=False, workers=1)
    assert not (out / "measurements_over_training.csv").exists()
    names = {p.rsplit("/", 1)[-1] for p in s["plots"]}
    assert {"epochs_nc1_cdnv.png", "epochs_nc4_agreement.png"} <= names
    track = pd.read_csv(out / "work" / "mini_last" / "runs" / "L1_W8_E2_S0" / "nc_track.csv")
    assert list(track["step"]) == [2, 4, 6, 8] and list(track["epoch"]) == [0.5, 1.0, 1.5, 2.0]
    assert (out / "analysis_over_training" / "epochs_nc1_cdnv.png").read_bytes()[:4] == b"\x89PNG"


def test_findings_says_when_direction_does_not_match():
    rows = pd.DataFrame({"model": list("abcd"), "n_params": [1, 2, 3, 4], "epochs": [1, 1, 2, 2],
                         "val_loss": [4.0, 3.0, 2.0, 1.0], "nc1_cdnv": [1.0, 2.0, 3.0, 4.0],
                         "nc4_agreement": [0.1, 0.2, 0.3, 0.4]})
    notes, facts = findings(rows)
    assert facts["spearman_val_loss_cdnv"] == pytest.approx(-1.0) and facts["direction_matches_paper"] is False
    assert any("NOT the paper's direction" in n for n in notes)
    rows["nc1_cdnv"] = rows["nc1_cdnv"][::-1].to_numpy()
    notes, facts = findings(rows)
    assert facts["direction_matches_paper"] is True


def test_profiles_and_cli_errors(tmp_path):
    for p in (QUICK, FULL):  # at least 4 models of different size / training
        assert len(p.layers) * len(p.widths) * len(p.epochs) >= 4 and len(p.widths) >= 2 and len(p.epochs) >= 2
        assert 2048 <= p.vocab <= 4096
    f = tmp_path / "file"
    f.write_text("x")
    code, err = cli(["demo", "--out", f])
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1
    code, err = cli(["demo", "--device", "tpu", "--out", tmp_path / "d"])
    assert code == 2 and "--device" in err


def test_every_glossary_entry_reads_on_its_own():
    """A reader looks one column up: no entry may lean on the entry before it ("those cosines",
    "that energy")."""
    import re

    from lcfast.pipeline.report import GLOSSARY

    leaning = {k: what for k, (what, _) in GLOSSARY.items()
               if re.search(r"\b(th(ose|at|ese)|the above|the same|likewise)\b(?! (of|a|the|the model)\b)", what)}
    assert leaning == {}
