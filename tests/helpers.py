"""What several test modules share, importable from any of them as `helpers` (pyproject.toml's
[tool.pytest.ini_options] puts tests/ on sys.path): tiny documents, runs and transformers models;
the CLI run in process, as the installed console script and under torchrun; kills and signals; a
full disk; snapshots of folders; one comparator of numbers with a tolerance table by dtype.

Kept out of conftest.py: two conftest modules (tests/ and tests/kernels/) share the module name
`conftest`, so `from conftest import …` would depend on the order pytest collects them in. Fixtures
live in conftest.py (`one_thread`, the tiny corpus/tokenizer/shards); plain functions live here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: the installed console script (tests that must run it skip when it is missing)
LCFAST = Path(sys.executable).with_name("lcfast")


# -- threads -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread for the block: tiny models and many small ops run faster without OpenMP
    hand-offs on a shared 2-core machine (observed 10× slower with 2 threads under load), and
    results that must be bit-identical see the same summation order. (The fixture: conftest.py.)"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# -- comparing numbers -------------------------------------------------------------------------------
#: (rtol, atol) by the dtype compared, when a test gives none (one table, as Liger-Kernel's tests keep):
#: float64 accumulations agree with float64 brute force to ~1e-12; a float32 result to its 24-bit
#: mantissa over short sums; half precisions to a few of their ulps.
TOLERANCE = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, (bool, int, np.integer)):
        return torch.tensor(int(x), dtype=torch.int64)
    if isinstance(x, (float, np.floating)):
        return torch.tensor(float(x), dtype=torch.float64)  # (torch.as_tensor would make a Python float float32)
    return torch.as_tensor(x)


def assert_close(got, want, *, rtol: float | None = None, atol: float | None = None, dtype=None,
                 what: str = "values") -> None:
    """Fail unless |got − want| ≤ atol + rtol·|want| at every element (compared in float64; a NaN is
    never close). `got`, `want`: tensors, numpy arrays or numbers of one shape; integers and bools
    must be equal. rtol/atol default to TOLERANCE[dtype] (dtype: want's, else got's). The message
    names `what`, how many elements failed, and the worst one with its error and tolerance."""
    g, w = _as_tensor(got), _as_tensor(want)
    assert g.shape == w.shape, f"{what}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
    if not (g.is_floating_point() or w.is_floating_point()):
        bad = g.to(torch.int64) != w.to(torch.int64)
        assert not bool(bad.any()), f"{what}: {int(bad.sum())} of {w.numel()} differ: {g.tolist()} != {w.tolist()}"
        return
    dt = dtype or (w.dtype if w.is_floating_point() else g.dtype)
    r0, a0 = TOLERANCE[dt]
    rtol, atol = (r0 if rtol is None else rtol), (a0 if atol is None else atol)
    g64, w64 = g.to(torch.float64).reshape(-1), w.to(torch.float64).reshape(-1)
    err = (g64 - w64).abs()
    tol = atol + rtol * w64.abs()
    bad = ~(err <= tol)  # NaN on either side: not close
    if bool(bad.any()):
        i = int(torch.where(bad, (err / tol).nan_to_num(float("inf")), -1.0).argmax())
        raise AssertionError(f"{what}: {int(bad.sum())} of {w64.numel()} not close (rtol {rtol:g}, atol {atol:g}); "
                             f"worst at flat index {i}: got {g64[i].item()!r}, expected {w64[i].item()!r}, "
                             f"|error| {err[i].item():.3g} > tolerance {tol[i].item():.3g}")


# -- tiny documents ----------------------------------------------------------------------------------
_WORDS = (
    "the a little big happy sad dog cat bird tree ball park house friend mom dad sun day went "
    "said was very fun toy red blue girl boy loved wanted found under over played jumped ran saw "
    "with and to in on it is they we you he she"
).split()
_NAMES = ["Lily", "Tom", "Max", "Sue", "Ben", "Mia", "Zoë", "José"]
_ODD = ["it's", "they're", "we'll", "3", "42", "1,000", "café", "naïve", "🙂", "—", "“hi”", "  ", "\t", "日本"]


def make_docs(n: int, seed: int = 0) -> list[str]:
    """`n` small story-like documents (some multi-line, some with unicode, digits, apostrophes).

    No document contains a blank line, so joining them with blank lines gives a .txt corpus with
    the same documents.
    """
    r = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(r.randint(1, 3)):
            sents = []
            for _ in range(r.randint(1, 4)):
                ws = [r.choice(_WORDS) for _ in range(r.randint(2, 9))]
                if r.random() < 0.3:
                    ws.insert(r.randint(0, len(ws)), r.choice(_ODD))
                sents.append(r.choice(_NAMES) + " " + " ".join(ws) + r.choice([".", "!", "?", ","]))
            lines.append(" ".join(sents))
        docs.append("\n".join(lines))
    return docs


# -- tiny lcfast runs --------------------------------------------------------------------------------
TINY_MODEL = dict(layers=1, width=16, heads=2, context=16, batch_size=4, lr=3e-3, weight_decay=0.1, seed=0,
                  device="cpu", steps_per_epoch=1, eval_tokens=4096, progress=False, window_size=8)


def make_tiny(root: Path, epochs: int = 2, vocab: int = 300, n_stories: int = 20, name: str = "run") -> dict:
    """A tiny real pipeline: synthetic corpus → data (BPE train:`vocab`, val_fraction 0.2) → a run
    of TINY_MODEL trained `epochs` × 1 step. Returns {"root", "data", "run"} (Paths); the data folder
    is reused when `root` already holds it."""
    from lcfast.data.synth import write_corpus
    from lcfast.data.tokenize import tokenize_files
    from lcfast.pipeline.train import train_run

    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "corpus"
    data = root / f"data{vocab}"
    if not (data / "train.lcshard").is_file():
        write_corpus(corpus, n_stories=n_stories, seed=0)
        tokenize_files([str(corpus / "stories.txt")], f"train:{vocab}", str(data), val_fraction=0.2, seed=0)
    run = root / name
    train_run(data, run, epochs=epochs, **TINY_MODEL)
    return {"root": root, "data": data, "run": run}


def features_of(model, shard, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (features [N, width] float64, labels [N] int64) of a shard computed the obvious way:
    every window of T inputs starting at 0, T, 2T, … in one batch, the ragged last one on its own."""
    toks = torch.from_numpy(np.asarray(shard.tokens, dtype=np.int64))
    n_full = (len(toks) - 1) // T
    with torch.no_grad():
        x = toks[: n_full * T].reshape(n_full, T)
        y = toks[1 : n_full * T + 1].reshape(n_full, T)
        Hs, Ys = [model.features(x).reshape(-1, model.config.width)], [y.reshape(-1)]
        rest = toks[n_full * T :]
        if len(rest) > 1:
            Hs.append(model.features(rest[:-1][None])[0])
            Ys.append(rest[1:])
    return torch.cat(Hs).double(), torch.cat(Ys)


