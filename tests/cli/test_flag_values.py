"""Every numeric flag of every command refuses 1e20 / nan / inf / negative / meaningless zero / a
value past int64 with a one-line usage error (exit 2) naming the flag, before any heavy work and
before anything is written; values whose memory need exceeds the machine are refused before
allocating, with the estimate in the message (docs/bad-input.md, "Numbers at the edges").

The matrix runs the real CLI entry point in-process (the error comes while the command line is
parsed: milliseconds per case); a few cases go through the installed console script in a
subprocess. `test_every_numeric_flag_is_in_the_matrix` enumerates the flags from the Typer app, so a
new numeric flag without a range (or without a row here) fails."""

from __future__ import annotations

import inspect
import os
import typing
from pathlib import Path

import pytest
import typer

from lcfast.cli.app import app
from lcfast.errors import UsageError

from helpers import cli, console

BIG_INT = "100000000000000000000"  # 1e20 as an integer literal: past int64
SEED_PAST = str(2**64)

# command -> arguments that make the rest of its command line complete (paths need not exist:
# the flag error must come first)
BASE = {
    "corpus synth": ["corpus", "synth", "--out", "{w}/o"],
    "corpus controlled": ["corpus", "controlled", "--out", "{w}/o"],
    "tokenize": ["tokenize", "{w}/in.txt", "--tokenizer", "{w}/t.json", "--out", "{w}/o"],
    "count": ["count", "{w}/s.lcshard"],
    "train": ["train", "--data", "{w}/d", "--out", "{w}/o", "--layers", "1", "--width", "16"],
    "sweep": ["sweep", "--data", "{w}/d", "--out", "{w}/o", "--layers", "1", "--widths", "16"],
    "collect": ["collect", "{w}/run", "--out", "{w}/o"],
    "measure": ["measure", "{w}/coll", "--out", "{w}/o"],
    "bench": ["bench"],
}

# (command, flag) -> the range the flag must accept: ("int", min, max) / ("float", min, max, min_open)
# / ("seed",). Written out here, independently of the code, so the test checks the code against it.
I64 = 2**63 - 1
SPEC = {
    ("corpus synth", "--stories"): ("int", 1, I64),
    ("corpus synth", "--seed"): ("seed",),
    ("corpus controlled", "--tokens"): ("int", 2, I64),
    ("corpus controlled", "--deterministic"): ("float", 0, 0.5, False),
    ("corpus controlled", "--ambiguous"): ("float", 0, 0.5, False),
    ("corpus controlled", "--val-fraction"): ("float", 0, 1, True),
    ("corpus controlled", "--seed"): ("seed",),
    ("tokenize", "--val-fraction"): ("float", 0, 1, False),
    ("tokenize", "--seed"): ("seed",),
    ("tokenize", "--threads"): ("int", 0, 1024),
    ("count", "--ambiguity"): ("int", 0, I64),
    ("count", "--top"): ("int", 0, I64),
    ("count", "--memory-mb"): ("float", 0, None, True),
    **{("train", f): ("int", 1, I64) for f in ("--layers", "--width", "--heads", "--context", "--window", "--epochs",
                                                "--batch-size", "--steps-per-epoch", "--eval-tokens", "--track-every")},
    ("train", "--lr"): ("float", 0, None, True),
    ("train", "--weight-decay"): ("float", 0, None, False),
    ("train", "--seed"): ("seed",),
    ("train", "--dist-timeout"): ("float", 0, 1e7, True),
    **{("sweep", f): ("int", 1, I64) for f in ("--heads", "--context", "--window", "--batch-size",
                                                "--steps-per-epoch", "--eval-tokens")},
    ("sweep", "--lr"): ("float", 0, None, True),
    ("sweep", "--weight-decay"): ("float", 0, None, False),
    ("collect", "--min-count"): ("int", 1, I64),
    ("collect", "--batch-size"): ("int", 1, I64),
    ("collect", "--max-tokens"): ("int", 1, I64),
    ("collect", "--seed"): ("seed",),
    ("collect", "--folds"): ("int", 1, 64),
    ("collect", "--context"): ("int", 1, I64),
    ("collect", "--save-every"): ("float", 0, 1e7, True),
    ("collect", "--dist-timeout"): ("float", 0, 1e7, True),
    ("measure", "--min-count"): ("int", 1, I64),
    ("measure", "--cdnv-power"): ("float", 0, 16, True),
    ("measure", "--context-orders"): ("int", 0, 16),
    ("bench", "--repeats"): ("int", 1, 10_000),
}


