"""Nothing a user had is lost (docs/bad-input.md, "No loss"): a property test over every command.

A "world" folder holds what a user has after a session: a corpus, tokenized data, a trained run,
its collection, collection parts to merge, measurements, an analysis, a sweep, count/bench JSON,
and files of the user's own beside them. Every case copies the world and runs one command that
fails — a bad flag value, a bad input file, an output that is an input — and checks that every
file that existed before is byte-identical after (and still there), and that nothing new is left
behind, not even an empty folder. Kill cases run the real console script with
LCFAST_TEST_KILL_AT (SIGKILL at a save point, before its rename): the pre-existing files that are
not outputs of the command stay byte-identical, and after the rerun (exit 0) no temporary file is
left anywhere. Interrupts (SIGINT/SIGTERM): tests/cli/test_interrupts.py. Outputs follow the umask.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import LCFAST, cli, console, dotfiles, snapshot

CTX = 8
TRAIN = ["--layers", "1", "--width", "16", "--heads", "2", "--context", str(CTX), "--window", str(CTX),
         "--batch-size", "4", "--steps-per-epoch", "2", "--eval-tokens", "64", "--device", "cpu", "--no-progress"]
COLLECT = ["--max-tokens", "160", "--device", "cpu", "--no-progress", "--batch-size", "4"]
USER_FILES = ["data/README.txt", "coll/notes.md", "meas/keep.txt", "an/my_plot_notes.txt", "corpus/extra.txt"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_shards) -> Path:
    w = tmp_path_factory.mktemp("world")
    steps = [
        ["corpus", "synth", "--out", w / "corpus", "--stories", "80", "--json"],
        ["train", "--data", w / "data", "--out", w / "run", *TRAIN],
        ["collect", w / "run", "--out", w / "coll", *COLLECT],
        ["collect", w / "run", "--out", w / "parts", *COLLECT[2:], "--shard", "0/2"],
        ["collect", w / "run", "--out", w / "parts", *COLLECT[2:], "--shard", "1/2"],
        ["measure", w / "coll", "--out", w / "meas", "--no-progress"],
        ["analyze", w / "table.csv", "--out", w / "an"],
        ["sweep", "--data", w / "data", "--out", w / "sw", "--layers", "1", "--widths", "8", *TRAIN[4:]],
        ["count", w / "data" / "train.lcshard", "--json", w / "count.json"],
        ["tokenize", w / "corpus" / "stories.txt", "--tokenizer", "train:300", "--out", w / "tok2"],
    ]
    shutil.copytree(tiny_shards, w / "data")
    rng = np.random.default_rng(0)
    import pandas as pd

    pd.DataFrame({"model": [f"m{i}" for i in range(8)], "val_loss": rng.uniform(1, 3, 8),
                  "nc1_cdnv": rng.lognormal(size=8), "nc4_agreement": rng.uniform(size=8),
                  "n_params": [1000 * (i + 1) for i in range(8)]}).to_csv(w / "table.csv", index=False)
    for argv in steps:
        code, err = cli(argv)
        assert code == 0, (argv, err)
    for f in USER_FILES:
        (w / f).write_text(f"a user's own file: {f}\n")
    assert dotfiles(w) == []
    return w


@pytest.fixture
def w(world, tmp_path) -> Path:
    dst = tmp_path / "w"
    shutil.copytree(world, dst)
    return dst


# -- failing runs: every case is (argv, exit code); files are prepared in `w` first ------------------
def _blank(w):
    (w / "blank.txt").write_text("\n\n   \n")
    return w / "blank.txt"


def _corrupt_tokenizer(w):
    (w / "bad_tok.json").write_text('{"model": "not a tokenizer"')
    return w / "bad_tok.json"


def _corrupt_shard_copy(w):
    d = w / "bad_data"
    shutil.copytree(w / "data", d)
    b = bytearray((d / "train.lcshard").read_bytes())
    b[200] ^= 0xFF
    (d / "train.lcshard").write_bytes(bytes(b))
    return d


def _corrupt_state(w):
    p = w / "coll" / "val_ncc.safetensors"
    p.write_bytes(p.read_bytes()[:80])
    return w / "coll"


FAILING = {
    # corpus synth
    "synth_zero_stories": (lambda w: ["corpus", "synth", "--out", w / "corpus", "--stories", "0"], 2),
    "synth_out_is_a_file": (lambda w: ["corpus", "synth", "--out", w / "count.json", "--stories", "5"], 2),
    # tokenize (the first is the issue's: an empty corpus into a folder holding shards)
    "tokenize_empty_corpus_into_shards": (
        lambda w: ["tokenize", _blank(w), "--tokenizer", w / "data" / "tokenizer.json", "--out", w / "data"], 1),
    "tokenize_empty_corpus_other_tokenizer": (  # tokenizer.json was replaced before the corpus was read
        lambda w: ["tokenize", _blank(w), "--tokenizer", w / "tok2" / "tokenizer.json", "--out", w / "data"], 1),
    "tokenize_bad_val_fraction": (
        lambda w: ["tokenize", w / "corpus" / "stories.txt", "--tokenizer", w / "data" / "tokenizer.json",
                   "--out", w / "data", "--val-fraction", "2"], 2),
    "tokenize_corrupt_tokenizer": (
        lambda w: ["tokenize", w / "corpus" / "stories.txt", "--tokenizer", _corrupt_tokenizer(w), "--out", w / "data"],
        1),
    "tokenize_unknown_eos": (
        lambda w: ["tokenize", w / "corpus" / "stories.txt", "--tokenizer", w / "data" / "tokenizer.json",
                   "--out", w / "data", "--eos", "<nope>"], 2),
    "tokenize_json_is_the_input": (
        lambda w: ["tokenize", w / "corpus" / "stories.txt", "--tokenizer", w / "data" / "tokenizer.json",
                   "--out", w / "d2", "--json", w / "corpus" / "stories.txt"], 2),
    "tokenize_unsupported_input": (
        lambda w: ["tokenize", w / "table.csv", "--tokenizer", w / "data" / "tokenizer.json", "--out", w / "data"], 2),
    # count
    "count_json_is_the_shard": (
        lambda w: ["count", w / "data" / "train.lcshard", "--json", w / "data" / "train.lcshard"], 2),
    "count_corrupt_shard": (
        lambda w: ["count", _corrupt_shard_copy(w) / "train.lcshard", "--json", w / "count.json"], 1),
    "count_bad_memory": (
        lambda w: ["count", w / "data" / "train.lcshard", "--json", w / "count.json", "--memory-mb", "0"], 2),
    # train (a seed out of range: test_train_rerun_with_a_valid_seed_after_a_bad_one)
    "train_zero_batch_existing_run": (lambda w: ["train", "--data", w / "data", "--out", w / "run", *TRAIN[:10],
                                                 "--batch-size", "0", *TRAIN[12:]], 2),
    "train_other_config_existing_run": (lambda w: ["train", "--data", w / "data", "--out", w / "run", *TRAIN,
                                                   "--lr", "0.5"], 2),
    "train_corrupt_data": (lambda w: ["train", "--data", _corrupt_shard_copy(w), "--out", w / "run", *TRAIN], 1),
    "train_out_is_a_user_folder": (lambda w: ["train", "--data", w / "data", "--out", w / "an", *TRAIN], 2),
    # sweep
    "sweep_bad_layers": (lambda w: ["sweep", "--data", w / "data", "--out", w / "sw", "--layers", "0",
                                    "--widths", "8", *TRAIN[4:]], 2),
    "sweep_bad_list": (lambda w: ["sweep", "--data", w / "data", "--out", w / "sw", "--layers", "x",
                                  "--widths", "8", *TRAIN[4:]], 2),
    # collect
    "collect_zero_batch": (lambda w: ["collect", w / "run", "--out", w / "coll", *COLLECT[:-1], "0"], 2),
    "collect_corrupt_state": (lambda w: ["collect", w / "run", "--out", _corrupt_state(w), *COLLECT], 1),
    "collect_other_data": (lambda w: ["collect", w / "run", "--data", _corrupt_shard_copy(w), "--out", w / "coll",
                                      *COLLECT], 1),
    "collect_bad_shard_spec": (
        lambda w: ["collect", w / "run", "--out", w / "parts", *COLLECT[2:], "--shard", "2/2"], 2),
    # merge
    "merge_missing_part": (
        lambda w: (w / "parts" / "train_stats.rank1of2.safetensors").unlink() or ["merge", w / "parts"], 1),
    "merge_nothing": (lambda w: ["merge", w / "coll"], 1),
    # measure
    "measure_min_count_too_high": (lambda w: ["measure", w / "coll", "--out", w / "meas", "--no-progress",
                                              "--min-count", "1000000"], 1),
    "measure_corrupt_state": (lambda w: ["measure", _corrupt_state(w), "--out", w / "meas", "--no-progress"], 1),
    "measure_bad_cdnv_power": (lambda w: ["measure", w / "coll", "--out", w / "meas", "--no-progress",
                                          "--cdnv-power", "0"], 2),
    # analyze (the first is the issue's: an analysis of its own output folder rewrote its input)
    "analyze_input_is_an_output": (lambda w: ["analyze", w / "an" / "data.csv", "--out", w / "an"], 2),
    "analyze_into_a_users_data_csv": (lambda w: (w / "mine").mkdir() or (w / "mine" / "data.csv").write_text("x\n1\n")
                                      and ["analyze", w / "table.csv", "--out", w / "mine"], 2),
    "analyze_unknown_target": (lambda w: ["analyze", w / "table.csv", "--out", w / "an", "--target", "nope"], 2),
    "analyze_unknown_metric": (lambda w: ["analyze", w / "table.csv", "--out", w / "an", "--metric", "nope"], 2),
    "analyze_too_few_rows": (lambda w: ["analyze", w / "meas" / "measurements.csv", "--out", w / "an"], 1),
    # demo, bench
    "demo_bad_device": (lambda w: ["demo", "--out", w / "an", "--device", "tpu", "--no-progress"], 2),
    "demo_into_a_users_folder": (lambda w: ["demo", "--out", w / "meas", "--device", "cpu", "--no-progress"], 2),
    "demo_out_is_a_file": (lambda w: ["demo", "--out", w / "count.json", "--no-progress"], 2),
    "bench_bad_sizes": (lambda w: ["bench", "--sizes", "huge", "--json", w / "count.json"], 2),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_failing_run_changes_nothing(w, case):
    make, want = FAILING[case]
    argv = make(w)
    before = snapshot(w, dirs=True)
    code, err = cli(argv)
    assert code == want, err
    assert err.startswith("lcfast: ") and len(err.strip().splitlines()) == 1, err
    after = snapshot(w, dirs=True)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}
    assert dotfiles(w) == []


def test_docs_name_only_cases_that_exist():
    """docs/bad-input.md ("No loss") names cases of FAILING and tests of this file: all must exist."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "bad-input.md").read_text(encoding="utf-8")
    section = doc[doc.index("## No loss"):]
    cases = set(re.findall(r"\| `([a-z0-9_]+)` \|$", section, flags=re.M))
    assert len(cases) >= 7 and cases <= set(FAILING), cases - set(FAILING)
    tests = set(re.findall(r"`(test_[a-z0-9_]+)", section))
    assert tests and all(callable(globals().get(t)) for t in tests), [t for t in tests if t not in globals()]


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_train_rerun_with_a_valid_seed_after_a_bad_one(w):
    """The issue's case: `--seed 2**64` failed after writing config.json, so the corrected rerun was
    refused. Now the model and optimizer are built before the first write. (The one-line message
    for the out-of-range value belongs to the numeric-flag checks.)"""
    before = snapshot(w)
    r = console(["train", "--data", w / "data", "--out", w / "run_new", *TRAIN, "--seed", str(2**64)])
    assert r.returncode != 0
    assert snapshot(w) == before and not (w / "run_new" / "config.json").exists()
    code, err = cli(["train", "--data", w / "data", "--out", w / "run_new", *TRAIN, "--seed", "3"])
    assert code == 0, err