def assert_same_stats(a_dir: Path, b_dir: Path) -> None:
    """Two collection folders hold the same statistics (counts and NCC hits exactly, means and
    variances to float64 rounding) and the same pass summaries."""
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.ncc import NCCStats

    a, b = ClassStats.load(a_dir / "train_stats.safetensors"), ClassStats.load(b_dir / "train_stats.safetensors")
    assert a.n_samples > 1000 and torch.equal(a.counts, b.counts)
    seen = a.counts > 0
    torch.testing.assert_close(b.means[seen], a.means[seen], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.variances[seen], a.variances[seen], rtol=1e-10, atol=1e-12)
    na, nb = NCCStats.load(a_dir / "val_ncc.safetensors"), NCCStats.load(b_dir / "val_ncc.safetensors")
    assert int(na.totals.sum()) > 100
    assert torch.equal(na.totals, nb.totals) and torch.equal(na.hits, nb.hits)
    assert na.hits_all is not None and torch.equal(na.hits_all, nb.hits_all)  # the paper's NC4, all-reduced too
    sa = json.loads((a_dir / "collect.json").read_text())
    sb = json.loads((b_dir / "collect.json").read_text())
    for k in ("tokens", "skipped_nonfinite"):
        assert sa["passes"]["train"][k] == sb["passes"]["train"][k], k
    assert sb["val_pass"]["positions"] == sa["val_pass"]["positions"]
    assert sb["val_pass"]["loss"] == pytest.approx(sa["val_pass"]["loss"], rel=1e-6)  # float32 logits, other batches
    assert sb["val_pass"]["acc"] == sa["val_pass"]["acc"]