def bad_values(spec) -> list[str]:
    kind = spec[0]
    if kind == "seed":
        return ["-1", SEED_PAST, "1e20", "nan", "1.5"]
    if kind == "int":
        _, lo, hi = spec
        vals = ["1e20", "nan", "inf", "-inf", BIG_INT, str(lo - 1)]
        if lo - 1 != -1:
            vals.append("-1")
        if hi != I64:
            vals.append(str(hi + 1))
        return vals
    _, lo, hi, lo_open = spec
    vals = ["nan", "inf", "-inf", "-1"]
    if lo_open:
        vals.append(str(lo))
    if hi is not None:
        vals += ["1e20", str(hi * 1.5 if hi else 1)]
    return vals


CASES = [(cmd, flag, v) for (cmd, flag), spec in SPEC.items() for v in bad_values(spec)]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def numeric_flags(t: typer.Typer, path=()) -> dict[tuple[str, str], object]:
    """(command, first flag name) -> OptionInfo of every int/float option of the app."""
    found = {}
    for ci in t.registered_commands:
        name = " ".join(path + ((ci.name or ci.callback.__name__.replace("_", "-")),))
        hints = typing.get_type_hints(ci.callback)
        for pname, p in inspect.signature(ci.callback).parameters.items():
            if not isinstance(p.default, typer.models.OptionInfo):
                continue
            tp = hints[pname]
            base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
            if base in (int, float):
                found[(name, p.default.param_decls[0])] = p.default
    for gi in t.registered_groups:
        found.update(numeric_flags(gi.typer_instance, path + (gi.name,)))
    return found


def test_every_numeric_flag_is_in_the_matrix():
    flags = numeric_flags(app)
    assert set(flags) == set(SPEC), (sorted(set(flags) - set(SPEC)), sorted(set(SPEC) - set(flags)))
    # and each is declared through lcfast.cli.options (it carries the range-checking callback)
    assert all(info.callback is not None for info in flags.values())


@pytest.mark.parametrize("cmd,flag,value", CASES, ids=[f"{c.replace(' ', '_')}{f}={v}" for c, f, v in CASES])
def test_bad_numeric_value_is_a_one_line_usage_error(tmp_path, cmd, flag, value):
    args = [a.format(w=tmp_path) for a in BASE[cmd]] + [flag, value]
    before = files_under(tmp_path)
    code, err = cli(args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lcfast: usage error:"), err
    assert flag in lines[0] and "Traceback" not in err
    assert files_under(tmp_path) == before  # refused before anything was written


@pytest.mark.parametrize("flag,values", [("--layers", "1,0"), ("--widths", "16,1e20"), ("--epochs", "-1"),
                                          ("--seeds", "0,-1"), ("--seeds", SEED_PAST), ("--layers", BIG_INT)])
def test_sweep_grid_lists_are_checked(tmp_path, flag, values):
    args = [a.format(w=tmp_path) for a in BASE["sweep"]]
    i = args.index(flag) if flag in args else None
    if i is not None:
        args[i + 1] = values
    else:
        args += [flag, values]
    code, err = cli(args)
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1, err
    assert files_under(tmp_path) == []


# -- memory: refused before allocating, with the estimate ---------------------------------------------
TRAIN = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "8", "--window", "8", "--batch-size", "4",
         "--steps-per-epoch", "2", "--eval-tokens", "64", "--device", "cpu", "--no-progress"]


def _with(args, flag, value):
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize("flag,value", [("--batch-size", "1000000000"), ("--width", "100000000"),
                                        ("--context", "1000000000"), ("--layers", "1000000000")])
def test_train_refuses_what_memory_cannot_hold(tmp_path, tiny_shards, flag, value):
    code, err = cli(["train", "--data", tiny_shards, "--out", tmp_path / "run", *_with(TRAIN, flag, value)])
    assert code == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and f"{flag} {value}" in line
    assert "would need about" in line and "more than the" in line and "iB" in line
    assert not (tmp_path / "run").exists()


def test_sweep_refuses_what_memory_cannot_hold(tmp_path, tiny_shards):
    code, err = cli(["sweep", "--data", tiny_shards, "--out", tmp_path / "sw", "--layers", "1", "--widths", "16,8",
                         "--batch-size", "1000000000", "--context", "8", "--device", "cpu", "--no-progress"])
    assert code == 2 and "--batch-size 1000000000" in err and "would need about" in err, err
    assert not (tmp_path / "sw").exists()


def test_memory_check_compares_with_what_is_available(tmp_path, tiny_shards, monkeypatch):
    """The same small run is refused when the machine (LCFAST_MEMORY_AVAILABLE) has 100 KiB, and
    trains when it has what it needs: the estimate is compared, not a hard-coded limit."""
    monkeypatch.setenv("LCFAST_MEMORY_AVAILABLE", str(100 * 1024))
    code, err = cli(["train", "--data", tiny_shards, "--out", tmp_path / "run", *TRAIN])
    assert code == 2 and "more than the 100.0 KiB LCFAST_MEMORY_AVAILABLE" in err, err
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("LCFAST_MEMORY_AVAILABLE", str(2**30))
    code, err = cli(["train", "--data", tiny_shards, "--out", tmp_path / "run", *TRAIN])
    assert code == 0, err


