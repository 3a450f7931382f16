"""`--data`, the same in every command that takes it (lcfast.data.datadir.DataDir): a folder that is
not there is a usage error (exit 2), a folder without the shards a data error (exit 1), one line
each, worded alike in `train` and `collect` — through the installed console script."""

from __future__ import annotations

import shutil

import pytest

from helpers import cli, console

TRAIN = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "8", "--window", "8", "--batch-size", "4",
         "--steps-per-epoch", "2", "--eval-tokens", "64", "--device", "cpu", "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_shards):
    root = tmp_path_factory.mktemp("datadir")
    shutil.copytree(tiny_shards, root / "data")
    code, err = cli(["train", "--data", root / "data", "--out", root / "run", *TRAIN])
    assert code == 0, err
    return root


def _one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_missing_and_foreign_data_folders_say_the_same_in_train_and_collect(run, tmp_path):
    missing, foreign = tmp_path / "nope", tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not shards\n", encoding="utf-8")
    want = {
        missing: (2, f"lcfast: usage error: --data {missing}: data folder not found (create one with "
                     "'lcfast tokenize')"),
        foreign: (1, f"lcfast: error: --data {foreign}: train.lcshard not found (create the folder with "
                     "'lcfast tokenize')"),
    }
    for data, (code, line) in want.items():
        t = console(["train", "--data", data, "--out", tmp_path / "t", *TRAIN])
        c = console(["collect", run / "run", "--data", data, "--out", tmp_path / "c", "--device", "cpu",
                     "--no-progress"])
        assert (t.returncode, _one_line(t)) == (code, line)
        assert (c.returncode, _one_line(c)) == (code, line)
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()
