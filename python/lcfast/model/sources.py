"""Where the model to measure comes from: a `lcfast train` run (one of its epochs), a local
transformers folder (config.json + weights), or `hf:ORG/NAME[@REV]` from the local Hugging Face hub cache
(`--revisions all|A,B`: several cached revisions of it, a training history such as Pythia's stepN).

`resolve_sources` turns a MODEL argument into `ModelSource`s, `load_source` opens one — lcfast's
own GPT-Neo (runs, and transformers GPT-Neo folders: the fast path, no transformers needed) or any
other `AutoModelForCausalLM` through `lcfast.model.hf.HFCausalLM` — and `model_head`,
`model_facts`, `check_compat` read what collection needs from either kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lcfast.errors import DataError, UsageError

_EPOCH_RE = re.compile(r"^epoch_(\d+)$")
HF_PREFIX = "hf:"


@dataclass
class ModelSource:
    """One model checkpoint to collect: a `lcfast train` run's epoch, or a transformers folder."""

    kind: str  # "run" | "hf"
    path: Path  # run dir, or the transformers checkpoint dir
    checkpoint: str  # "epoch_K" for runs, "model" for a transformers dir
    epoch: int | None
    data_dir: Path
    run_config: dict = field(default_factory=dict)
    repo: str | None = None  # "ORG/NAME" for a model from the hub cache
    revision: str | None = None  # the hub cache's revision of it: a ref (main, step1000) or a commit hash
    commit: str | None = None  # the commit hash of that revision (its snapshot folder's name)

    @property
    def name(self) -> str:
        return self.repo.replace("/", "--") if self.repo else self.path.name

    @property
    def spec(self) -> str:
        """The MODEL argument that names this source: hf:ORG/NAME@REV for the hub cache, else the path."""
        if not self.repo:
            return str(self.path)
        return HF_PREFIX + self.repo + (f"@{self.revision}" if self.revision and self.revision != "main" else "")


def _read_json(path: Path) -> dict:
    from lcfast.io import read_json

    obj = read_json(path, "config")
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object")
    return obj


def is_run_dir(path: Path) -> bool:
    """A `lcfast train` run: config.json plus a checkpoints/ folder."""
    return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def is_hf_dir(path: Path) -> bool:
    """A transformers checkpoint: config.json plus weights (and no lcfast run layout)."""
    if not (path / "config.json").is_file() or is_run_dir(path):
        return False
    return any((path / n).is_file() for n in _WEIGHT_FILES)


def run_epochs(run_dir: Path) -> list[int]:
    """The epochs with a finished checkpoint in a run dir, ascending."""
    from lcfast.model.checkpoint import list_checkpoints

    return sorted(list_checkpoints(run_dir))