def test_collect_restart_that_fails_keeps_what_it_did_not_redo(w):
    """--restart used to delete every state and collect.json first: a restart failing after its train
    pass (here: no class reaches --min-count) lost the val state. Now the old states are ignored and
    only replaced, each by a complete new one."""
    from lcfast.stats.classstats import ClassStats

    before = snapshot(w)
    code, err = cli(["collect", w / "run", "--out", w / "coll", *COLLECT, "--restart", "--min-count", "1000000"])
    assert code == 1 and "--min-count" in err, err
    after = snapshot(w)
    assert {k for k in before if after.get(k) != before[k]} <= {"coll/train_stats.safetensors"}
    assert ClassStats.load(w / "coll" / "train_stats.safetensors").n_samples > 0
    assert dotfiles(w) == []


def test_train_config_of_an_attempt_without_checkpoints_is_replaced(w):
    """A run folder whose only file is the config of an attempt that never reached a checkpoint (an
    OOM, a crash) is that command's own earlier output: a rerun with other flags starts afresh."""
    (w / "run_new").mkdir()
    cfg = json.loads((w / "run" / "config.json").read_text())
    cfg["train"]["lr"] = 0.5
    (w / "run_new" / "config.json").write_text(json.dumps(cfg))
    code, err = cli(["train", "--data", w / "data", "--out", w / "run_new", *TRAIN])
    assert code == 0, err
    assert json.loads((w / "run_new" / "config.json").read_text())["train"]["lr"] != 0.5


