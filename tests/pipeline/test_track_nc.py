"""`lcfast train --track-nc`: neural collapse tracked from the training forward (lcfast.pipeline.track).

The plumbing is checked against statistics accumulated by hand from the same batches' features
under the same weights; resume, SIGKILL mid-write, Ctrl-C and a 2-process gloo run against an
uninterrupted single-process run; bad --track-every values are one-line usage errors."""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lcfast.metrics.measure import CANONICAL_KEYS, measure_stats
from lcfast.model.checkpoint import load_run
from lcfast.pipeline.track import TRACK_COLUMNS, TRACK_FILE
from lcfast.pipeline.train import open_data, train_run
from lcfast.stats.classstats import ClassStats
from lcfast.stats.ncc import NCCStats

from helpers import LCFAST, child_env, cli, console, start, torchrun

TRAIN = dict(layers=1, width=16, heads=2, context=8, batch_size=4, lr=1e-2, weight_decay=0.1, seed=0,
             device="cpu", eval_tokens=64, progress=False, window_size=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _cli_args(data, out, *, epochs, spe, every=None, lr=TRAIN["lr"]) -> list[str]:
    t = TRAIN
    args = ["train", "--data", str(data), "--out", str(out), "--layers", str(t["layers"]), "--width", str(t["width"]),
            "--heads", str(t["heads"]), "--context", str(t["context"]), "--window", str(t["window_size"]),
            "--batch-size", str(t["batch_size"]), "--lr", str(lr), "--weight-decay", str(t["weight_decay"]),
            "--seed", str(t["seed"]), "--device", "cpu", "--steps-per-epoch", str(spe),
            "--eval-tokens", str(t["eval_tokens"]), "--epochs", str(epochs), "--no-progress", "--json", "--track-nc"]
    return args + (["--track-every", str(every)] if every is not None else [])


def rows(run: Path) -> list[dict]:
    text = (run / TRACK_FILE).read_text(encoding="utf-8")
    r = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == TRACK_COLUMNS
    return r


def num(v: str):
    return None if v == "" else float(v)


# -- by hand -------------------------------------------------------------------------------------
def _features(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.features(x)


def hand_stats(model, data, batches: list[int], seed: int = 0) -> ClassStats:
    """ClassStats of the features `model` gives the training batches of global steps `batches`."""
    train, _ = open_data(data)
    T, B = TRAIN["context"], TRAIN["batch_size"]
    st = ClassStats(int(train.vocab_size), TRAIN["width"])
    for s in batches:
        w = torch.from_numpy(np.ascontiguousarray(train.random_windows(B, T, seed, s), dtype=np.int64))
        st.update(_features(model, w[:, :-1]).reshape(-1, TRAIN["width"]), w[:, 1:].reshape(-1), backend="torch")
    return st


def hand_ncc(model, data, st: ClassStats, W: torch.Tensor) -> NCCStats:
    """NC4 decisions over the first val windows (eval_tokens), each position once."""
    _, val = open_data(data)
    T = TRAIN["context"]
    n_win = min(int(val.n_seq_windows(T)), math.ceil(TRAIN["eval_tokens"] / T))
    w, lengths = val.seq_windows(T, 0, n_win)
    w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.int64))
    mask = torch.arange(T)[None, :] < torch.as_tensor(np.asarray(lengths, dtype=np.int64) - 1)[:, None]
    kept = st.counts >= 1
    ncc = NCCStats(st.n_classes, st.means[kept], kept, W)
    ncc.update(_features(model, w[:, :-1])[mask], w[:, 1:][mask], backend="torch")
    return ncc


def assert_row_matches(row: dict, want: dict) -> None:
    for k in CANONICAL_KEYS:
        a, b = num(row[k]), want[k]
        if b is None:
            assert a is None, k
        else:
            assert a == pytest.approx(float(b), rel=1e-9, abs=1e-12), k


def init_model(data):
    from lcfast.model.gptneo import GPTNeo, GPTNeoConfig

    train, _ = open_data(data)
    torch.manual_seed(TRAIN["seed"])  # as train_run builds it
    t = TRAIN
    return GPTNeo(GPTNeoConfig(vocab_size=int(train.vocab_size), layers=t["layers"], width=t["width"], heads=t["heads"],
                               context=t["context"], window_size=t["window_size"])).eval()


# -- exactness of the plumbing -------------------------------------------------------------------
def test_forward_returns_the_head_input(tiny_shards):
    model = init_model(tiny_shards)
    x = torch.randint(0, model.config.vocab_size, (2, 8))
    logits, h = model(x, return_features=True)
    assert torch.equal(h, model.features(x)) and torch.equal(logits, model(x))


