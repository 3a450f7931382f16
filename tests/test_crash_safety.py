"""Crash safety with real subprocesses killed by SIGKILL (LCFAST_TEST_KILL_AT: the process kills
itself at a save point, after the new content is written to its temporary file and before the
rename): the previous artifact survives, and a rerun ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lcfast import io as ckpt
from lcfast.errors import DataError
from lcfast.model.checkpoint import list_checkpoints
from lcfast.pipeline.train import train_run

from helpers import child_env, console, make_disk_full

TRAIN = dict(layers=1, width=16, heads=2, context=8, batch_size=4, lr=1e-2, weight_decay=0.1, seed=0,
             device="cpu", steps_per_epoch=2, eval_tokens=64, progress=False, window_size=8)


def _train_args(data: Path, out: Path, epochs: int) -> list[str]:
    t = TRAIN
    return ["train", "--data", str(data), "--out", str(out), "--layers", str(t["layers"]), "--width", str(t["width"]),
            "--heads", str(t["heads"]), "--context", str(t["context"]), "--window", str(t["window_size"]),
            "--batch-size", str(t["batch_size"]), "--lr", str(t["lr"]), "--seed", str(t["seed"]), "--device", "cpu",
            "--steps-per-epoch", str(t["steps_per_epoch"]), "--eval-tokens", str(t["eval_tokens"]),
            "--epochs", str(epochs), "--no-progress", "--json"]


pytestmark = pytest.mark.usefixtures("one_thread")


# -- the atomic writers -----------------------------------------------------------------------------
def _write_file_then_kill(path: Path, kill_at: str) -> subprocess.CompletedProcess:
    code = ("import sys; from lcfast.io import atomic_write_bytes; "
            "atomic_write_bytes(sys.argv[1], b'new content')")
    return subprocess.run([sys.executable, "-c", code, str(path)], env=child_env(LCFAST_TEST_KILL_AT=kill_at),
                          capture_output=True, text=True, timeout=60)


def test_kill_between_temp_write_and_rename_keeps_previous_file(tmp_path):
    f = tmp_path / "state.json"
    f.write_bytes(b"old content")
    r = _write_file_then_kill(f, "state.json")
    assert r.returncode == -signal.SIGKILL
    assert f.read_bytes() == b"old content"  # the previous file is intact ...
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".state.json.")]  # ... the temp file was complete



def test_kill_point_selects_by_name_and_count(monkeypatch):
    from lcfast import faults

    killed = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setattr(faults, "_hits", {})
    monkeypatch.setenv(faults.ENV, "train_*.safetensors@2")
    faults.kill_point("val_ncc.safetensors")
    faults.kill_point("train_stats.safetensors")
    assert killed == []
    faults.kill_point("train_exact.safetensors")
    assert killed == [signal.SIGKILL]
    monkeypatch.delenv(faults.ENV)
    faults.kill_point("train_stats.safetensors")
    assert killed == [signal.SIGKILL]


def test_classstats_save_killed_keeps_previous_state(tmp_path):
    from lcfast.stats.classstats import ClassStats

    st = ClassStats(5, 3)
    st.update(torch.randn(20, 3, dtype=torch.float64), torch.arange(20) % 5)
    p = tmp_path / "train_stats.safetensors"
    st.save(p, meta={"windows_done": "1"})
    before = p.read_bytes()
    code = ("import sys, torch; from lcfast.stats.classstats import ClassStats; "
            "s = ClassStats.load(sys.argv[1]); s.update(torch.ones(4, 3, dtype=torch.float64), torch.arange(4)); "
            "s.save(sys.argv[1], meta={'windows_done': '2'})")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60,
                       env=child_env(LCFAST_TEST_KILL_AT="train_stats.safetensors"))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert p.read_bytes() == before
    assert ClassStats.load(p).meta["windows_done"] == "1"


def test_disk_full_leaves_previous_file_and_one_line_error(tmp_path, monkeypatch):
    f = tmp_path / "metrics.jsonl"
    f.write_text("old\n")
    make_disk_full(monkeypatch)
    with pytest.raises(DataError) as ei:
        ckpt.atomic_write_text(f, "new\n")
    msg = str(ei.value)
    assert msg.startswith(str(f)) and "No space left on device" in msg and "\n" not in msg
    assert f.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # temp file removed
    with pytest.raises(DataError, match=r"epoch_3/model.safetensors: cannot write \(No space left"):
        with ckpt.atomic_dir(tmp_path / "epoch_3") as d:
            ckpt.atomic_write_bytes(d / "model.safetensors", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


# -- lcfast train killed by SIGKILL, then rerun ------------------------------------------------------
@pytest.mark.parametrize("kill_at", ["state.safetensors@2"])  # also works at "epoch_2" (the folder rename)
def test_train_sigkill_then_rerun_resumes_exactly(tiny_shards, tmp_path, kill_at):
    """Killed while writing the 2nd checkpoint (inside its temporary folder, writing the optimizer/RNG
    state): epoch 1 survives; the rerun resumes from it and ends bit-identical to an uninterrupted
    run — weights, AdamW moments, step counters and RNG state."""
    ref = tmp_path / "ref"
    train_run(tiny_shards, ref, epochs=3, **TRAIN)
    run = tmp_path / "run"
    r = console(_train_args(tiny_shards, run, 3), kill_at=kill_at)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert sorted(list_checkpoints(run)) == [1]
    assert (list_checkpoints(run)[1] / "state.safetensors").is_file()
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # the killed write's leftovers
    r = console(_train_args(tiny_shards, run, 3))
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"resumed_from_epoch": 1' in r.stdout
    assert sorted(list_checkpoints(run)) == [1, 2, 3]
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    for name in ("model.safetensors", "state.safetensors"):
        a, ma = ckpt.load_tensors(ref / "checkpoints" / "epoch_3" / name)
        b, mb = ckpt.load_tensors(run / "checkpoints" / "epoch_3" / name)
        assert a.keys() == b.keys() and "rng.cpu" in (a if name == "state.safetensors" else {"rng.cpu": 0})
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
        assert ma == mb
    strip = lambda t: [{k: v for k, v in __import__("json").loads(x).items() if k not in ("tokens_per_s", "elapsed")}  # noqa: E731
                       for x in t.splitlines()]
    assert strip((ref / "metrics.jsonl").read_text()) == strip((run / "metrics.jsonl").read_text())


# -- lcfast collect killed by SIGKILL, then rerun ----------------------------------------------------
COLLECT = ["--device", "cpu", "--no-progress", "--batch-size", "2", "--max-tokens", "400", "--save-every", "1e-9"]


@pytest.mark.parametrize("kill_at", ["train_stats.safetensors@3", "val_ncc.safetensors@2"])
def test_collect_sigkill_then_rerun_is_bit_identical(tiny_shards, tmp_path, kill_at):
    """Killed while saving its resume state (a save after every batch), in the train pass or in the
    val pass: the rerun resumes from the last good state and the final statistics are bit-identical
    to an uninterrupted run's."""
    from lcfast.cli.app import main
    from lcfast.stats.state_file import read_safetensors

    run = tmp_path / "run"
    train_run(tiny_shards, run, epochs=1, **TRAIN)
    try:
        main(["collect", str(run), "--out", str(tmp_path / "ref"), *COLLECT, "--json"])
    except SystemExit as e:
        assert e.code in (0, None)
    out = tmp_path / "killed"
    r = console(["collect", str(run), "--out", str(out), *COLLECT], kill_at=kill_at)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    state = out / kill_at.split("@")[0]
    assert state.is_file() and not (out / "collect.json").exists()
    meta = read_safetensors(state, "state")[1]
    assert 0 < int(meta["windows_done"]) < int(meta["n_windows"])  # killed mid-pass, after good saves
    r = console(["collect", str(run), "--out", str(out), *COLLECT])
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("train_stats.safetensors", "val_ncc.safetensors"):
        a, ma = read_safetensors(tmp_path / "ref" / name, "state")
        b, mb = read_safetensors(out / name, "state")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
        for k in ("windows_done", "n_windows", "model_fingerprint", "shard_fingerprint", "means_fingerprint"):
            assert ma.get(k) == mb.get(k), k
    import json

    sa = json.loads((tmp_path / "ref" / "collect.json").read_text())
    sb = json.loads((out / "collect.json").read_text())
    assert sa["val_pass"] == sb["val_pass"]
    assert sb["passes"]["train"]["resumed_from"] > 0 or sb["passes"]["val"]["resumed_from"] > 0
