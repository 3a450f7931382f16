"""torch.distributed under torchrun (gloo, 2 processes, CPU) on tiny data: the distributed results
equal the single-process ones, and rank 0 alone writes the run folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lcfast.model.checkpoint import list_checkpoints, load_run
from lcfast.pipeline.train import train_run

from helpers import assert_same_stats, child_env, torchrun

TRAIN = dict(layers=1, width=16, heads=2, context=8, batch_size=4, lr=1e-2, weight_decay=0.1, seed=0,
             device="cpu", steps_per_epoch=3, eval_tokens=200, progress=False, window_size=8)


def _train_args(data: Path, out: Path, epochs: int) -> list[str]:
    t = TRAIN
    return ["train", "--data", str(data), "--out", str(out), "--layers", str(t["layers"]), "--width", str(t["width"]),
            "--heads", str(t["heads"]), "--context", str(t["context"]), "--window", str(t["window_size"]),
            "--batch-size", str(t["batch_size"]), "--lr", str(t["lr"]), "--weight-decay", str(t["weight_decay"]),
            "--seed", str(t["seed"]), "--device", "cpu", "--steps-per-epoch", str(t["steps_per_epoch"]),
            "--eval-tokens", str(t["eval_tokens"]), "--epochs", str(epochs), "--no-progress", "--json"]


pytestmark = pytest.mark.usefixtures("one_thread")


COLLECT = ["--device", "cpu", "--no-progress", "--batch-size", "3", "--json"]


def worker(data: str, run: str, coll: str) -> None:
    """One torchrun job, two commands (saves a second interpreter start per rank): `lcfast train` then
    `lcfast collect` of the run it trained, in the process group this worker starts."""
    import torch.distributed as tdist

    from lcfast import dist
    from lcfast.cli.app import main

    tdist.init_process_group("gloo")  # one group for both commands (they reuse an existing group)
    try:
        main(_train_args(Path(data), Path(run), 2))
        main(["collect", run, "--out", coll, *COLLECT])
    except BaseException:
        dist.close(ok=False)
        raise
    dist.close()  # barrier, destroy_process_group, the group kept from its destructor (lcfast.dist: Teardown)


def test_ddp_train_and_collect_equal_single_process(tiny_shards, tmp_path):
    single = train_run(tiny_shards, tmp_path / "single", epochs=2, **TRAIN)
    run, coll = tmp_path / "ddp", tmp_path / "ddp_coll"
    r = torchrun([tiny_shards, run, coll], timeout=180, env=child_env(LCFAST_DEBUG="1"), script=__file__)
    assert r.returncode == 0, r.stderr[-3000:]
    # -- train: DDP over 2 gloo ranks = the single-process run (global batch split between the ranks)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["runtime"]["world_size"] == 2 and cfg["runtime"]["backend"] == "gloo"
    cfg1 = json.loads((tmp_path / "single" / "config.json").read_text())
    assert cfg["train"] == cfg1["train"] and cfg["model"] == cfg1["model"]
    # rank 0 alone wrote: one metrics line per epoch, no leftovers of concurrent writers
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl"]
    assert sorted(list_checkpoints(run)) == [1, 2]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    a, _ = load_run(tmp_path / "single")
    b, _ = load_run(run)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(vb, va, rtol=1e-4, atol=1e-5, msg=k)
    for k in ("train_loss", "val_loss", "val_acc"):
        assert lines[-1][k] == pytest.approx(single[k], rel=1e-4, abs=1e-6), k
    assert lines[-1]["val_tokens"] == single["val_tokens"]
    # -- collect: 2 ranks with disjoint windows, all-reduced = single-process collect of the same model
    assert sorted(p.name for p in coll.iterdir()) == ["collect.json", "train_stats.safetensors", "val_ncc.safetensors"]
    from lcfast.cli.app import main

    main(["collect", str(run), "--out", str(tmp_path / "single_coll"), *COLLECT])
    assert_same_stats(tmp_path / "single_coll", coll)
    assert json.loads((coll / "collect.json").read_text())["world_size"] == 2


def test_global_batch_must_split_evenly(tiny_shards, tmp_path, monkeypatch):
    """--batch-size is the global batch: with 2 processes an odd one is refused before anything is
    written (checked before any collective, so a fake 2-process context suffices here)."""
    from lcfast import dist
    from lcfast.errors import UsageError

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "init", lambda device=None, **kw: dist.Context(rank=0, world=2))
    with pytest.raises(UsageError, match="--batch-size 3 must be divisible by the number of processes"):
        train_run(tiny_shards, tmp_path / "odd", epochs=1, **{**TRAIN, "batch_size": 3})
    assert not (tmp_path / "odd").exists()


def test_rank_slice_partitions():
    from lcfast.dist import rank_slice

    for n in (0, 1, 5, 8, 13):
        for world in (1, 2, 3, 5):
            parts = [rank_slice(n, r, world) for r in range(world)]
            got = [i for s, c in parts for i in range(s, s + c)]
            assert got == list(range(n))
            assert max(c for _, c in parts) - min(c for _, c in parts) <= 1


def test_shard_collect_and_merge_equal_single_process(tiny_shards, tmp_path):
    """Array-job collection without a process group: `collect --shard i/n` per part, `lcfast merge`,
    pass by pass; the merged statistics equal the single-process collection's."""
    from lcfast.cli.app import main

    def cli(*args):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    run, parts = tmp_path / "run", tmp_path / "parts"
    train_run(tiny_shards, run, epochs=1, **TRAIN)
    args = ["--device", "cpu", "--no-progress", "--batch-size", "3"]
    assert cli("collect", run, "--out", tmp_path / "single", *args) == 0
    for i in (0, 1):
        assert cli("collect", run, "--out", parts, "--shard", f"{i}/2", *args) == 0
    assert sorted(p.name for p in parts.iterdir()) == ["train_stats.rank0of2.safetensors",
                                                       "train_stats.rank1of2.safetensors"]
    assert cli("merge", parts) == 0  # train pass merged: the val pass can run as parts now
    for i in (1, 0):
        assert cli("collect", run, "--out", parts, "--shard", f"{i}/2", *args) == 0
    assert not (parts / "val_ncc.safetensors").exists()
    assert cli("merge", parts) == 0
    assert cli("collect", run, "--out", parts, *args) == 0  # reuses both merged passes, writes collect.json
    s = json.loads((parts / "collect.json").read_text())
    assert s["passes"]["train"]["reused"] and s["passes"]["val"]["reused"]
    assert_same_stats(tmp_path / "single", parts)


