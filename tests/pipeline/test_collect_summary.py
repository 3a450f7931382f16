"""CollectSummary (lcfast.pipeline.collect.summary): collect.json read back as attributes, tolerant
of keys it does not know, strict about the keys every reader needs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lcfast.errors import DataError
from lcfast.pipeline.collect.summary import CollectSummary, OptionsRecord, PassRecord

from helpers import make_tiny

MINIMAL = {"model": "m", "checkpoint": "epoch_1", "model_fingerprint": "f", "files": {"train": "t.safetensors"},
           "source": {"kind": "run", "path": "/r"}}


def _plain(v):
    """A record back to the JSON it was read from (its extra keys included)."""
    if dataclasses.is_dataclass(v):
        d = {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.name != "extra"}
        return {**d, **v.extra}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


@pytest.mark.usefixtures("one_thread")
def test_every_key_collect_writes_reads_back_as_an_attribute(tmp_path):
    from lcfast.pipeline.collect import CollectOptions, collect

    t = make_tiny(tmp_path, epochs=1)
    [written] = collect(t["run"], out=tmp_path / "coll", opts=CollectOptions(device="cpu", exact=True),
                        progress=False)
    on_disk = json.loads((tmp_path / "coll" / "collect.json").read_text(encoding="utf-8"))
    s = CollectSummary.read(tmp_path / "coll")
    assert s == CollectSummary.from_json(written)
    for key, value in on_disk.items():
        assert _plain(getattr(s, key)) == value, key
    assert s.options.exact is True and s.source.kind == "run"
    assert s.passes["train_exact"].tokens == s.pass_tokens("train")
    assert s.val_pass.positions == s.pass_tokens("val") > 0


def test_unknown_keys_are_kept_and_readable():
    s = CollectSummary.from_json({**MINIMAL, "folds": 5, "options": {"exact": True, "revision": "abc"},
                                  "passes": {"train": {"tokens": 7, "se": 0.1}}})
    assert s.folds == 5 and s.extra == {"folds": 5}
    assert s.options.exact is True and s.options.revision == "abc"
    assert s.passes["train"].se == 0.1 and s.pass_tokens("train") == 7
    with pytest.raises(AttributeError, match="no 'nope'"):
        s.nope  # noqa: B018


def test_absent_optional_keys_read_as_the_defaults_readers_used():
    s = CollectSummary.from_json(MINIMAL)
    assert s.options == OptionsRecord() and s.options.min_count == 1 and s.options.dtype == "float32"
    assert s.epoch is None and s.tokenizer is None and s.layout is None and s.pass_tokens("val") is None
    assert PassRecord().reused is False


@pytest.mark.parametrize("key", ["model", "source", "files"])
def test_a_missing_required_key_is_a_data_error(key):
    with pytest.raises(DataError, match=f"collect.json: missing '{key}'"):
        CollectSummary.from_json({k: v for k, v in MINIMAL.items() if k != key})
    with pytest.raises(DataError, match="'options' is not a JSON object"):
        CollectSummary.from_json({**MINIMAL, "options": [1]})