# -- killed runs (SIGKILL at a save point), then rerun ----------------------------------------------
# (argv, save point to die at, the command's outputs: pre-existing files it may replace)
KILLED = {
    "synth": (lambda w: ["corpus", "synth", "--out", w / "corpus", "--stories", "120", "--json"], "corpus.json",
              ["corpus/stories.txt", "corpus/corpus.json"]),
    "tokenize": (lambda w: ["tokenize", w / "corpus" / "stories.txt", "--tokenizer", w / "data" / "tokenizer.json",
                            "--out", w / "data", "--val-fraction", "0.3"], "val.lcshard",
                 ["data/train.lcshard", "data/val.lcshard", "data/meta.json", "data/tokenizer.json"]),
    "count": (lambda w: ["count", w / "data" / "val.lcshard", "--json", w / "count.json"], "count.json",
              ["count.json"]),
    "train": (lambda w: ["train", "--data", w / "data", "--out", w / "run2", *TRAIN, "--epochs", "2"], "epoch_2", []),
    "sweep": (lambda w: ["sweep", "--data", w / "data", "--out", w / "sw", "--layers", "1", "--widths", "8,12",
                         *TRAIN[4:]], "sweep.csv@2", ["sw/sweep.json", "sw/sweep.csv"]),
    "collect": (lambda w: ["collect", w / "run", "--out", w / "coll2", *COLLECT], "val_ncc.safetensors", []),
    "merge": (lambda w: ["merge", w / "parts"], "train_stats.safetensors", []),
    "measure": (lambda w: ["measure", w / "coll", "--out", w / "meas", "--no-progress", "--cdnv-power", "2"],
                "measurements.csv", ["meas/measurements.csv", "meas/convergence.csv",
                                     "meas/per_token/run_epoch_1.parquet", "meas/per_class.parquet"]),
    "analyze": (lambda w: ["analyze", w / "table.csv", "--out", w / "an", "--target", "nc4_agreement"],
                "analysis.json", None),  # None: every analysis output (correlations, data, plots)
}


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
@pytest.mark.parametrize("case", sorted(KILLED))
def test_killed_run_loses_nothing_and_rerun_leaves_no_temporary(w, case):
    make, point, outputs = KILLED[case]
    argv = make(w)
    before = snapshot(w)
    r = console(argv, kill_at=point)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    after = snapshot(w)
    mine = ((lambda k: k.startswith("an/") and k != "an/my_plot_notes.txt") if outputs is None
            else (lambda k: k in outputs))
    lost = {k for k in before if not mine(k) and after.get(k) != before[k]}
    assert lost == set()
    assert dotfiles(w), "the kill happened inside a save: its temporary is still there"
    r = console(argv)
    assert r.returncode == 0, r.stderr[-2000:]
    assert dotfiles(w) == []
    final = snapshot(w)
    assert {k for k in before if not mine(k) and final.get(k) != before[k]} == set()
    for f in USER_FILES:
        assert (w / f).read_text() == f"a user's own file: {f}\n"