# -- tiny transformers models ------------------------------------------------------------------------
#: architecture -> (config kwargs, extra vocabulary rows beyond the tokenizer's: padded embeddings);
#: hidden 16–32, 1–2 layers, built from configs (no download)
HF_ARCHS: dict[str, tuple[dict, int]] = {
    "gpt2": (dict(n_embd=16, n_layer=2, n_head=2, n_positions=64), 0),
    "gpt_neox": (dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=64, tie_word_embeddings=False), 24),  # Pythia pads its vocabulary
    "llama": (dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                   intermediate_size=32, max_position_embeddings=4096), 0),
    "qwen2": (dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                   intermediate_size=32, max_position_embeddings=64, tie_word_embeddings=True), 8),
    # word_embed_proj_dim < hidden_size: the head reads a projected (narrower) feature
    "opt": (dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32, max_position_embeddings=64,
                 word_embed_proj_dim=8), 0),
    "gpt_neo": (dict(hidden_size=16, num_layers=2, num_heads=2, max_position_embeddings=64, window_size=8,
                     attention_types=[[["global", "local"], 1]], intermediate_size=32), 0),
    "phi": (dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=64), 0),  # an LM head with a bias
    "gemma2": (dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                    intermediate_size=32, max_position_embeddings=64, final_logit_softcapping=3.0,
                    sliding_window=8), 0),  # logits soft-capped after the head
}