def resolve_sources(run: str | Path, checkpoint: str | int = "last", data: str | Path | None = None,
                    need_data: bool = True, revisions: str | None = None) -> list[ModelSource]:
    """Turn a MODEL argument (run dir, transformers dir or hf:ORG/NAME[@REV]) and --checkpoint/--data
    into the checkpoints to collect. need_data=False: only the model is wanted (`data_dir` may then be
    unset: a run's recorded data dir, or "."). `revisions` ("all" or "A,B,…", hf: models only): one
    source per cached revision (`hub_revision_sources`)."""
    repo = rev = None
    if revisions is not None:
        return hub_revision_sources(str(run), revisions, checkpoint, data, need_data)
    if str(run).startswith(HF_PREFIX):
        from lcfast.model.hf import resolve_hub_revision

        rev = resolve_hub_revision(str(run)[len(HF_PREFIX):])
        repo, path = str(run)[len(HF_PREFIX):].partition("@")[0], rev.path
    else:
        path = Path(run)
    if not path.exists():
        raise UsageError(f"MODEL {path}: no such directory")
    if not path.is_dir():
        raise UsageError(f"MODEL {path}: not a directory (expected a lcfast train run, a transformers model folder "
                         "or hf:ORG/NAME)")
    ck = str(checkpoint).strip().lower()
    if is_run_dir(path):
        cfg = _read_json(path / "config.json")
        if data is not None:
            data_dir = Path(data)
        elif not need_data:
            d = cfg.get("data", {}).get("dir") if isinstance(cfg.get("data"), dict) else None
            data_dir = Path(d or ".")
        else:
            d = cfg.get("data", {}).get("dir") if isinstance(cfg.get("data"), dict) else None
            if not d:
                raise UsageError(f"{path / 'config.json'} names no data dir: pass --data DIR")
            data_dir = Path(d)
            if not data_dir.is_dir():
                raise UsageError(f"{path}: its data dir {data_dir} is gone: pass --data DIR")
        epochs = run_epochs(path)
        if not epochs:
            raise DataError(f"{path}: no finished checkpoint in this run (train at least one epoch first)")
        if ck == "all":
            chosen = epochs
        elif ck == "last":
            chosen = [epochs[-1]]
        else:
            k = _parse_epoch(ck)
            if k not in epochs:
                raise UsageError(
                    f"--checkpoint {checkpoint}: {path} has no checkpoint for epoch {k} "
                    f"(has {', '.join(map(str, epochs))})"
                )
            chosen = [k]
        return [ModelSource("run", path, f"epoch_{k}", k, data_dir, cfg) for k in chosen]
    if is_hf_dir(path):
        if data is None and need_data:
            raise UsageError(f"MODEL {run} is a transformers model: pass --data DIR with shards made with its "
                             f"tokenizer (lcfast tokenize INPUT --tokenizer {run} --out DIR)")
        if ck not in ("last", "all"):
            raise UsageError(f"--checkpoint {checkpoint}: {run} is a single transformers checkpoint (use last)")
        cfg = _read_json(path / "config.json")
        # a revision named with @REV is the checkpoint's name (its own collect folder in a sweep); plain
        # hf:ORG/NAME keeps "model", as before revisions
        named = rev is not None and "@" in str(run)
        return [ModelSource("hf", path, revision_dir_name(rev.name) if named else "model", None,
                            Path(data if data is not None else "."), cfg, repo=repo,
                            revision=rev.name if rev else None, commit=rev.commit if rev else None)]
    raise UsageError(
        f"MODEL {path}: neither a lcfast train run (config.json + checkpoints/) "
        "nor a transformers model folder (config.json + model.safetensors)"
    )