# -- the umask -------------------------------------------------------------------------------------
@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(tmp_path, tiny_shards, umask):
    """New files get 0o666 & ~umask and folders 0o777 & ~umask (temporaries are private until they
    are published); a replaced file keeps the mode it had."""
    w = tmp_path
    shutil.copytree(tiny_shards, w / "data_src")
    cmds = [
        ["corpus", "synth", "--out", w / "corpus", "--stories", "40", "--json"],
        ["tokenize", w / "corpus" / "stories.txt", "--tokenizer", w / "data_src" / "tokenizer.json",
         "--out", w / "data", "--val-fraction", "0.3", "--json", w / "tok.json"],
        ["train", "--data", w / "data_src", "--out", w / "run", *TRAIN],
        ["collect", w / "run", "--out", w / "coll", *COLLECT],
        ["measure", w / "coll", "--out", w / "meas", "--no-progress"],
    ]
    for argv in cmds:
        r = console(argv, umask=umask)
        assert r.returncode == 0, (argv, r.stderr[-2000:])
    made = [p for p in w.rglob("*") if not str(p.relative_to(w)).startswith("data_src")]
    assert made
    bad = {str(p.relative_to(w)): oct(stat.S_IMODE(p.stat().st_mode)) for p in made
           if stat.S_IMODE(p.stat().st_mode) != ((0o777 if p.is_dir() else 0o666) & ~umask)}
    assert bad == {}
    (w / "corpus" / "corpus.json").chmod(0o640)
    r = console(["corpus", "synth", "--out", w / "corpus", "--stories", "41", "--json"], umask=umask)
    assert r.returncode == 0
    assert stat.S_IMODE((w / "corpus" / "corpus.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((w / "corpus" / "stories.txt").stat().st_mode) == 0o666 & ~umask


# -- the persistence layer itself -------------------------------------------------------------------
def test_staged_outputs_are_published_together_or_not_at_all(tmp_path):
    from lcfast.io import staged

    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError):
        with staged() as st:
            st.write_text(tmp_path / "a.txt", "new a")
            st.write_text(tmp_path / "sub" / "b.txt", "new b")
            assert dotfiles(tmp_path)  # written, not yet published
            raise RuntimeError("a later output failed")
    assert (tmp_path / "a.txt").read_text() == "old a" and not (tmp_path / "sub" / "b.txt").exists()
    assert dotfiles(tmp_path) == []
    with staged() as st:
        st.write_text(tmp_path / "a.txt", "new a")
        with st.open(tmp_path / "sub" / "b.txt", "w", encoding="utf-8") as f:
            f.write("new b")
        assert (tmp_path / "a.txt").read_text() == "old a"
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "sub" / "b.txt").read_text() == "new b"
    assert dotfiles(tmp_path) == []