def tokenizer_vocab(tokenizer_json: Path) -> int:
    """Vocabulary size of a tokenizer.json, added tokens included."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_json)).get_vocab_size(with_added_tokens=True)


def build_hf_model(arch: str, vocab: int, seed: int = 0):
    """A tiny random transformers `arch` model (eval mode, float32) whose embedding has `vocab` rows
    plus the architecture's padding."""
    import transformers

    kwargs, pad = HF_ARCHS[arch]
    torch.manual_seed(seed)
    cfg = transformers.AutoConfig.for_model(arch, vocab_size=vocab + pad, bos_token_id=0, eos_token_id=0,
                                            pad_token_id=0, **kwargs)
    from lcfast.model.hf import attention_kwargs  # eager attention on torch < 2.5, as lcfast loads it

    model = transformers.AutoModelForCausalLM.from_config(cfg, **attention_kwargs()).eval()
    with torch.no_grad():  # random, not-quite-zero biases and norm scales: every parameter matters
        for _name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def save_hf_model(arch: str, folder: Path, tokenizer_json: Path, seed: int = 0):
    """Build and save a tiny `arch` model into `folder` (config.json, model.safetensors,
    tokenizer.json), what a researcher's model folder looks like in miniature; returns the model."""
    model = build_hf_model(arch, tokenizer_vocab(tokenizer_json), seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    return model


def save_hub_model(cache: Path, repo: str, arch: str, tokenizer_json: Path, revisions: dict[str, int],
                   refs: dict[str, str] | None = None, commits: dict[str, str] | None = None) -> dict[str, str]:
    """A model's revisions in a local Hugging Face hub cache, laid out as huggingface_hub writes them:
    models--ORG--NAME/blobs/<sha256> (the files), snapshots/<commit>/<file> (relative links into
    blobs/), refs/<revision> (the commit, no newline). `revisions`: {revision: seed of its tiny
    random `arch` model}; `refs`: more refs {name: revision} (main → the last step, as on the hub);
    `commits`: the commit of a revision (default: a hash of its name). Returns {revision: commit}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    out = {}
    for rev, seed in revisions.items():
        commit = (commits or {}).get(rev) or hashlib.sha1(f"{repo}@{rev}".encode()).hexdigest()
        tmp = root / ".tmp" / rev
        save_hf_model(arch, tmp, tokenizer_json, seed=seed)
        snap = root / "snapshots" / commit
        snap.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp.iterdir()):
            data = f.read_bytes()
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
        shutil.rmtree(tmp)
        out[rev] = commit
    shutil.rmtree(root / ".tmp", ignore_errors=True)
    for name, rev in {**{r: r for r in revisions}, **(refs or {})}.items():
        ref = root / "refs" / name
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(out[rev])
    return out


# -- NC tracking in training loops (lcfast.NCTracker) --------------------------------------------------
#: vocabulary, batch and window of the tracker tests (tests/pipeline/test_nc_*.py)
V, B, T = 40, 3, 12


def tracker_batch(seed: int, rank: int = 0):
    """input_ids, labels (row 0: −100 after position 5), attention_mask (row 1: padding from 9)."""
    g = torch.Generator().manual_seed(1000 * rank + seed)
    x = torch.randint(1, V, (B, T), generator=g)
    labels = x.clone()
    labels[0, 5:] = -100
    mask = torch.ones_like(x)
    mask[1, 9:] = 0
    return x, labels, mask


def by_hand(h: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions the loss uses, selected the slow way: feature t, target labels[t+1]."""
    H, Y = [], []
    for b in range(h.shape[0]):
        for t in range(h.shape[1] - 1):
            if labels[b, t + 1] != -100 and mask[b, t] and mask[b, t + 1]:
                H.append(h[b, t].double())
                Y.append(int(labels[b, t + 1]))
    return torch.stack(H), torch.tensor(Y)


class HeadInputs:
    """The test's own record of the output embedding's inputs (a clone per call)."""

    def __init__(self, model):
        self.seen: list[torch.Tensor] = []
        self.hook = model.get_output_embeddings().register_forward_pre_hook(
            lambda m, a: self.seen.append(a[0].detach().clone()))


def assert_row_matches(row: dict, ref: dict, prefix: str = "") -> None:
    """Every canonical metric of a tracker row (keys `prefix`+key) equals measure_embeddings' `ref`
    to 1e-9 relative, and is empty exactly where `ref` is None."""
    from lcfast.metrics.measure import CANONICAL_KEYS

    for k in CANONICAL_KEYS:
        # n_positions is the row's own id column, shared by the head and the layers
        got, want = row[k if k == "n_positions" else prefix + k], ref[k]
        if want is None:
            assert got is None, (prefix + k, got)
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (prefix + k, got, want)


# -- the CLI in process ------------------------------------------------------------------------------
class Ran(NamedTuple):
    code: int
    out: str
    err: str


def run_main(args) -> Ran:
    """`lcfast.cli.app.main(args)` in this process: (exit code, stdout, stderr). Warnings are printed
    to stderr as a real run prints them (pytest would otherwise capture them), every one of them, so
    a "one line on stderr" check also sees them. The exit code follows SystemExit as the interpreter
    does: None is 0, a non-int is 1."""
    from lcfast.cli.app import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, c, f, ln, file=None, line=None: print(
            warnings.formatwarning(m, c, f, ln, line), file=sys.stderr, end="")
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    return Ran(code, out.getvalue(), err.getvalue())


def cli(args) -> tuple[int, str]:
    """`run_main` without its stdout: (exit code, stderr)."""
    r = run_main(args)
    return r.code, r.err


# -- the CLI in a child process ----------------------------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child lcfast process: one thread, no warnings, no torchrun variables,
    no debug tracebacks and no test kill point inherited from the caller; then `extra`."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LCFAST_DEBUG", "LCFAST_TEST_KILL_AT",
              "LCFAST_TEST_KILL_RANK", "LCFAST_DIST_TIMEOUT"):
        env.pop(k, None)
    env.update(extra)
    return env


def lcfast_cmd() -> list[str]:
    """The installed console script, or `python -m lcfast` where it is not installed."""
    return [str(LCFAST)] if LCFAST.is_file() else [sys.executable, "-m", "lcfast"]


def _child_setup(umask: int | None):
    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the child sees Ctrl-C even if the test runner ignores SIGINT
        if umask is not None:
            os.umask(umask)

    return setup


