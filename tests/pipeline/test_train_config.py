"""TrainConfig (lcfast.pipeline.train_config): one record of the training hyper-parameters, whose
serialization is a run's config.json. Runs written before it existed must resume unchanged: their
"train" sections (below, as lcfast wrote them before TrainConfig) are what `train_section` gives."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from lcfast.errors import UsageError
from lcfast.pipeline.train_config import TrainConfig

#: config.json "train" of `lcfast train --layers 1 --width 8 --context 32 --batch-size 1024` on a
#: 347,132-token train shard, written by lcfast before TrainConfig (the steps come from the shard)
OLD_DEFAULTS = {"batch_size": 1024, "betas": [0.9, 0.95], "context": 32, "epochs": 1, "eps": 1e-08,
                "eval_tokens": 1048576, "grad_clip": 1.0, "lr": 0.001, "min_lr": 0.0001, "seed": 0,
                "steps_per_epoch": 10, "tokens_per_step": 32768, "total_steps": 10, "warmup_steps": 0,
                "weight_decay": 0.1}
#: the same for the --quick demo's L1_W96_E3_S0 (lr 3e-3, 60 steps per epoch, 3 epochs)
OLD_DEMO = {"batch_size": 32, "betas": [0.9, 0.95], "context": 64, "epochs": 3, "eps": 1e-08, "eval_tokens": 1048576,
            "grad_clip": 1.0, "lr": 0.003, "min_lr": 0.00030000000000000003, "seed": 0, "steps_per_epoch": 60,
            "tokens_per_step": 2048, "total_steps": 180, "warmup_steps": 9, "weight_decay": 0.1}


def _as_file(d: dict) -> dict:
    return json.loads(json.dumps(d))  # what config.json holds (tuples as lists)


def test_train_section_is_what_runs_before_it_wrote():
    """A resume compares the new section with the file's: equal to the bit, or old runs would be refused."""
    hp = TrainConfig(layers=1, width=8, context=32, batch_size=1024).checked()
    assert _as_file(hp.train_section(347_132)) == OLD_DEFAULTS
    demo = TrainConfig(layers=1, width=96, epochs=3, context=64, batch_size=32, lr=3e-3, steps_per_epoch=60)
    assert _as_file(demo.checked().train_section(347_132)) == OLD_DEMO
    from lcfast.pipeline.demo.profiles import QUICK

    assert QUICK.train_config(1, 96, 3) == demo


def test_every_default_is_declared_once():
    """train_run, run_sweep and the CLI take their defaults from TrainConfig, so none can drift."""
    from lcfast.cli.train import sweep as cli_sweep
    from lcfast.cli.train import train as cli_train
    from lcfast.pipeline.sweep import run_sweep
    from lcfast.pipeline.train import train_run

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    cli_names = {"window_size": "window"}
    for fn in (train_run, run_sweep, cli_train, cli_sweep):
        params = inspect.signature(fn).parameters
        seen = 0
        for name, want in defaults.items():
            p = params.get(cli_names.get(name, name) if fn in (cli_train, cli_sweep) else name)
            if p is None or (fn in (run_sweep, cli_sweep) and name == "epochs"):  # a sweep's epochs: a grid
                continue
            have = getattr(p.default, "default", p.default)  # typer.Option(...) holds it in .default
            assert have == want, (fn.__module__, fn.__name__, name)
            seen += 1
        assert seen >= 8, (fn.__module__, fn.__name__, seen)


def test_checked_resolves_heads_and_names_the_flag():
    assert TrainConfig(layers=1, width=128).checked().heads == 2
    assert TrainConfig(layers=1, width=96).checked().heads == 1  # 96 // 64 = 1
    with pytest.raises(UsageError, match="--heads 3 must divide --width 128"):
        TrainConfig(layers=1, width=128, heads=3).checked()
    with pytest.raises(UsageError, match="--lr"):
        TrainConfig(layers=1, width=8, lr=0).checked()
    with pytest.raises(TypeError):  # keywords only: a row of positional numbers is not a config
        TrainConfig(1, 8)  # type: ignore[misc]