def test_each_row_equals_hand_statistics_under_the_checkpoint_weights(tiny_shards, tmp_path):
    """One step per epoch and per interval: row k holds the features of batch k−1 under the weights
    before step k (epoch k−1's checkpoint, the initial model for k = 1), W after step k (epoch k's
    checkpoint) and the NC4 decisions of the evaluation under that W's model."""
    run = tmp_path / "run"
    res = train_run(tiny_shards, run, epochs=3, steps_per_epoch=1, track_nc=True, track_every=1, **TRAIN)
    got = rows(run)
    assert [int(r["step"]) for r in got] == [1, 2, 3]
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    before = init_model(tiny_shards)
    for k, r in enumerate(got, 1):
        after, _ = load_run(run, k)
        st = hand_stats(before, tiny_shards, [k - 1])
        W = after.lm_head_weight.detach()
        ncc = hand_ncc(after, tiny_shards, st, W)
        want = measure_stats(st, W, None, ncc)
        assert_row_matches(r, want)
        assert want["nc4_agreement"] is not None and want["n_samples"] == TRAIN["batch_size"] * TRAIN["context"]
        assert float(r["epoch"]) == k and int(r["interval_steps"]) == 1
        assert int(r["tokens"]) == k * TRAIN["batch_size"] * TRAIN["context"]
        assert float(r["val_loss"]) == hist[k - 1]["val_loss"]  # the epoch's evaluation
        assert float(r["train_loss"]) == pytest.approx(hist[k - 1]["train_loss"], rel=1e-12)
        before = after
    assert res["epoch"] == 3