def test_sweep_removes_only_what_dead_writers_left(tmp_path):
    from lcfast import io as lio

    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(p.stdout)  # exited: its pid is free (unless reused in between, which would keep the file)
    host = lio._HOST
    other_host = "ffffff" if host != "ffffff" else "eeeeee"
    names = {
        f".a.json.lc{dead}-{host}.1a2b.tmp": True,  # a dead writer's file
        f".epoch_2.lc{dead}-{host}.1a2b.tmp": True,  # ... and folder
        f"..train.lcshard.lc{dead}-{host}.1a2b.tmp.tmp.{dead}": True,  # the Rust shard writer's
        f"..train.lcshard.lc{dead}-{host}.1a2b.tmp.offsets.tmp.{dead}": True,
        f".a.json.lc{os.getpid()}-{host}.1a2b.tmp": False,  # a live writer's
        f".a.json.lc{os.getppid()}-{host}.1a2b.tmp": False,
        f".a.json.lc{dead}-{other_host}.1a2b.tmp": False,  # another host's (shared filesystem)
        ".a.json.tmp": False, ".hidden": False, "a.json": False,  # not lcfast temporaries
    }
    for n in names:
        (tmp_path / n).mkdir() if n.startswith(".epoch_2") else (tmp_path / n).write_text("x")
    removed = {p.name for p in lio.sweep_temporaries(tmp_path)}
    assert removed == {n for n, gone in names.items() if gone}
    assert {p.name for p in tmp_path.iterdir()} == {n for n, gone in names.items() if not gone}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_new_files_follow_the_umask_and_replaced_ones_keep_their_mode(tmp_path, umask):
    from lcfast.io import atomic_dir, atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        (tmp_path / "kept.txt").write_text("old")
        (tmp_path / "kept.txt").chmod(0o640)
        atomic_write_text(tmp_path / "kept.txt", "new")
        with atomic_dir(tmp_path / "ck") as d:
            atomic_write_text(d / "inside.json", "{}")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "new.txt") == 0o666 & ~umask
    assert mode(tmp_path / "kept.txt") == 0o640 and (tmp_path / "kept.txt").read_text() == "new"
    assert mode(tmp_path / "ck") == 0o777 & ~umask and mode(tmp_path / "ck" / "inside.json") == 0o666 & ~umask


