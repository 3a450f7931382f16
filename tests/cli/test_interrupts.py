"""Ctrl-C and SIGTERM through the installed `lcfast` console script (docs/bad-input.md, "Interrupts").

Each test starts a long command in a subprocess, waits until it is demonstrably working (a
temporary output file or a checkpoint appears), sends SIGINT (as Ctrl-C in a terminal would) or
SIGTERM, and checks: exit status 130 (143 for SIGTERM), one stderr line `lcfast: interrupted; …`
saying what is intact, every file that existed before byte-identical, no temporary file left,
and a rerun that resumes or completes. Also here: `doctor` and `bench` exit non-zero on failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import LCFAST, child_env, console, dotfiles, interrupt, make_docs, one_thread, snapshot, start, wait_until

CTX = 8
TRAIN = ["--layers", "1", "--width", "16", "--heads", "2", "--context", str(CTX), "--window", str(CTX),
         "--batch-size", "4", "--lr", "0.01", "--seed", "0", "--device", "cpu", "--eval-tokens", "64", "--no-progress",
         "--json"]

pytestmark = pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")


def temp_exists(folder: Path, prefix: str):
    return lambda: folder.is_dir() and any(p.name.startswith(prefix) for p in folder.iterdir())


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# -- corpus synth / tokenize: outputs published only when complete -------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_synth_interrupted_keeps_previous_corpus(tmp_path, sig):
    out = tmp_path / "corpus"
    r = console(["corpus", "synth", "--out", out, "--stories", "50", "--json"])
    assert r.returncode == 0, r.stderr
    before = snapshot(out)
    p = start(["corpus", "synth", "--out", out, "--stories", "60000", "--json"])
    wait_until(p, temp_exists(out, ".stories.txt."), "the temporary stories file")
    time.sleep(0.3)
    rc, err, dt = interrupt(p, sig)
    assert rc == 128 + sig and dt < 10
    how = "interrupted" if sig == signal.SIGINT else "interrupted by SIGTERM"
    assert one_line(err) == (f"lcfast: {how}; {out} is unchanged (outputs are published only when complete); "
                             "rerun the same command")
    assert snapshot(out) == before and dotfiles(out) == []
    r = console(["corpus", "synth", "--out", out, "--stories", "2000", "--json"])  # the rerun completes
    assert r.returncode == 0 and json.loads(r.stdout)["n_stories"] == 2000


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """~24 MB of .txt (a few seconds of tokenizing on 2 cores)."""
    p = tmp_path_factory.mktemp("big") / "big.txt"
    block = "\n\n".join(make_docs(400, seed=1)) + "\n\n"
    p.write_text(block * max(1, (24 << 20) // len(block.encode())), encoding="utf-8")
    return p


def test_tokenize_interrupted_keeps_previous_shards(tmp_path, tiny_shards, big_corpus):
    out = tmp_path / "d"
    shutil.copytree(tiny_shards, out)
    before, inputs = snapshot(out), snapshot(big_corpus.parent)
    p = start(["tokenize", big_corpus, "--tokenizer", out / "tokenizer.json", "--out", out, "--threads", "1"])
    wait_until(p, temp_exists(out, "..train.lcshard."), "the Rust writer's temporary shard")
    time.sleep(0.3)
    rc, err, dt = interrupt(p)
    assert rc == 130 and dt < 10, err
    assert one_line(err).startswith(f"lcfast: interrupted; {out} is unchanged")
    assert snapshot(out) == before and dotfiles(out) == [] and snapshot(big_corpus.parent) == inputs


def test_tokenize_interrupted_while_training_its_tokenizer(tmp_path, big_corpus):
    """`--tokenizer train:VOCAB`: the BPE trainer holds the calling thread in Rust for as long as it
    trains (it used to ignore Ctrl-C until it was done); now the interrupt is acted on at once."""
    out = tmp_path / "d"
    p = start(["tokenize", big_corpus, "--tokenizer", "train:2000", "--out", out])
    wait_until(p, out.is_dir, "the output folder")
    time.sleep(1.5)
    rc, err, dt = interrupt(p)
    assert rc == 130 and dt < 5, (rc, dt, err)
    assert one_line(err).startswith(f"lcfast: interrupted; {out} is unchanged")
    assert not out.exists()  # the folder made for the outputs goes with them


# -- train: checkpoints, resume ------------------------------------------------------------------
def _train_args(data, out, epochs=2, spe=200):
    return ["train", "--data", data, "--out", out, *TRAIN, "--epochs", epochs, "--steps-per-epoch", spe]


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_train_interrupted_keeps_checkpoint_and_resumes(tmp_path, tiny_shards, sig):
    """Interrupted in epoch 2 (of 200 steps): epoch_1 is intact, the rerun resumes from it. (That a
    resumed run ends bit-identical to an uninterrupted one: test_crash_safety.py.)"""
    data_before = snapshot(tiny_shards)
    run_dir = tmp_path / "run"
    p = start(_train_args(tiny_shards, run_dir))
    wait_until(p, lambda: (run_dir / "checkpoints" / "epoch_1" / "state.json").is_file(), "the first checkpoint")
    rc, err, dt = interrupt(p, sig)
    assert rc == 128 + sig and dt < 10, err
    how = "interrupted" if sig == signal.SIGINT else "interrupted by SIGTERM"
    assert one_line(err) == (f"lcfast: {how}; checkpoint {run_dir / 'checkpoints' / 'epoch_1'} is intact; "
                             "rerun the same command to resume")
    assert dotfiles(run_dir) == [] and snapshot(tiny_shards) == data_before
    kept = snapshot(run_dir / "checkpoints" / "epoch_1")
    r = console(_train_args(tiny_shards, run_dir))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["resumed_from_epoch"] == 1 and res["epoch"] == 2
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    after = snapshot(run_dir / "checkpoints" / "epoch_1")  # (its optimizer state goes once epoch_2 has its own)
    assert all(after[k] == kept[k] for k in ("model.safetensors", "state.json"))


# -- collect: resume state -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_shards) -> Path:
    out = tmp_path_factory.mktemp("irun") / "run"
    r = console(_train_args(tiny_shards, out, epochs=1, spe=2))
    assert r.returncode == 0, r.stderr
    return out


COLLECT = ["--device", "cpu", "--no-progress", "--batch-size", "2", "--max-tokens", "4000", "--save-every", "0.05"]


def test_collect_interrupted_keeps_state_and_resumes_exactly(tmp_path, trained_run):
    from lcfast.cli.app import main
    from lcfast.io import load_tensors

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = snapshot(run_dir)
    out = tmp_path / "coll"
    p = start(["collect", run_dir, "--out", out, *COLLECT, "--json"])
    wait_until(p, lambda: (out / "train_stats.safetensors").is_file(), "the first saved state")
    rc, err, dt = interrupt(p)
    assert rc == 130 and dt < 10, err
    m = re.fullmatch(r"lcfast: interrupted; resume state (\S+) \((train|val) pass at window (\d+) of (\d+)\) "
                     r"is intact; rerun the same command to resume", one_line(err))
    assert m, err
    assert dotfiles(out) == [] and snapshot(run_dir) == before
    r = console(["collect", run_dir, "--out", out, *COLLECT, "--json"])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)[0]
    assert got["passes"]["train"]["resumed_from"] > 0 or got["passes"]["val"]["resumed_from"] > 0
    with one_thread():
        main(["collect", str(run_dir), "--out", str(tmp_path / "ref"), *COLLECT])  # uninterrupted, in process
    for name in ("train_stats.safetensors", "val_ncc.safetensors"):
        a, _ = load_tensors(tmp_path / "ref" / name)
        b, _ = load_tensors(out / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def _maps(pid: int, name: str) -> bool:
    """Whether process `pid` has a file named `name` mapped (an open token shard)."""
    try:
        return name in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs /proc/<pid>/maps")
def test_collect_restart_interrupted_says_what_is_true(tmp_path, trained_run):
    """`collect --restart` interrupted before its first save used to say "resume state … is intact;
    rerun the same command to resume" about a state it had been told to ignore (and the rerun
    started over). Now: nothing of its own is saved and the folder is as it was. Once it has saved
    a state, the note names it and how to resume it (without --restart)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    out = tmp_path / "coll"
    r = console(["collect", run_dir, "--out", out, *COLLECT])
    assert r.returncode == 0, r.stderr
    before = snapshot(tmp_path)
    # the whole train shard (no --max-tokens) and no save before its end: the pass outlasts the wait
    slow = ["--device", "cpu", "--no-progress", "--batch-size", "2", "--save-every", "1000"]
    p = start(["collect", run_dir, "--out", out, *slow, "--restart"])
    wait_until(p, lambda: _maps(p.pid, "train.lcshard"), "the train shard opened")
    rc, err, _ = interrupt(p)
    assert rc == 130, err
    assert one_line(err) == (f"lcfast: interrupted; nothing saved yet by this --restart: {out} is as it was; "
                             "rerun the same command to start over")
    assert snapshot(tmp_path) == before and dotfiles(tmp_path) == []
    ino = (out / "train_stats.safetensors").stat().st_ino
    p = start(["collect", run_dir, "--out", out, *slow[:-1], "0.05", "--restart"])
    wait_until(p, lambda: (out / "train_stats.safetensors").stat().st_ino != ino, "the restart's first save")
    rc, err, _ = interrupt(p)
    assert rc == 130, err
    assert re.fullmatch(rf"lcfast: interrupted; resume state {re.escape(str(out))}/(train_stats|val_ncc)\.safetensors "
                        r"\((train|val) pass at window \d+ of \d+\) is intact; rerun without --restart to resume "
                        r"\(the same command starts over\)", one_line(err)), err