def revision_dir_name(revision: str) -> str:
    """A revision as a checkpoint (and folder) name: refs/pr/1 → refs--pr--1; step1000 as it is."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", revision.replace("/", "--"))


def hub_revision_sources(run: str, revisions: str, checkpoint: str | int = "last", data: str | Path | None = None,
                         need_data: bool = True) -> list[ModelSource]:
    """`MODEL hf:ORG/NAME --revisions all|A,B,…`: one source per cached revision, each checkpoint
    named by its revision (`revision_dir_name`). "all": every revision the local hub cache holds a
    complete model of (config.json + weights), one per commit, steps in order (stepN by N, then other
    refs, then bare commits: `lcfast.hub.cached_revisions`); snapshots without weights are left out,
    said in a warning. A list: those revisions in that order, each resolved as hf:ORG/NAME@REV (a
    revision named twice, or two names of one commit, once). Nothing is downloaded: a revision the
    cache does not hold is a DataError naming those it does."""
    from lcfast.hub import cached_revisions, describe_revisions, hub_cache_dir

    spec = str(revisions).strip()
    if not str(run).startswith(HF_PREFIX):
        raise UsageError(f"--revisions {spec}: only for hf:ORG/NAME models from the local Hugging Face cache "
                         f"(MODEL {run}; the epochs of a lcfast train run: --checkpoint all)")
    repo = str(run)[len(HF_PREFIX):]
    if "@" in repo:
        raise UsageError(f"--revisions {spec}: MODEL {run} already names a revision; drop '@"
                         f"{repo.partition('@')[2]}' or --revisions")
    if str(checkpoint).strip().lower() not in ("last", "all"):
        raise UsageError(f"--checkpoint {checkpoint}: not with --revisions (each revision is one checkpoint)")
    if spec.lower() == "all":
        revs = cached_revisions(repo)
        if not revs:
            from lcfast.model.hf import resolve_hub_revision

            resolve_hub_revision(repo)  # the not-cached error, as for hf:ORG/NAME alone
        complete = [r for r in revs if is_hf_dir(r.path)]
        if not complete:
            raise DataError(f"MODEL {run}: no cached revision holds a complete model (config.json + weights) in "
                            f"{hub_cache_dir()} (snapshots: {describe_revisions(revs)}); fetch one first")
        if len(complete) < len(revs):
            import warnings

            from lcfast.errors import LcfastWarning

            left = [r.name for r in revs if r not in complete]
            warnings.warn(f"--revisions all: {len(left)} cached revision(s) of {repo} without config.json and "
                          f"weights left out: {', '.join(left[:8])}{', …' if len(left) > 8 else ''}",
                          LcfastWarning, stacklevel=2)
        runs = [(r, f"{run}@{r.name}") for r in complete]
    else:
        names = [n.strip() for n in spec.split(",")]
        if not spec or any(not n for n in names):
            raise UsageError(f"--revisions {spec}: expected 'all' or comma-separated revisions (step1000,step2000)")
        from lcfast.model.hf import resolve_hub_revision

        runs = [(resolve_hub_revision(f"{repo}@{n}"), f"{run}@{n}") for n in names]
    out, seen = [], set()
    for r, label in runs:
        if r.commit in seen:
            continue
        seen.add(r.commit)
        (src,) = resolve_sources(label, "last", data, need_data)
        out.append(src)
    return out


def _parse_epoch(ck: str) -> int:
    m = _EPOCH_RE.match(ck)
    s = m.group(1) if m else ck
    try:
        k = int(s)
    except ValueError:
        raise UsageError(f"--checkpoint {ck}: expected an epoch number, 'last' or 'all'") from None
    if k < 0:
        raise UsageError(f"--checkpoint {ck}: epochs are ≥ 0")
    return k


def uses_fast_path(src: ModelSource) -> bool:
    """lcfast's own GPT-Neo runs the model: its runs, and transformers GPT-Neo folders whose config
    it implements (others go through transformers)."""
    if src.kind == "run":
        return True
    if src.run_config.get("model_type") != "gpt_neo":
        return False
    from lcfast.model.load_hf import hf_config_to_ours

    try:
        hf_config_to_ours(src.run_config)
    except DataError:
        return False
    return True


def load_source(src: ModelSource, dtype: torch.dtype = torch.float32):
    """Load the model of a source (evaluation mode, CPU, parameters in `dtype`): a lcfast GPTNeo
    for runs and GPT-Neo folders, else an `HFCausalLM` (needs transformers)."""
    if src.kind == "run":
        from lcfast.model.checkpoint import load_run

        model, cfg = load_run(src.path, src.epoch)
        if isinstance(cfg, dict):
            src.run_config = {**src.run_config, **cfg}
    elif uses_fast_path(src):
        from lcfast.model.load_hf import load_model

        model = load_model(src.path)
    else:
        from lcfast.model.hf import load_hf_causal_lm

        return load_hf_causal_lm(src.path, dtype)
    model.eval()
    return model.to(dtype) if dtype != torch.float32 else model


# --------------------------------------------------------------------------------------------
# model facts


def model_head(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """LM head weight W (C×d) and bias b (C) or None, detached."""
    b = getattr(model, "lm_head_bias", None)
    return model.lm_head_weight.detach(), (b.detach() if b is not None else None)


def model_facts(model, src: ModelSource) -> dict:
    """What the measurements table wants about the model; `context` is the longest sequence it
    accepts (None when its config does not say)."""
    tr = src.run_config.get("train") if isinstance(src.run_config.get("train"), dict) else {}
    W = model.lm_head_weight
    rev = revision_facts(src)
    if hasattr(model, "hf"):  # a transformers model
        return {**rev, "n_params": int(model.n_params()), "layers": model.n_layers, "width": model.width,
                "heads": model.heads, "context": model.max_context, "seed": None,
                "n_classes": int(W.shape[0]), "dim": int(W.shape[1]), "model_type": src.run_config.get("model_type")}
    c = model.config
    return {
        **rev,
        "n_params": int(model.n_params()),
        "layers": int(c.layers),
        "width": int(c.width),
        "heads": int(c.heads),
        "context": int(c.context),
        "seed": tr.get("seed"),
        "n_classes": int(c.vocab_size),
        "dim": int(c.width),
    }


def revision_facts(src: ModelSource) -> dict:
    """{revision, commit, step} of a model from the hub cache ({} otherwise): the revision as named
    (a ref such as main or step1000, or a commit hash), its commit, and N of a `stepN` revision
    (None for other names) — a training history's x axis."""
    if not src.repo:
        return {}
    from lcfast.hub import parse_step

    return {"revision": src.revision, "commit": src.commit, "step": parse_step(src.revision)}