# -- issue 20 §3: everything checked before the first write, through the console script --------------
def _refused(r: subprocess.CompletedProcess, code: int) -> str:
    """The one stderr line of a refused console run that exited `code`."""
    assert r.returncode == code, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lcfast: "), r.stderr[-2000:]
    return lines[0]


def _same_tokenizer_other_data(w: Path) -> Path:
    """Shards of another split of the corpus, tokenized with the run's own tokenizer."""
    code, err = cli(["tokenize", w / "corpus" / "stories.txt", "--tokenizer", w / "data" / "tokenizer.json",
                     "--out", w / "data2", "--val-fraction", "0.3", "--seed", "7"])
    assert code == 0, err
    return w / "data2"


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_collect_with_other_classes_or_data_changes_nothing(w):
    """`--classes top:10`, then `top:20` (or `--data OTHER`) into the same --out: the second run
    used to replace classes.safetensors before its train state was refused, and `lcfast measure`
    then failed on it ("malformed kept-class list"). Now every state is checked first."""
    ctk = w / "ctk"
    r = console(["collect", w / "run", "--out", ctk, *COLLECT, "--classes", "top:10"])
    assert r.returncode == 0, r.stderr[-2000:]
    other = _same_tokenizer_other_data(w)
    before = snapshot(w)
    refusals = [
        (["collect", w / "run", "--out", ctk, *COLLECT, "--classes", "top:20"], "another layout"),
        (["collect", w / "run", "--data", other, "--out", ctk, *COLLECT, "--classes", "top:10"], "another shard"),
        # without --classes: the 10-class state used to be reused as if it held every class
        (["collect", w / "run", "--out", ctk, *COLLECT], "another layout"),
    ]
    for argv, why in refusals:
        line = _refused(console(argv), 1)
        assert line.startswith(f"lcfast: error: {ctk / 'train_stats.safetensors'}: state was written for {why} "), line
        assert line.endswith("; rerun with --restart to discard it, or use another --out"), line
        assert snapshot(w) == before
        assert dotfiles(w) == []
    r = console(["measure", ctk, "--out", w / "meas_ctk", "--no-progress"])
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_failing_tokenize_creates_no_output_folder(w):
    """A tokenize that fails (a data error, a usage error found once the input is open) used to
    leave its --out folder behind, empty; now a folder is made only for outputs to publish."""
    blank = _blank(w)
    cases = [
        (["tokenize", blank, "--tokenizer", w / "data" / "tokenizer.json", "--out", w / "new" / "deeper"], 1,
         "no documents found (empty corpus)"),
        (["tokenize", w / "corpus" / "stories.txt", "--tokenizer", w / "data" / "tokenizer.json",
          "--out", w / "new", "--eos", "<|nope|>"], 2, "--eos"),
        (["tokenize", w / "corpus" / "stories.txt", "--tokenizer", _corrupt_tokenizer(w), "--out", w / "new"], 1,
         "bad_tok.json"),
    ]
    before = snapshot(w, dirs=True)
    for argv, code, text in cases:
        line = _refused(console(argv), code)
        assert text in line, line
        assert snapshot(w, dirs=True) == before, argv
        assert not (w / "new").exists()