def failing_rank_worker(run: str, coll: str, report: str) -> None:
    """One torchrun job collecting RUN into COLL (whose rank-1 state is corrupt): each rank writes
    what `collect` raised to REPORT/rank<r>.json instead of letting the process die."""
    import torch.distributed as tdist

    from lcfast.pipeline.collect import CollectOptions, collect

    tdist.init_process_group("gloo")
    rank = tdist.get_rank()
    try:
        collect(run, out=coll, opts=CollectOptions(batch_size=3, device="cpu"), progress=False)
        got = {"error": None}
    except Exception as e:  # noqa: BLE001 - reported to the test
        got = {"error": type(e).__name__, "message": str(e)}
    (Path(report) / f"rank{rank}.json").write_text(json.dumps(got))
    from lcfast import dist

    dist.close()  # both reports written before either rank tears the group down (its barrier)


def test_a_failing_rank_stops_every_rank(tiny_shards, tmp_path):
    """collect under torchrun: when one rank cannot read its resume state, every rank stops with
    that rank's error (a DataError, exit code 1) before the pass, instead of the others running
    the pass and then waiting in its all-reduce for a rank that is gone."""
    run, coll, report = tmp_path / "run", tmp_path / "coll", tmp_path / "report"
    train_run(tiny_shards, run, epochs=1, **TRAIN)
    coll.mkdir()
    report.mkdir()
    (coll / "train_stats.rank1of2.safetensors").write_bytes(b"not a safetensors file")
    try:
        r = torchrun(["--failing-rank", run, coll, report], timeout=180, env=child_env(LCFAST_DEBUG="1"),
                     script=__file__)
    except subprocess.TimeoutExpired:
        pytest.fail("a rank waited for the failed one")
    assert r.returncode == 0, r.stderr[-3000:]  # (both workers reported and returned)
    got = [json.loads((report / f"rank{i}.json").read_text()) for i in (0, 1)]
    for g in got:
        assert g["error"] == "DataError", g
        assert "train_stats.rank1of2.safetensors" in g["message"], g
    assert got[0]["message"] == got[1]["message"]
    assert not (coll / "train_stats.rank0of2.safetensors").exists()  # rank 0 stopped before its pass