def test_intervals_inside_an_epoch_with_frozen_weights(tiny_shards, tmp_path):
    """With a learning rate too small to move a float32 weight, an interval's statistics equal those
    of the initial model over exactly the interval's batches; intervals end every 3 steps and at the
    epoch's end; only the epoch's end has val_loss and NC4."""
    run = tmp_path / "run"
    train_run(tiny_shards, run, epochs=1, steps_per_epoch=5, track_nc=True, track_every=3, **{**TRAIN, "lr": 1e-300})
    model = init_model(tiny_shards)
    trained, _ = load_run(run, 1)
    for (k, a), b in zip(trained.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k  # the premise: the weights did not move
    got = rows(run)
    assert [(int(r["step"]), int(r["interval_steps"])) for r in got] == [(3, 3), (5, 2)]
    W = model.lm_head_weight.detach()
    st = hand_stats(model, tiny_shards, [0, 1, 2])
    assert_row_matches(got[0], measure_stats(st, W))
    assert got[0]["val_loss"] == "" and got[0]["nc4_agreement"] == ""
    assert float(got[0]["epoch"]) == 3 / 5
    st = hand_stats(model, tiny_shards, [3, 4])
    assert_row_matches(got[1], measure_stats(st, W, None, hand_ncc(model, tiny_shards, st, W)))
    assert got[1]["val_loss"] != "" and got[1]["nc4_agreement"] != ""


def test_without_tracking_nothing_changes(tiny_shards, tmp_path):
    """Tracking reads the forward, it does not change training: same weights with and without."""
    a = train_run(tiny_shards, tmp_path / "a", epochs=1, steps_per_epoch=3, **TRAIN)
    b = train_run(tiny_shards, tmp_path / "b", epochs=1, steps_per_epoch=3, track_nc=True, track_every=2, **TRAIN)
    assert a["model_fingerprint"] == b["model_fingerprint"] and a["val_loss"] == b["val_loss"]
    assert "track_loop_s" not in a and b["track_loop_s"] > 0 and b["track_end_s"] > 0  # what tracking cost
    assert not (tmp_path / "a" / TRACK_FILE).exists() and len(rows(tmp_path / "b")) == 2


# -- resume, crash, interrupt --------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_shards) -> Path:
    """An uninterrupted tracked run: 3 epochs of 4 steps, a row every 3 steps and at epoch ends."""
    run = tmp_path_factory.mktemp("ref") / "run"
    # (one thread, as the module's tests: bit-identity needs the same threads)
    train_run(tiny_shards, run, epochs=3, steps_per_epoch=4, track_nc=True, track_every=3, **TRAIN)
    return run


def test_reference_rows(reference):
    got = rows(reference)
    assert [int(r["step"]) for r in got] == [3, 4, 7, 8, 11, 12]
    assert [r["val_loss"] != "" for r in got] == [False, True] * 3


class Crash(RuntimeError):
    pass


def crash_at(step: int):
    def cb(info):
        if info["step"] == step:
            raise Crash(f"simulated crash after step {step}")
    return cb


def test_resume_after_a_crash_is_byte_identical(tiny_shards, tmp_path, reference):
    """A crash in epoch 2 after its first row was written: the rerun resumes from epoch 1's
    checkpoint, drops the row past it, recomputes it, and the file ends byte-identical."""
    run = tmp_path / "run"
    kw = dict(epochs=3, steps_per_epoch=4, track_nc=True, track_every=3, **TRAIN)
    with pytest.raises(Crash):
        train_run(tiny_shards, run, callback=crash_at(8), **kw)  # (the callback runs before step 8's row)
    assert [int(r["step"]) for r in rows(run)] == [3, 4, 7]  # a row past the checkpoint (step 4)
    res = train_run(tiny_shards, run, **kw)
    assert res["resumed_from_epoch"] == 1
    assert (run / TRACK_FILE).read_bytes() == (reference / TRACK_FILE).read_bytes()


def test_sigkill_mid_write_leaves_a_valid_file_and_the_rerun_completes_it(tiny_shards, tmp_path, reference):
    run = tmp_path / "run"
    args = _cli_args(tiny_shards, run, epochs=3, spe=4, every=3)
    r = console(args, kill_at=f"{TRACK_FILE}@5", timeout=180)  # killed writing the 5th row
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    ref = (reference / TRACK_FILE).read_text().splitlines(keepends=True)
    assert (run / TRACK_FILE).read_text().splitlines(keepends=True) == ref[:5]  # header + the 4 rows written
    assert [p.name for p in run.iterdir() if p.name.startswith(f".{TRACK_FILE}.")]  # the killed write's temporary
    r = console(args, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["resumed_from_epoch"] == 2
    assert (run / TRACK_FILE).read_bytes() == (reference / TRACK_FILE).read_bytes()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


def test_ctrl_c_exits_130_and_says_what_is_intact(tiny_shards, tmp_path):
    if not LCFAST.is_file():
        pytest.skip(f"console script {LCFAST} not installed")
    run = tmp_path / "run"
    p = start(_cli_args(tiny_shards, run, epochs=2, spe=400, every=50))
    t0 = time.monotonic()
    while not (run / "checkpoints" / "epoch_1" / "state.json").is_file():
        assert p.poll() is None and time.monotonic() - t0 < 150, p.communicate()[1][-2000:]
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    last = rows(run)[-1]["step"]  # the file is intact (parses, its header is right) ...
    assert int(last) >= 400
    assert err.strip() == (f"lcfast: interrupted; checkpoint {run / 'checkpoints' / 'epoch_1'} is intact, "
                           f"{run / TRACK_FILE} has its rows up to step {last}; rerun the same command to resume")
    assert not [q.name for q in run.iterdir() if q.name.startswith(".")]


@pytest.mark.parametrize("content", ["a,b\n1,2\n", ",".join(TRACK_COLUMNS) + "\nx,1\n", "\udcff"])
def test_a_foreign_track_file_is_refused_on_resume(tiny_shards, tmp_path, content):
    run = tmp_path / "run"
    with pytest.raises(Crash):
        train_run(tiny_shards, run, epochs=2, steps_per_epoch=2, track_nc=True, callback=crash_at(3), **TRAIN)
    (run / TRACK_FILE).write_bytes(content.encode("utf-8", "surrogateescape"))
    before = (run / TRACK_FILE).read_bytes()
    r = console(_cli_args(tiny_shards, run, epochs=2, spe=2), timeout=120)
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"lcfast: error: {run / TRACK_FILE}: ")
    assert "move it away to track this run" in line or "move the file away to track this run" in line
    assert (run / TRACK_FILE).read_bytes() == before  # never overwritten


def test_tracking_starts_where_a_resumed_untracked_run_is(tiny_shards, tmp_path):
    """A run trained without tracking and resumed with it: rows from the resumed epoch on."""
    run = tmp_path / "run"
    with pytest.raises(Crash):
        train_run(tiny_shards, run, epochs=2, steps_per_epoch=2, callback=crash_at(3), **TRAIN)
    train_run(tiny_shards, run, epochs=2, steps_per_epoch=2, track_nc=True, **TRAIN)
    assert [(int(r["step"]), int(r["interval_steps"])) for r in rows(run)] == [(4, 2)]


# -- torchrun ------------------------------------------------------------------------------------
def test_two_process_gloo_run_equals_single_process(tiny_shards, tmp_path, reference):
    run = tmp_path / "ddp"
    r = torchrun(_cli_args(tiny_shards, run, epochs=3, spe=4, every=3), timeout=240, env=child_env(LCFAST_DEBUG="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = rows(reference), rows(run)
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b):
        for k in ("step", "tokens", "epoch", "interval_steps", "n_classes", "n_samples", "degenerate_pairs"):
            assert ra[k] == rb[k], k  # the same positions (the global batch, split between the ranks)
        for k in ["train_loss", "val_loss", *CANONICAL_KEYS]:
            x, y = num(ra[k]), num(rb[k])
            assert (x is None) == (y is None), k
            if x is not None:  # the weights agree up to the gradient all-reduce's rounding
                assert y == pytest.approx(x, rel=1e-3, abs=1e-5), k
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl", TRACK_FILE]


# -- bad values ----------------------------------------------------------------------------------
def test_track_every_longer_than_an_epoch_is_a_usage_error(tiny_shards, tmp_path):
    code, err = cli(_cli_args(tiny_shards, tmp_path / "run", epochs=1, spe=4, every=5))
    assert code == 2 and err.strip() == ("lcfast: usage error: --track-every 5: longer than an epoch (4 steps); "
                                         "intervals end at every epoch's end (the checkpoint), so use at most 4"), err
    assert not (tmp_path / "run").exists()


def test_track_every_without_track_nc_is_a_usage_error(tiny_shards, tmp_path):
    args = [a for a in _cli_args(tiny_shards, tmp_path / "run", epochs=1, spe=4, every=2) if a != "--track-nc"]
    r = console(args, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "lcfast: usage error: --track-every 2: only with --track-nc", r.stderr
    assert not (tmp_path / "run").exists()
