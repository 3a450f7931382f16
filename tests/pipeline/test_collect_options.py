"""CollectOptions parsed where it is made: --layers and --classes as LayerChoice / ClassChoice."""

from __future__ import annotations

import dataclasses

import pytest

from lcfast.errors import UsageError
from lcfast.pipeline.collect import CollectOptions
from lcfast.pipeline.collect.layers import ClassChoice, LayerChoice, parse_classes, parse_layers


def test_strings_become_typed_choices_on_construction():
    o = CollectOptions(layers=" 6, 0,2,6", classes="top:8")
    assert o.layers == LayerChoice(" 6, 0,2,6", (0, 2, 6)) and o.classes == ClassChoice("top:8", 8)
    assert CollectOptions(layers="ALL", classes="all").layers.indices is None
    assert CollectOptions().layers is None and CollectOptions().classes is None
    again = dataclasses.replace(o, device="cpu")  # (collect under torchrun) parsed values pass through
    assert again.layers is o.layers and again.classes is o.classes


@pytest.mark.parametrize("kw, message", [
    ({"layers": "1;2"}, "--layers 1;2: expected 'all' or comma-separated hidden-state numbers (0 = the embeddings)"),
    ({"classes": "top:0"}, "--classes top:0: expected 'all' or top:K with K ≥ 1"),
    ({"classes": "first:3"}, "--classes first:3: expected 'all' or top:K"),
])
def test_bad_values_are_refused_when_the_options_are_made(kw, message):
    with pytest.raises(UsageError) as e:
        CollectOptions(**kw)
    assert str(e.value).startswith(message)


def test_the_range_is_checked_once_the_model_is_known():
    c = LayerChoice.parse("0,3")
    assert c.resolve(4) == [0, 3] and LayerChoice.parse("all").resolve(3) == [0, 1, 2]
    with pytest.raises(UsageError, match=r"^--layers 0,3: this model has hidden states 0\.\.2 "):
        c.resolve(3)
    assert parse_layers("2,1", None) == [1, 2] and parse_layers("all", None) == [] and parse_classes("top:5") == 5