def _kill_tracked_run_in_epoch_2(w: Path) -> tuple[list[str], Path]:
    """A --track-nc --track-every 1 run killed while saving epoch 2's checkpoint: nc_track.csv has
    rows up to step 4, the checkpoint is epoch_1 (step 2). Returns (its argv without --track-nc …)."""
    argv = ["train", "--data", w / "data", "--out", w / "trk", *TRAIN, "--epochs", "3"]
    r = console([*argv, "--track-nc", "--track-every", "1"], kill_at="epoch_2")
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    steps = [ln.split(",")[0] for ln in (w / "trk" / "nc_track.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]
    return argv, w / "trk"


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_resuming_a_tracked_run_without_track_nc_is_refused(w):
    """Resumed without --track-nc, a tracked run used to keep the killed attempt's rows past its
    checkpoint (steps 3, 4) and never write the later ones. Now it is refused, and the resume the
    message names completes the file."""
    argv, run = _kill_tracked_run_in_epoch_2(w)
    before = snapshot(w)
    line = _refused(console(argv), 2)
    assert line == (f"lcfast: usage error: --out {run}: a run tracked with --track-nc --track-every 1 "
                    f"({run / 'nc_track.csv'}); resume it with the same flags, or move that file away "
                    "to continue without tracking"), line
    assert snapshot(w) == before  # (the killed save's temporary included: the resume sweeps it)
    r = console([*argv, "--track-nc", "--track-every", "1"])
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [ln.split(",")[0] for ln in (run / "nc_track.csv").read_text().splitlines()[1:]]
    assert steps == [str(s) for s in range(1, 7)] and dotfiles(w) == []


def _measurements_twice(w: Path, change: dict | None = None) -> tuple[Path, Path]:
    """The world's measurements.csv with 8 models, copied into A/ and B/ (B's row 0 changed)."""
    import pandas as pd

    t = pd.read_csv(w / "table.csv")
    t["checkpoint"], t["profile"] = "epoch_1", "canonical"
    for d in ("A", "B"):
        (w / d).mkdir()
        t.to_csv(w / d / "measurements.csv", index=False)
    if change:
        b = pd.read_csv(w / "B" / "measurements.csv")
        for k, v in change.items():
            b.loc[0, k] = v
        b.to_csv(w / "B" / "measurements.csv", index=False)
    return w / "A" / "measurements.csv", w / "B" / "measurements.csv"


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_analyze_counts_a_row_given_twice_once(w):
    """Two inputs of the same name holding the same (model, checkpoint, profile) rows: they used to
    be counted twice (merged only when the file names differed). Identical rows are one row."""
    a, b = _measurements_twice(w)
    r = console(["analyze", a, b, "--out", w / "an2"])
    assert r.returncode == 0, r.stderr[-2000:]
    data = (w / "an2" / "data.csv").read_text().splitlines()
    assert len(data) == 1 + 8, data
    res = json.loads((w / "an2" / "analysis.json").read_text())
    assert {c["n"] for c in res["correlations"]} == {8}


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_analyze_refuses_conflicting_rows_and_names_them(w):
    """The same (model, checkpoint, profile) with other values in another input: an error naming
    the row, the column and both files (it used to pool both as two models)."""
    a, b = _measurements_twice(w, {"nc1_cdnv": 123.0})
    before = snapshot(w)
    line = _refused(console(["analyze", a, b, "--out", w / "an2"]), 1)
    assert line.startswith(f"lcfast: error: {b}: row (model m0, checkpoint epoch_1, profile canonical) is also in "
                           f"{a} with other values (nc1_cdnv: "), line
    assert snapshot(w) == before and not (w / "an2").exists()


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_export_refuses_a_tokenizer_that_is_not_the_runs(w):
    """`--tokenizer OTHER` (and a data dir whose tokenizer.json was replaced since training) used to
    ship a tokenizer the model was not trained with, without a word."""
    want = json.loads((w / "run" / "config.json").read_text())["data"]["tokenizer_fingerprint"]
    before = snapshot(w)
    line = _refused(console(["export", w / "run", "--out", w / "exp", "--tokenizer", w / "tok2" / "tokenizer.json"]), 1)
    assert line.startswith(f"lcfast: error: --tokenizer {w / 'tok2' / 'tokenizer.json'}: not the tokenizer "
                           f"{w / 'run'} was trained with (fingerprint "), line
    assert want in line and snapshot(w) == before and not (w / "exp").exists()
    r = console(["export", w / "run", "--out", w / "exp", "--tokenizer", w / "data" / "tokenizer.json"])
    assert r.returncode == 0, r.stderr[-2000:]
    # the data dir's tokenizer.json (the default) replaced since training
    shutil.copytree(w / "data", w / "data3")
    code, err = cli(["train", "--data", w / "data3", "--out", w / "run3", *TRAIN])
    assert code == 0, err
    shutil.copyfile(w / "tok2" / "tokenizer.json", w / "data3" / "tokenizer.json")
    before = snapshot(w)
    line = _refused(console(["export", w / "run3", "--out", w / "exp3"]), 1)
    assert line.startswith(f"lcfast: error: {w / 'data3' / 'tokenizer.json'} (the tokenizer of its data dir now): "
                           f"not the tokenizer {w / 'run3'} was trained with"), line
    assert snapshot(w) == before and not (w / "exp3").exists()
