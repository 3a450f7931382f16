"""Bad input around Hugging Face models and data: one test per row of the "Hugging Face models and
data" table of docs/bad-input.md, through the real CLI (`lcfast.cli.app.main`, as tests/cli/test_bad_input.py
does): exit 1 (data) or 2 (usage), one line on stderr naming the flag or file, no existing file changed.
Then: commands that do not need the [hf] extra never import it (a fresh interpreter, the console
script's entry point)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from helpers import assert_bad_input, make_docs, make_tiny, save_hf_model, save_hub_model  # noqa: E402

COLLECT = ["--device", "cpu", "--no-progress", "--context", "32", "--max-tokens", "128"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_shards, tiny_bpe_tokenizer):
    """A tiny Llama folder (with the shards' tokenizer.json) and its shards."""
    root = tmp_path_factory.mktemp("hf_bad_input")
    save_hf_model("llama", root / "llama", tiny_bpe_tokenizer, seed=0)
    shutil.copytree(tiny_shards, root / "data")
    # a training history in a hub cache (copied into each case's HF_HUB_CACHE): step0 and step1000,
    # no main; their commits share the prefix abcd
    save_hub_model(root / "hub_hist", "someone/hist", "gpt_neox", tiny_bpe_tokenizer, {"step0": 0, "step1000": 1},
                   commits={"step0": "abcd" + "0" * 36, "step1000": "abcd" + "1" * 36})
    return root


def _history(w, base):
    shutil.copytree(base / "hub_hist", w / "hub", symlinks=True)


def case_hf_revision_not_cached(w, base):
    _history(w, base)
    return ["collect", "hf:someone/hist@step1500", "--data", base / "data", "--out", w / "c", *COLLECT], 1, \
        f"MODEL hf:someone/hist@step1500: no revision step1500 in the local Hugging Face cache " \
        f"{w / 'hub' / 'models--someone--hist'} (cached: step0, step1000); lcfast never downloads: fetch it first, " \
        "e.g. 'huggingface-cli download someone/hist --revision step1500'"


def case_hf_no_main_revision(w, base):
    _history(w, base)
    return ["collect", "hf:someone/hist", "--data", base / "data", "--out", w / "c", *COLLECT], 1, \
        "MODEL hf:someone/hist: no 'main' revision in the local Hugging Face cache"


def case_hf_revision_ambiguous(w, base):
    _history(w, base)
    return ["collect", "hf:someone/hist@abcd", "--data", base / "data", "--out", w / "c", *COLLECT], 2, \
        "MODEL hf:someone/hist@abcd: ambiguous: the prefix of 2 cached commits (abcd00000000, abcd11111111); " \
        "give more digits"


def case_hf_revision_malformed(w, base):
    _history(w, base)
    return ["collect", "hf:someone/hist@../../x", "--data", base / "data", "--out", w / "c", *COLLECT], 2, \
        "MODEL hf:someone/hist@../../x: not a revision name (a branch, tag or commit hash)"


def case_revisions_not_hub(w, base):
    return ["collect", base / "llama", "--revisions", "all", "--data", base / "data", "--out", w / "c", *COLLECT], 2, \
        "--revisions all: only for hf:ORG/NAME models from the local Hugging Face cache"


def case_revisions_with_at(w, base):
    _history(w, base)
    return ["collect", "hf:someone/hist@step0", "--revisions", "all", "--data", base / "data", "--out", w / "c",
            *COLLECT], 2, "--revisions all: MODEL hf:someone/hist@step0 already names a revision; drop '@step0' or " \
                          "--revisions"


def case_revisions_invalid(w, base):
    _history(w, base)
    return ["collect", "hf:someone/hist", "--revisions", "step0,,step1000", "--data", base / "data", "--out", w / "c",
            *COLLECT], 2, "--revisions step0,,step1000: expected 'all' or comma-separated revisions"


def case_revisions_missing_one(w, base):
    _history(w, base)
    return ["collect", "hf:someone/hist", "--revisions", "step0,step9", "--data", base / "data", "--out", w / "c",
            *COLLECT], 1, "MODEL hf:someone/hist@step9: no revision step9 in the local Hugging Face cache"


def case_revisions_none_complete(w, base):
    _history(w, base)
    for snap in (w / "hub" / "models--someone--hist" / "snapshots").iterdir():  # config.json fetched alone
        for f in snap.iterdir():
            if f.name != "config.json":
                f.unlink()
    return ["collect", "hf:someone/hist", "--revisions", "all", "--data", base / "data", "--out", w / "c",
            *COLLECT], 1, "MODEL hf:someone/hist: no cached revision holds a complete model (config.json + weights)"


def case_hf_model_not_cached(w, base):
    return ["collect", "hf:someone/absent", "--data", base / "data", "--out", w / "c", *COLLECT], 1, \
        f"MODEL hf:someone/absent: not in the local Hugging Face cache {w / 'hub'}"


def case_hf_dataset_not_cached(w, base):
    return ["tokenize", "hf:someone/absent", "--tokenizer", base / "llama", "--out", w / "d"], 1, \
        "INPUT hf:someone/absent:train: not in the local Hugging Face caches"


def case_hf_text_column_missing(w, base):
    import datasets

    datasets.Dataset.from_dict({"story": ["one two", "three"]}).save_to_disk(str(w / "ds"))
    return ["tokenize", f"hf:{w / 'ds'}", "--tokenizer", base / "llama", "--out", w / "d"], 1, "no column 'text'"


def case_hf_extra_missing(w, base):
    return ["collect", base / "llama", "--data", base / "data", "--out", w / "c", *COLLECT], 2, \
        "needs the 'transformers' package, which lcfast does not install by default: pip install 'lcfast[hf]'"


def case_hf_tokenizer_mismatch(w, base):
    from lcfast.data.tokenize import tokenize_files
    txt = w / "other.txt"
    txt.write_text("\n\n".join(make_docs(150, seed=3)) + "\n", encoding="utf-8")
    tokenize_files([txt], "train:300", w / "d300", val_fraction=0.2)  # another tokenizer, a smaller vocabulary
    return ["collect", base / "llama", "--data", w / "d300", "--out", w / "c", *COLLECT], 1, \
        "train.lcshard: tokenizer mismatch: the shard's tokenizer"


def case_stats_memory_refused(w, base):
    return ["collect", base / "llama", "--data", base / "data", "--out", w / "c", *COLLECT, "--layers", "all",
            "--max-memory", "50kB"], 2, \
        "--layers all: the class statistics need 652.8 kB at their peak (3 slots × 400 classes × 16 dims"


def case_layers_invalid(w, base):
    return ["collect", base / "llama", "--data", base / "data", "--out", w / "c", *COLLECT, "--layers", "0,x"], 2, \
        "--layers 0,x: expected 'all' or comma-separated hidden-state numbers"


def case_layers_out_of_range(w, base):
    return ["collect", base / "llama", "--data", base / "data", "--out", w / "c", *COLLECT, "--layers", "1,7"], 2, \
        "--layers 1,7: this model has hidden states 0..2"


def case_classes_invalid(w, base):
    return ["collect", base / "llama", "--data", base / "data", "--out", w / "c", *COLLECT, "--classes", "top:0"], 2, \
        "--classes top:0: expected 'all' or top:K"


def case_dtype_invalid(w, base):
    return ["collect", base / "llama", "--data", base / "data", "--out", w / "c", *COLLECT, "--dtype", "float8"], 2, \
        "--dtype float8: expected one of float32, bfloat16, float16"


def case_context_too_long(w, base):
    args = [a if a != "32" else "5000" for a in COLLECT]
    return ["collect", base / "llama", "--data", base / "data", "--out", w / "c", *args], 2, \
        "--context 5000: longer than the model's maximum sequence length 4096"


def case_hf_remote_code_model(w, base):
    """A folder whose config asks for code from the hub (auto_map, unknown model_type): refused,
    trust_remote_code is never set."""
    shutil.copytree(base / "llama", w / "custom")
    cfg = json.loads((w / "custom" / "config.json").read_text())
    cfg.update(model_type="my_custom_lm", auto_map={"AutoModelForCausalLM": "modeling_custom.CustomLM"})
    (w / "custom" / "config.json").write_text(json.dumps(cfg))
    (w / "custom" / "modeling_custom.py").write_text(f"open({str(w / 'PWNED')!r}, 'w').close()\n")
    return ["collect", w / "custom", "--data", base / "data", "--out", w / "c", *COLLECT], 1, \
        "transformers cannot load this model as a causal LM (its config.json points to its own modeling code"


def case_export_foreign_folder(w, base):
    t = make_tiny(w / "t", epochs=1)
    (w / "busy").mkdir()
    (w / "busy" / "notes.txt").write_text("mine")
    return ["export", t["run"], "--out", w / "busy"], 2, "--out " + str(w / "busy") + ": exists and holds other files"


CASES = {name[len("case_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_bad_input(name, base, tmp_path, monkeypatch):
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(w / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(w / "dcache"))
    argv, want_code, want_text = CASES[name](w, base)
    if name == "hf_extra_missing":
        monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    assert_bad_input(argv, want_code, want_text, w, base)
    assert not (w / "PWNED").exists()


def test_docs_section_lists_every_case():
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "bad-input.md").read_text(encoding="utf-8")
    section = doc.split("\n## Hugging Face models and data", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M)) == set(CASES)


def test_missing_extra_in_a_fresh_process(base, tmp_path):
    """The console script's entry point, without transformers importable: one line, exit 2."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "transformers.py").write_text(
        "raise ImportError('No module named transformers (blocked by the test)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), *sys.path]))
    r = subprocess.run([sys.executable, "-c", "from lcfast.cli.app import main; main()", "collect", str(base / "llama"),
                        "--data", str(base / "data"), "--out", str(tmp_path / "c"), *COLLECT],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "pip install 'lcfast[hf]'" in r.stderr


def test_commands_without_the_extra_never_import_it(tmp_path):
    """count, train, collect/measure of a lcfast run, export: no transformers, no datasets imported."""
    t = make_tiny(tmp_path / "t", epochs=1)
    script = f"""
import sys
from lcfast.cli.app import main
def run(*a):
    try:
        main([str(x) for x in a])
    except SystemExit as e:
        assert not e.code, (a, e.code)
run("count", {str(t['data'] / 'train.lcshard')!r})
run("collect", {str(t['run'])!r}, "--device", "cpu", "--no-progress", "--batch-size", "4", "--layers", "all")
run("measure", {str(t['run'])!r}, "--out", {str(tmp_path / 'm')!r}, "--no-progress")
run("export", {str(t['run'])!r}, "--out", {str(tmp_path / 'neo')!r})
run("collect", {str(tmp_path / 'neo')!r}, "--data", {str(t['data'])!r}, "--device", "cpu", "--no-progress")
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "datasets", "huggingface_hub"))
print("IMPORTED", bad)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "IMPORTED []" in r.stdout, r.stdout[-2000:]
