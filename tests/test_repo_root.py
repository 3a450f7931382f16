"""Nothing at the repository root is importable, so nothing there shadows an installed package.

`python -m pytest`, `python -c`, `python -` and `torchrun -m` put the current folder first on
sys.path. The root's `kernels/` used to be a link to the `lcfast.kernels` package; transformers
5.25 imports Hugging Face's `kernels` distribution when a model is built, got lcfast's instead, and
every transformers test failed from a fresh clone ("cannot import name 'CUDAProperties' from
'kernels'"). These tests run from the root in subprocesses, as a user does. `lcfast doctor` names
such shadows in any folder.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import LCFAST, ROOT, child_env, console


def _python(code: str, *, stdin: bool = False) -> subprocess.CompletedProcess:
    """`python -c CODE` (or `python -` with CODE on stdin) started in the repository root."""
    args = [sys.executable, "-"] if stdin else [sys.executable, "-c", code]
    return subprocess.run(args, input=code if stdin else None, cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=300)


def test_no_entry_at_the_root_is_an_importable_module():
    from lcfast.cli.doctor import _importable_name

    importable = [p.name for p in ROOT.iterdir() if not p.name.startswith(".") and _importable_name(p)]
    assert importable == [], f"importable at the repository root (keep packages under python/): {importable}"
    assert (ROOT / "kernels").is_dir() and not (ROOT / "kernels").is_symlink()  # the layout still shows kernels/
    assert not list((ROOT / "kernels").glob("*.py"))


def test_import_kernels_from_the_root_gives_the_installed_distribution():
    p = _python("import kernels; print(getattr(kernels, '__file__', None))")
    assert p.returncode == 0, p.stderr
    where = p.stdout.strip()
    try:
        dist = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:  # older transformers: no such dependency installed
        assert where == "None", where  # at most the README-only folder, as a namespace: no code of ours runs
        return
    assert where != "None", where
    for ours in (ROOT / "kernels", ROOT / "python"):  # (the venv may live inside the root, as in CI)
        assert not Path(where).resolve().is_relative_to(ours.resolve()), where
    assert Path(where).resolve().is_relative_to(Path(dist.locate_file("")).resolve()), (where, dist)


@pytest.mark.parametrize("stdin", [False, True], ids=["python -c", "python -"])
def test_a_transformers_model_builds_and_runs_from_the_root(stdin):
    pytest.importorskip("transformers")
    code = (
        "import torch, transformers\n"
        "cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)\n"
        "m = transformers.AutoModelForCausalLM.from_config(cfg).eval()\n"
        "print(tuple(m(torch.zeros(1, 8, dtype=torch.long)).logits.shape))\n"
    )
    p = _python(code, stdin=stdin)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "(1, 8, 64)"


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_doctor_names_what_the_current_folder_shadows(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    (tmp_path / "json.py").write_text("")  # the standard library counts too
    (tmp_path / "notes").mkdir()  # a folder without __init__.py shadows nothing
    (tmp_path / "my_script.py").write_text("")  # a module nobody else provides shadows nothing
    r = console(["doctor", "--json"], cwd=tmp_path, timeout=120)
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert rep["failed"] == ["shadowed_by_current_folder"]
    want = ["json.py shadows json (the standard library)"]
    if "kernels" in importlib.metadata.packages_distributions():  # transformers >= 5.25 brings it
        want.append(f"kernels/ shadows kernels (kernels {importlib.metadata.version('kernels')})")
    assert rep["shadowed_by_current_folder"].split("; ") == want
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("lcfast: error: doctor: the current folder shadows installed modules (json.py shadows json")


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_doctor_from_the_root_finds_no_shadow():
    r = console(["doctor", "--json"], cwd=ROOT, timeout=120)
    rep = json.loads(r.stdout)
    assert rep["shadowed_by_current_folder"] == "none"
    assert r.returncode == 0 and rep["failed"] == [], r.stderr