def test_interrupt_surfacing_as_another_error_is_still_an_interrupt(tmp_path, trained_run):
    """Ctrl-C inside C code that calls back into Python can come out as another exception: torch
    building a tensor from a safetensors buffer turned it into "ValueError: could not determine the
    shape of object type 'torch.storage.UntypedStorage'", which collect reported as damaged model
    weights (exit 1), and --restart's note was lost (seen once in CI). The hook below makes that
    happen on every run: the interrupt arrives while the model's weights are read and comes out as
    that ValueError."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, time, safetensors\n"
        "_open = safetensors.safe_open\n"
        "def safe_open(path, *a, **k):\n"
        "    if str(path).endswith('model.safetensors'):\n"
        "        try:\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "            time.sleep(5)\n"
        "        except KeyboardInterrupt:\n"
        "            raise ValueError('could not determine the shape of object type '\n"
        "                             \"'torch.storage.UntypedStorage'\")\n"
        "    return _open(path, *a, **k)\n"
        "safetensors.safe_open = safe_open\n")
    out = tmp_path / "coll"
    e = child_env(PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    r = console(["collect", trained_run, "--out", out, *COLLECT, "--restart"], env=e)
    assert r.returncode == 130, r.stderr
    assert one_line(r.stderr) == ("lcfast: interrupted; nothing saved yet by this --restart; "
                                  "rerun the same command to start over"), r.stderr
    assert not out.exists()


def test_restart_interrupted_right_after_its_first_save_names_it(tmp_path, trained_run):
    """The interrupt lands after a --restart's first state file is renamed into place but before
    collect hears of the save: the note must name that state, not say "nothing saved yet … is as it
    was" (seen under load). The hook interrupts right after the rename, on every run."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    out = tmp_path / "coll"
    r = console(["collect", run_dir, "--out", out, *COLLECT])
    assert r.returncode == 0, r.stderr
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, time\n"
        "_replace = os.replace\n"
        "def replace(src, dst, *a, **k):\n"
        "    _replace(src, dst, *a, **k)\n"
        "    if str(dst).endswith('train_stats.safetensors'):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "os.replace = replace\n")
    e = child_env(PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    slow = ["--device", "cpu", "--no-progress", "--batch-size", "2", "--save-every", "0.05", "--restart"]
    r = console(["collect", run_dir, "--out", out, *slow], env=e)
    assert r.returncode == 130, r.stderr
    assert re.fullmatch(rf"lcfast: interrupted; resume state {re.escape(str(out))}/train_stats\.safetensors "
                        r"\(train pass at window \d+ of \d+\) is intact; rerun without --restart to resume "
                        r"\(the same command starts over\)", one_line(r.stderr)), r.stderr


# -- analyze: all outputs published together -----------------------------------------------------
def test_analyze_interrupted_keeps_previous_outputs(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame({"model": [f"m{i}" for i in range(n)], "val_loss": rng.uniform(1, 3, n),
                       "n_params": rng.integers(1000, 10**6, n)})
    for j in range(12):
        df[f"metric_{j}"] = rng.lognormal(size=n)
    src = tmp_path / "table.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "an"
    r = console(["analyze", src, "--out", out, "--metric", "metric_0", "--metric", "metric_1"])
    assert r.returncode == 0, r.stderr
    before = snapshot(out)
    p = start(["analyze", src, "--out", out])
    wait_until(p, temp_exists(out, ".scatter_metric_"), "the first staged plot")
    time.sleep(0.3)
    rc, err, dt = interrupt(p)
    assert rc == 130 and dt < 10, err
    assert one_line(err).startswith(f"lcfast: interrupted; {out} is unchanged")
    assert snapshot(out) == before and dotfiles(out) == []
    r = console(["analyze", src, "--out", out, "--no-plots"])
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(out / "correlations.csv")) == 12


# -- demo: worker processes stop with the main process ------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list the worker processes")
def test_demo_sigint_to_main_process_stops_workers(tmp_path):
    """SIGINT to the demo's main process only (not its process group): it stops its training workers
    and exits 130 at once (it used to wait for the workers to finish their jobs)."""
    out = tmp_path / "demo"
    runs = out / "work" / "quick" / "runs"
    p = start(["demo", "--quick", "--out", out, "--device", "cpu", "--no-progress"])
    wait_until(p, lambda: runs.is_dir() and any((r / "config.json").is_file() for r in runs.iterdir()),
               "a training job in a worker", timeout=240)
    workers = [c for c in _children(p.pid)]
    assert workers, "the demo runs its training in worker processes on CPU"
    rc, err, dt = interrupt(p)
    assert rc == 130 and dt < 20, (rc, dt, err[-2000:])
    assert one_line(err) == (f"lcfast: interrupted; finished steps under {out / 'work' / 'quick'} are intact; "
                             "rerun the same command to continue")
    time.sleep(1.0)  # (the multiprocessing resource tracker exits on its own when its parent is gone)
    alive = [w for w in workers if Path(f"/proc/{w}").exists() and "python" in Path(f"/proc/{w}/cmdline").read_text()
             and "resource_tracker" not in Path(f"/proc/{w}/cmdline").read_text()]
    assert alive == []
    assert dotfiles(out) == []


# -- exit codes of failed checks -----------------------------------------------------------------
def test_doctor_exits_1_when_a_required_component_fails(tmp_path):
    fake = tmp_path / "fake"
    (fake / "scipy").mkdir(parents=True)
    (fake / "scipy" / "__init__.py").write_text("raise ImportError('broken scipy for the test')\n")
    e = child_env(PYTHONPATH=os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    for extra in ([], ["--json"]):
        r = console(["doctor", *extra], env=e, timeout=120)
        assert r.returncode == 1, (extra, r.stderr)
        assert one_line(r.stderr) == "lcfast: error: doctor: scipy failed (see above)"
    assert "scipy" in json.loads(r.stdout)["failed"]
    from lcfast.cli.doctor import doctor_report, failed_checks

    assert failed_checks(doctor_report()) == []  # this environment is healthy


def test_bench_exits_1_when_an_implementation_fails(tmp_path):
    """A benchmark row that FAILED makes `lcfast bench` exit 1 (a sitecustomize breaks the torch
    class-statistics primitive in the child; the benchmark records the failure and goes on)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import lcfast.stats.classstats as c\n"
        "def broken(*a, **k):\n    raise RuntimeError('broken for the test')\n"
        "c.class_stats_torch = broken\n")
    e = child_env(PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    r = console(["bench", "--sizes", "tiny", "--device", "cpu", "--only", "class_stats", "--json", tmp_path / "b.json"],
                env=e)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "FAILED" in r.stdout and (tmp_path / "b.json").is_file()
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert any(row["note"].startswith("FAILED") for row in rows)