def console(args, *, kill_at: str | None = None, umask: int | None = None, timeout: float = 300,
            env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the console script to the end (text output captured). `kill_at`: LCFAST_TEST_KILL_AT (the
    process SIGKILLs itself at that save point, after writing the temporary, before the rename)."""
    if env is None:
        env = child_env(**({"LCFAST_TEST_KILL_AT": kill_at} if kill_at else {}))
    return subprocess.run([*lcfast_cmd(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, preexec_fn=_child_setup(umask))


def start(args, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start the console script in the background (stdout/stderr piped, text), to be signalled."""
    return subprocess.Popen([*lcfast_cmd(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env() if env is None else env, preexec_fn=_child_setup(None), **kw)


def torchrun(args, nproc: int = 2, timeout: float = 120, env: dict | None = None,
             script: str | Path | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (gloo on CPU) of `lcfast ARGS`, or of `script ARGS` (a test module run
    as __main__: tests/ is put on its PYTHONPATH so that it can import `helpers`)."""
    env = dict(child_env() if env is None else env)
    if script is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    target = [str(script)] if script is not None else ["-m", "lcfast"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *target,
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def exit_script(fn, *args) -> None:
    """The end of a test module run under torchrun as a script: `fn(*args)`, then os._exit with its
    status (SystemExit's code, 1 after a traceback), the way the console script leaves once a process
    group was used (lcfast.dist module doc, Teardown): finalizing the interpreter around gloo's
    worker threads can abort the process at torch 2.4."""
    import traceback

    code = 0
    try:
        fn(*args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - printed, then the status says it
        traceback.print_exc()
        code = 1
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    os._exit(code)


# -- kills and signals -------------------------------------------------------------------------------
class Killed(Exception):
    """Raised by `kill_after`'s hook: an in-process stand-in for a kill at a save point."""


def kill_after(kind: str, n: int):
    """An `on_save(kind, done, total)` hook that raises Killed at the n-th mid-pass save of `kind`."""
    seen = {"n": 0}

    def hook(k, done, total):
        if k == kind and done < total:
            seen["n"] += 1
            if seen["n"] == n:
                raise Killed(f"{k} at {done}/{total}")

    return hook


def wait_until(proc: subprocess.Popen, pred, what: str, timeout: float = 120) -> None:
    """Poll `pred()` until true; fail if `proc` ends first or after `timeout` seconds."""
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"finished (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 60) -> tuple[int, str, float]:
    """Send `sig` and wait: (exit status, stderr, seconds it took to exit)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running {timeout} s after {sig.name}")
    return proc.returncode, err, time.monotonic() - t0


# -- a full disk -------------------------------------------------------------------------------------
def make_disk_full(monkeypatch) -> None:
    """Make every file opened through os.fdopen (what lcfast.io's atomic writer uses) fail its
    writes with ENOSPC, as a full disk would; the file handle is still closed normally."""
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))


# -- files -------------------------------------------------------------------------------------------
def snapshot(root: Path, dirs: bool = False) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (and -> "dir" for folders, with `dirs`)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if dirs or p.is_file()}


def dotfiles(root: Path) -> list[str]:
    """Names starting with '.' under `root`: the only such names lcfast writes are its temporaries."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


def assert_bad_input(argv, want_code: int, want_text: str, w: Path, base: Path) -> None:
    """Run `lcfast ARGV` in-process: exit `want_code`, one stderr line `lcfast: …` containing
    `want_text`, and no file that existed in `w` or `base` before the run changed."""
    before_w, before_base = snapshot(w), snapshot(base)
    code, err = cli(argv)
    lines = err.strip().splitlines()
    assert code == want_code, f"exit {code}, stderr: {err}"
    assert len(lines) == 1, f"not one line: {err!r}"
    assert lines[0].startswith("lcfast: "), lines[0]
    assert want_text in lines[0], lines[0]
    after_w = snapshot(w)
    assert {k: after_w.get(k) for k in before_w} == before_w, "an existing file was changed"
    assert snapshot(base) == before_base
