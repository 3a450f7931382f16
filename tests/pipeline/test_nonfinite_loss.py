"""A non-finite training loss stops `lcfast train`: exit 1, one line naming the step and --lr, and
the last good checkpoint is kept byte for byte (a NaN model is never saved). Under DDP all ranks
agree on the stop (docs/bad-input.md, "Numbers at the edges")."""

from __future__ import annotations

import os
import re
import sys

import pytest
import torch

from lcfast.cli.app import main

from helpers import cli, console, snapshot, torchrun

TRAIN = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "8", "--window", "8", "--batch-size", "4",
         "--steps-per-epoch", "2", "--eval-tokens", "64", "--device", "cpu", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_huge_lr_stops_with_exit_1_and_one_line(tmp_path, tiny_shards):
    """The real console script: --lr 1e30 makes the loss NaN at the second step (the first update
    throws the weights to ~1e30); the run stops there, before any checkpoint is written."""
    r = console(["train", "--data", tiny_shards, "--out", tmp_path / "run", *TRAIN, "--lr", "1e30"], env=os.environ)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert re.fullmatch(r"lcfast: error: loss is (NaN|inf) at step 2; lower --lr \(now 1e\+30\) and train into a "
                        r"new --out; no checkpoint was written", lines[0]), lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
    assert "val_loss" not in r.stdout


class _PoisonedF:
    """torch.nn.functional for lcfast.pipeline.train whose training loss (reduction='mean') turns NaN
    from the `after`-th call on; evaluation (reduction='sum') is untouched."""

    def __init__(self, after: int):
        import torch.nn.functional as F

        self._F, self.after, self.calls = F, after, 0

    def __getattr__(self, name):
        return getattr(self._F, name)

    def cross_entropy(self, *a, **kw):
        loss = self._F.cross_entropy(*a, **kw)
        if kw.get("reduction", "mean") == "mean":
            self.calls += 1
            if self.calls > self.after:
                return loss * float("nan")
        return loss


def test_nan_in_a_later_epoch_keeps_the_last_good_checkpoint(tmp_path, tiny_shards, monkeypatch):
    import lcfast.pipeline.train as tr

    run = tmp_path / "run"
    args = ["train", "--data", tiny_shards, "--out", run, *TRAIN, "--epochs", "3"]
    monkeypatch.setattr(tr, "F", _PoisonedF(after=2))  # epoch 1 (steps 1-2) is good, step 3 is NaN
    code, err = cli(args)
    assert code == 1, err
    ck = run / "checkpoints" / "epoch_1"
    assert err.strip() == (f"lcfast: error: loss is NaN at step 3; lower --lr (now 0.001) and train into a new --out; "
                           f"{ck} (the last good checkpoint) is kept")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_1"]  # no NaN epoch_2, no temporaries
    assert (ck / "state.safetensors").is_file()  # the resume point is intact
    before = snapshot(run, dirs=True)
    from lcfast.io import load_tensors

    weights, _ = load_tensors(ck / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())

    # resuming hits the same NaN (every training step poisoned now): stops again, nothing changes
    monkeypatch.setattr(tr, "F", _PoisonedF(after=0))
    code, err2 = cli(args)
    assert code == 1 and "loss is NaN at step 3;" in err2 and "epoch_1 (the last good checkpoint) is kept" in err2
    assert snapshot(run, dirs=True) == before  # byte-identical: config, metrics, the epoch_1 checkpoint


def test_val_loss_nan_is_caught_before_the_checkpoint(tmp_path, tiny_shards):
    """One step at --lr 1e30: the training loss of that step is still finite, the model it leaves
    is not — the evaluation notices and the epoch's checkpoint is not written."""
    code, err = cli(["train", "--data", tiny_shards, "--out", tmp_path / "run",
                         *TRAIN, "--steps-per-epoch", "1", "--lr", "1e30"])
    assert code == 1, err
    assert re.search(r"validation loss is (NaN|inf) after epoch 1 \(step 1\); lower --lr \(now 1e\+30\)", err), err
    assert not (tmp_path / "run" / "checkpoints" / "epoch_1").exists()


def ddp_worker(data: str, out: str) -> None:
    """torchrun entry: rank 1's own loss turns NaN at step 2 (rank 0's stays finite there). Without
    agreement rank 1 would stop alone and rank 0 would wait in the next all-reduce forever."""
    import lcfast.pipeline.train as tr

    if os.environ.get("RANK") == "1":
        tr.F = _PoisonedF(after=1)
    main(["train", "--data", data, "--out", out, *TRAIN])


def test_ddp_ranks_agree_to_stop(tmp_path, tiny_shards):
    r = torchrun([tiny_shards, tmp_path / "run"], timeout=240, script=__file__)
    assert r.returncode != 0
    # both ranks stop at the same step with the same line (the two may share a line of the pipe)
    want = ("lcfast: error: loss is NaN at step 2; lower --lr (now 0.001) and train into a new --out; "
            "no checkpoint was written")
    assert r.stderr.count("lcfast: error:") == 2 and r.stderr.count(want) == 2, r.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


if __name__ == "__main__":  # torchrun tests/pipeline/test_nonfinite_loss.py DATA OUT
    from helpers import exit_script

    exit_script(ddp_worker, *sys.argv[1:3])
