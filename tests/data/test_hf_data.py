"""Hugging Face datasets as `lcfast tokenize` input, offline: hf:PATH (save_to_disk), hf:NAME from
the hub cache (the repo's files) and from the datasets cache (an earlier load_dataset), --text-column,
batched reading (bounded memory); datasets the tests create themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from lcfast.data.shards import TokenShard  # noqa: E402
from lcfast.data.tokenize import tokenize_files  # noqa: E402
from lcfast.errors import DataError, UsageError  # noqa: E402

from helpers import make_docs  # noqa: E402


@pytest.fixture(scope="module")
def docs():
    return make_docs(120, seed=4)


def _tokens(out: Path) -> list[int]:
    return [int(t) for split in ("train", "val") for t in TokenShard(str(out / f"{split}.lcshard")).tokens]


@pytest.fixture
def plain(tmp_path, docs, tiny_bpe_tokenizer):
    """The same documents tokenized from a .txt file (the reference)."""
    p = tmp_path / "docs.txt"
    p.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    tokenize_files([p], tiny_bpe_tokenizer, tmp_path / "ref", val_fraction=0.2)
    return tmp_path / "ref"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "dcache"))
    return tmp_path / "hub"


def test_save_to_disk(tmp_path, docs, plain, tiny_bpe_tokenizer):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"story": docs, "n": list(range(len(docs)))}),
                               "validation": datasets.Dataset.from_dict({"story": docs[:5], "n": list(range(5))})})
    dd.save_to_disk(str(tmp_path / "dd"))
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "one"))
    tokenize_files([f"hf:{tmp_path / 'dd'}"], tiny_bpe_tokenizer, tmp_path / "a", val_fraction=0.2, text_column="story")
    tokenize_files([f"hf:{tmp_path / 'one'}"], tiny_bpe_tokenizer, tmp_path / "b", val_fraction=0.2)
    assert _tokens(tmp_path / "a") == _tokens(plain) == _tokens(tmp_path / "b")
    m = tokenize_files([f"hf:{tmp_path / 'dd'}:validation"], tiny_bpe_tokenizer, tmp_path / "c", text_column="story")
    assert m["documents"]["total"] == 5
    with pytest.raises(DataError, match="no column 'text'.*--text-column"):
        tokenize_files([f"hf:{tmp_path / 'dd'}"], tiny_bpe_tokenizer, tmp_path / "d")
    with pytest.raises(DataError, match="no split 'test'"):
        tokenize_files([f"hf:{tmp_path / 'dd'}:test"], tiny_bpe_tokenizer, tmp_path / "d", text_column="story")


def test_hub_cache_dataset(tmp_path, docs, plain, hub, tiny_bpe_tokenizer):
    """A dataset repo as `huggingface-cli download --repo-type dataset` leaves it (parquet files in a
    snapshot), streamed without a network."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    snap = hub / "datasets--someone--stories" / "snapshots" / "c0ffee"
    (snap / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": docs}), snap / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": docs[:7]}), snap / "data" / "validation-00000-of-00001.parquet")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("c0ffee")
    tokenize_files(["hf:someone/stories"], tiny_bpe_tokenizer, tmp_path / "a", val_fraction=0.2)
    assert _tokens(tmp_path / "a") == _tokens(plain)
    m = tokenize_files(["hf:someone/stories:validation"], tiny_bpe_tokenizer, tmp_path / "b")
    assert m["documents"]["total"] == 7
    with pytest.raises(DataError, match=f"not in the local Hugging Face caches .*{hub}"):
        tokenize_files(["hf:someone/missing"], tiny_bpe_tokenizer, tmp_path / "c")


def test_datasets_cache(tmp_path, docs, plain, hub, tiny_bpe_tokenizer):
    """What an earlier (online) load_dataset left in the datasets cache, read offline. The cache is
    written here by the parquet builder, as load_dataset would."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    src = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"body": docs}), src)
    kw = dict(cache_dir=str(tmp_path / "dcache"), dataset_name="localstories", hash="0001",
              data_files={"train": [str(src)]})
    try:  # the layout a hub load leaves: <name>/default/<version>/<hash>/
        Parquet(config_id="default", **kw).download_and_prepare()
    except TypeError:  # older datasets: no config_id; name the config folder by hand
        Parquet(**kw).download_and_prepare()
        (cfg,) = (tmp_path / "dcache" / "localstories").glob("default-*")
        cfg.rename(cfg.with_name("default"))
    tokenize_files(["hf:localstories"], tiny_bpe_tokenizer, tmp_path / "a", val_fraction=0.2, text_column="body")
    assert _tokens(tmp_path / "a") == _tokens(plain)


def test_reads_in_batches(tmp_path, docs, tiny_bpe_tokenizer, monkeypatch):
    """Rows stream through in batches of the text column only: a dataset larger than memory never
    has to fit (datasets memory-maps save_to_disk data; nothing materialises a whole column)."""
    from lcfast.data import tokenize as tk

    big = docs * 30
    datasets.Dataset.from_dict({"text": big, "other": ["x" * 1000] * len(big)}).save_to_disk(str(tmp_path / "big"))
    seen = []
    real = tk._hf_batches

    def spy(src, batch_rows=4096, text_column="text"):
        for texts, nulls, frac in real(src, batch_rows=512, text_column=text_column):
            seen.append(len(texts) + nulls)
            yield texts, nulls, frac

    monkeypatch.setattr(tk, "_hf_batches", spy)
    m = tokenize_files([f"hf:{tmp_path / 'big'}"], tiny_bpe_tokenizer, tmp_path / "o")
    assert sum(seen) == len(big) and max(seen) == 512 and len(seen) == -(-len(big) // 512)
    assert m["documents"]["total"] == len(big)


def test_input_syntax(tmp_path, hub):
    from lcfast.data.tokenize import resolve_inputs

    (a,) = resolve_inputs(["hf:org/name"])
    assert (a.kind, a.name, a.config, a.split) == ("hf", "org/name", None, "train")
    (b,) = resolve_inputs(["hf:org/name:validation"])
    assert (b.config, b.split) == (None, "validation")
    (c,) = resolve_inputs(["hf:org/name:en"])
    assert (c.config, c.split) == ("en", "train")
    (d,) = resolve_inputs(["hf:org/name:en:test[:10%]"])
    assert (d.config, d.split) == ("en", "test[:10%]")
    with pytest.raises(UsageError, match="hf:NAME"):
        resolve_inputs(["hf:a:b:c:d"])
    with pytest.raises(UsageError, match="no such dataset folder"):
        resolve_inputs([f"hf:{tmp_path / 'nope'}"])


def test_tokenizer_of_a_model_folder(tmp_path, docs, plain, tiny_bpe_tokenizer):
    """--tokenizer MODEL_DIR uses the folder's tokenizer.json; a folder without one says how to make it."""
    import shutil

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    p = tmp_path / "docs.txt"
    with pytest.raises(UsageError, match="no tokenizer.json.*save_pretrained"):
        tokenize_files([p], tmp_path / "model", tmp_path / "o")
    shutil.copyfile(tiny_bpe_tokenizer, tmp_path / "model" / "tokenizer.json")
    tokenize_files([p], tmp_path / "model", tmp_path / "o", val_fraction=0.2)
    assert _tokens(tmp_path / "o") == _tokens(plain)