def test_torchrun_sums_parts_finished_before_an_interrupted_sum(tiny_shards, tmp_path):
    """Ranks killed after each saved its finished part of the train pass but before rank 0 wrote the
    sum: the rerun under torchrun sums those parts (every rank joins the all-reduce, none returns
    its own part as if it were the total), so the result equals the single-process collection.
    (`--shard i/2` writes the very states the two ranks of a torchrun job write.)"""
    from lcfast.cli.app import main

    run, coll = tmp_path / "run", tmp_path / "coll"
    train_run(tiny_shards, run, epochs=1, **TRAIN)
    args = ["--device", "cpu", "--no-progress", "--batch-size", "3"]
    for i in (0, 1):
        try:
            main(["collect", str(run), "--out", str(coll), "--shard", f"{i}/2", *args])
        except SystemExit as e:
            assert not e.code
    parts = ["train_stats.rank0of2.safetensors", "train_stats.rank1of2.safetensors"]
    assert sorted(p.name for p in coll.iterdir()) == parts
    try:
        r = torchrun(["collect", str(run), "--out", str(coll), *COLLECT], timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun collect timed out")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in coll.iterdir()) == ["collect.json", "train_stats.safetensors", "val_ncc.safetensors"]
    main(["collect", str(run), "--out", str(tmp_path / "single"), *COLLECT])
    assert_same_stats(tmp_path / "single", coll)


def stalled_rank_worker(run: str, coll: str) -> None:
    """`lcfast collect RUN --out COLL --dist-timeout 3` on every rank, but rank 1 stalls for good
    while it opens the model (inside the first block the ranks agree on): rank 0 waits for it."""
    import time

    import lcfast.pipeline.collect.run as c

    if os.environ.get("RANK") == "1":
        open_job = c._open_job

        def stalled(*a, **kw):
            time.sleep(300)
            return open_job(*a, **kw)

        c._open_job = stalled
    from lcfast.cli.app import main

    main(["collect", run, "--out", coll, *COLLECT, "--dist-timeout", "3"])


def test_a_rank_that_never_arrives_stops_the_other_with_one_line(tiny_shards, tmp_path):
    """--dist-timeout bounds every collective: rank 0 stops 3 s after it began to wait, with one line
    naming the collective and the rank it waited for (instead of torch's 30-minute default)."""
    run, coll = tmp_path / "run", tmp_path / "coll"
    train_run(tiny_shards, run, epochs=1, **TRAIN)
    t0 = time.monotonic()
    try:
        r = torchrun(["--stalled-rank", run, coll], timeout=120, script=__file__)
    except subprocess.TimeoutExpired:
        pytest.fail("rank 0 waited past its timeout")
    assert r.returncode != 0 and time.monotonic() - t0 < 100
    lines = [x for x in r.stderr.splitlines() if x.startswith("lcfast: error:")]
    assert len(lines) == 1, r.stderr[-3000:]
    want = (r"lcfast: error: rank 0 waited \d+ s \(the timeout\) in collective #1 the agreement after "
            r"collect_checkpoint \(run\.py:\d+\), for rank 1 \(in no collective yet\); rerun the same command "
            r"to resume \(--dist-timeout / LCFAST_DIST_TIMEOUT sets the wait\) \[.+\]$")
    assert re.match(want, lines[0]), lines[0]
    assert not coll.exists() or not [p for p in coll.iterdir() if not p.name.startswith(".")]


def test_the_collective_timeout_comes_from_the_flag_then_the_environment(monkeypatch):
    from lcfast.dist import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, timeout_seconds
    from lcfast.errors import UsageError

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert timeout_seconds() == DEFAULT_TIMEOUT_S == 600
    monkeypatch.setenv(TIMEOUT_ENV, "45")
    assert timeout_seconds() == 45 and timeout_seconds(7.5) == 7.5
    for bad in ("0", "-3", "soon", "inf", "nan", "1e20"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(UsageError, match=f"environment variable {TIMEOUT_ENV} '{bad}': the collectives' timeout"):
            timeout_seconds()
    with pytest.raises(UsageError, match="--dist-timeout 0: the collectives' timeout must be a positive number"):
        timeout_seconds(0)


if __name__ == "__main__":  # torchrun tests/pipeline/test_distributed.py DATA RUN COLL
    from helpers import exit_script

    if sys.argv[1] == "--failing-rank":
        exit_script(failing_rank_worker, *sys.argv[2:5])
    elif sys.argv[1] == "--stalled-rank":
        exit_script(stalled_rank_worker, *sys.argv[2:4])
    else:
        exit_script(worker, *sys.argv[1:4])