def test_collect_refuses_what_memory_cannot_hold(tmp_path, tiny_shards):
    code, err = cli(["train", "--data", tiny_shards, "--out", tmp_path / "run", *TRAIN])
    assert code == 0, err
    code, err = cli(["collect", tmp_path / "run", "--out", tmp_path / "c", "--device", "cpu", "--no-progress",
                         "--batch-size", "1000000000"])
    assert code == 2 and "--batch-size 1000000000: collection would need about" in err, err
    assert not (tmp_path / "c").exists()


def test_count_memory_mb_beyond_the_machine(tiny_shards):
    code, err = cli(["count", tiny_shards / "train.lcshard", "--memory-mb", "1e20"])
    assert code == 2 and "--memory-mb 1e+20: more than the" in err, err


def test_corpus_stories_beyond_the_disk(tmp_path):
    code, err = cli(["corpus", "synth", "--out", tmp_path / "c", "--stories", str(10**15)])
    assert code == 2 and f"--stories {10**15}: the corpus would take about" in err and "free on the disk" in err, err
    assert not (tmp_path / "c").exists()


# -- the installed console script -----------------------------------------------------------------
@pytest.mark.parametrize("extra,flag", [(["--seed", SEED_PAST], "--seed"), (["--seed", "-3"], "--seed"),
                                        (["--lr", "nan"], "--lr"), (["--batch-size", "1000000000"], "--batch-size")])
def test_console_script_refuses_before_writing(tmp_path, tiny_shards, extra, flag):
    r = console(["train", "--data", tiny_shards, "--out", tmp_path / "run", *TRAIN, *extra], cwd=tmp_path, timeout=120,
                env=os.environ)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and flag in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


# -- the Python API raises UsageError too ---------------------------------------------------------
def test_api_entry_points_raise_usage_error(tmp_path, tiny_shards):
    from lcfast.data.counts import count_tokens
    from lcfast.data.synth import write_corpus
    from lcfast.data.tokenize import tokenize_files
    from lcfast.pipeline.collect import CollectOptions, check_options
    from lcfast.pipeline.measure import measure
    from lcfast.pipeline.sweep import run_sweep
    from lcfast.pipeline.train import train_run

    common = dict(layers=1, width=16, heads=2, context=8, window_size=8, batch_size=4, steps_per_epoch=2,
                  eval_tokens=64, device="cpu", progress=False)
    calls = [
        ("--lr", lambda: train_run(tiny_shards, tmp_path / "r", **{**common, "lr": float("nan")})),
        ("--seed", lambda: train_run(tiny_shards, tmp_path / "r", **{**common, "seed": 2**64})),
        ("--batch-size", lambda: train_run(tiny_shards, tmp_path / "r", **{**common, "batch_size": 10**9})),
        ("--seeds", lambda: run_sweep(tiny_shards, tmp_path / "s", layers=[1], widths=[16], epochs=[1], seeds=[-1])),
        ("--seed", lambda: tokenize_files([tmp_path / "x.txt"], "train:300", tmp_path / "t", seed=-1)),
        ("--val-fraction",
         lambda: tokenize_files([tmp_path / "x.txt"], "train:300", tmp_path / "t", val_fraction=float("inf"))),
        ("--top", lambda: count_tokens(tiny_shards / "train.lcshard", top=-1)),
        ("--stories", lambda: write_corpus(tmp_path / "c", n_stories=0)),
        ("--save-every", lambda: check_options(CollectOptions(save_every_s=float("nan")))),
        ("--cdnv-power", lambda: measure([tmp_path], tmp_path / "m", cdnv_power=float("inf"))),
    ]
    for flag, call in calls:
        with pytest.raises(UsageError, match=flag):
            call()
    assert files_under(tmp_path) == []


def test_weight_decay_beyond_one_over_lr(tmp_path):
    """A decay above 1 with lr × wd ≥ 1 would zero or flip the weights every step."""
    args = [a.format(w=tmp_path) for a in BASE["train"]]
    code, err = cli([*args, "--weight-decay", "1e20"])
    assert code == 2 and err.strip() == (
        "lcfast: usage error: --weight-decay 1e+20: with --lr 0.001 AdamW would scale the weights by "
        "1 − lr·wd = -1e+17 every step; lr × weight decay must be < 1"), err
    assert files_under(tmp_path) == []
    from lcfast.pipeline.train_config import TrainConfig

    ok = dict(layers=1, width=16, heads=None, context=8, epochs=1, batch_size=4, seed=0, steps_per_epoch=None,
              eval_tokens=64, window_size=8)
    TrainConfig(**ok, lr=1e-3, weight_decay=2.0).checked()  # a large but meaningful decay is fine
    TrainConfig(**ok, lr=1e30, weight_decay=0.1).checked()  # an absurd lr is left to the non-finite-loss stop
