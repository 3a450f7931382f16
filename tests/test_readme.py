"""The README's code runs as written: every ```python block and every ```bash block that is not
marked `<!-- not run by the tests: REASON -->` (installs, a GPU, the Hugging Face cache), in order,
each in a subprocess, in one scratch folder that stands for the repository root: it links every
top-level entry of the repository (`kernels/`, `python/`, `tests/`, …), so `python -`, `python -c`
and `python -m` see the same importable names as from a clone's root (a root-level `kernels`
package once shadowed the one transformers imports), while the recipes' outputs stay out of the
clone.

The python blocks read the outputs of `lcfast demo` (the README's first set-up command) in
lcfast-demo/. The full demo takes minutes, so the scratch folder gets the same folder layout from a
miniature demo profile that is also named "full" (`run_demo(profile=…)`: the same code, fewer and
smaller models, lcfast-demo/work/full/{data,runs/L1_W32_E3_S0,…}); the blocks do not depend on
the numbers. `lcfast` and `python` in the bash blocks are this interpreter's (its bin folder first
on PATH), as after `source .venv/bin/activate`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import LCFAST, ROOT, one_thread

README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*not run by the tests:\s*(.+?)\s*-->")


def blocks(text: str) -> list[dict]:
    """Fenced code blocks: language, code, the line it starts on, the reason it is not run (or None)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        prev = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        skip = SKIP.search(prev)
        out.append({"lang": m.group(1), "code": "\n".join(lines[i + 1 : j]) + "\n", "line": i + 1,
                    "skip": skip.group(1) if skip else None})
        i = j + 1
    return out


def test_setup_commands_are_ci():
    """Exactly two set-up commands at the top: the demo, and the tests exactly as .ci/run runs them."""
    text = README.read_text(encoding="utf-8")
    setup = text[text.index("## Set up"):text.index("\n## ", text.index("## Set up") + 1)]
    cmds = [b["code"].strip() for b in blocks(setup)]
    assert len(cmds) == 2 and cmds[0].endswith("lcfast demo"), cmds
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.startswith("python3 -m venv")]
    assert ci == [cmds[1]]


def test_every_python_block_is_run():
    py = [b for b in blocks(README.read_text(encoding="utf-8")) if b["lang"] == "python"]
    assert py and not [b["line"] for b in py if b["skip"]]
    assert all(b["lang"] in ("bash", "python") for b in blocks(README.read_text(encoding="utf-8")))


def _demo_layout(root: Path) -> None:
    """lcfast-demo/ as `lcfast demo` lays it out (work/full/…), from a miniature profile."""
    from lcfast.pipeline.demo import DemoProfile, run_demo

    mini = DemoProfile(name="full", n_stories=150, seed=0, vocab=300, val_fraction=0.1, context=32, batch_size=8,
                       lr=3e-3, layers=(1,), widths=(16, 32), epochs=(1, 3), steps_per_epoch=3, collect_batch=32,
                       track_training="none", eval_tokens=2048)
    run_demo(root / "lcfast-demo", profile=mini, device="cpu", progress=False, workers=1)


def _link_root_entries(scratch: Path) -> list[str]:
    """Link the repository's tracked top-level entries into `scratch` (what a user's clone has at its
    root; git-ignored outputs such as .venv/ or runs/ are left out, so no recipe writes into them)."""
    p = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    tracked = {f.split("/", 1)[0] for f in p.stdout.split("\0") if f} if p.returncode == 0 else set()
    names = sorted(tracked or (e.name for e in ROOT.iterdir() if not e.name.startswith(".")))
    for name in names:
        if not (scratch / name).exists():
            (scratch / name).symlink_to(ROOT / name, target_is_directory=(ROOT / name).is_dir())
    return names


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_readme_blocks_run(tmp_path):
    """Every runnable block, in README order, exits 0 (its output is shown when it does not)."""
    with one_thread():  # the miniature demo's models are tiny
        _demo_layout(tmp_path)
    linked = _link_root_entries(tmp_path)
    assert "kernels" in linked
    before = {e.name for e in tmp_path.iterdir()}
    env = {**os.environ, "PATH": f"{LCFAST.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("LCFAST_TEST_KILL_AT", None)
    ran, timings = 0, []
    for b in blocks(README.read_text(encoding="utf-8")):
        if b["skip"]:
            continue
        cmd = (["bash", "-euo", "pipefail", "-c", b["code"]] if b["lang"] == "bash"
               else [sys.executable, "-c", b["code"]])
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        timings.append((b["line"], round(time.perf_counter() - t0, 1)))
        assert p.returncode == 0, (f"README.md line {b['line']} ({b['lang']}) exited {p.returncode}:\n"
                                   f"{b['code']}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}")
        ran += 1
    print("README blocks (line, seconds):", timings)
    assert ran >= 5
    # what the recipes promise is there
    assert (tmp_path / "my-analysis" / "correlations.csv").is_file() and list((tmp_path / "plots").glob("depth_*.png"))
    assert (tmp_path / "ds-data" / "train.lcshard").is_file()
    # run from a clone's root, the recipes leave nothing that `git status` shows
    left = sorted(e.name + ("/" if e.is_dir() else "") for e in tmp_path.iterdir() if e.name not in before)
    shown = [n for n in left
             if subprocess.run(["git", "check-ignore", "-q", "--no-index", n], cwd=ROOT).returncode != 0]
    assert left and shown == [], f"README recipes leave files that .gitignore does not cover: {shown}"