def tokenizer_fingerprint_of(src: ModelSource) -> str | None:
    """The fingerprint of the tokenizer a model expects: a run's (its config), or that of the
    tokenizer.json beside a transformers model (None when there is none, or it cannot be read:
    `unchecked_tokenizer` says why)."""
    return _tokenizer_fingerprint(src)[0]


def _tokenizer_fingerprint(src: ModelSource) -> tuple[str | None, str]:
    """(fingerprint or None, why there is none)."""
    if src.kind == "run":
        data = src.run_config.get("data") if isinstance(src.run_config.get("data"), dict) else {}
        return data.get("tokenizer_fingerprint"), "the run's config.json records no tokenizer fingerprint"
    tok = src.path / "tokenizer.json"
    if not tok.is_file():
        return None, f"{tok}: not found"
    from lcfast.data.shards import _core

    try:
        return str(_core().tokenizer_fingerprint(str(tok))), ""
    except Exception as e:  # noqa: BLE001 - a tokenizer.json the Rust engine cannot read: nothing to compare with
        why = " ".join(str(e).replace(f"{tok}: ", "").split())[:160]
        return None, f"{tok}: unreadable ({why})"


def check_compat(model, src: ModelSource, shards: dict) -> list[str]:
    """Refuse shards the model cannot have been trained on: a vocabulary that does not fit (a lcfast
    run must match exactly; a transformers model may have a padded one), another tokenizer than the
    model's (a run's, or the tokenizer.json of a transformers folder), or an empty shard.

    Returns what could not be checked, for the caller to say once everything else passed: the
    tokenizer of a transformers folder without a readable tokenizer.json."""
    C = int(model.lm_head_weight.shape[0])
    want, why = _tokenizer_fingerprint(src)
    for split, shard in shards.items():
        if shard.vocab_size > C or (src.kind == "run" and shard.vocab_size != C):
            raise DataError(
                f"{shard.path}: vocab mismatch: shard vocab {shard.vocab_size}, model ({src.path} {src.checkpoint}) "
                f"{C} classes; tokenize with the model's tokenizer"
            )
        got = str(shard.tokenizer_fingerprint or "")
        if want and got and got != want:
            if src.kind == "run":
                whose = f"{src.path} was trained with ({want[:12]})"
            else:
                flag = src.spec
                whose = f"of {src.path / 'tokenizer.json'} ({want[:12]}); tokenize with --tokenizer {flag}"
            raise DataError(f"{shard.path}: tokenizer mismatch: the shard's tokenizer ({got[:12]}) "
                            f"is not the one {whose}")
        if shard.n_tokens < 2:
            raise DataError(f"{shard.path}: empty {split} shard ({shard.n_tokens} tokens): nothing to collect")
    if want is None and src.kind == "hf":
        return [f"{why}, so the shards' tokenizer is not checked against the model's (only that their vocabulary "
                f"fits its {C} classes); tokenize with the model's own tokenizer"]
    return []


__all__ = ["ModelSource", "is_run_dir", "is_hf_dir", "run_epochs", "resolve_sources", "hub_revision_sources",
           "revision_dir_name", "revision_facts", "load_source", "uses_fast_path",
           "model_head", "model_facts", "check_compat", "tokenizer_fingerprint_of", "HF_PREFIX"]
