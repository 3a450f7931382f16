"""Any transformers causal LM as a feature extractor: `HFCausalLM` wraps an `AutoModelForCausalLM`
and returns, for token ids, the input of its output embedding (the LM head) — captured with a
forward pre-hook on `get_output_embeddings()`, so final norms, projections and other quirks are the
model's own — and, on request, transformers' `hidden_states[i]` (0 = embeddings) from the same
forward.

The forward stops as soon as the head's input is captured (the pre-hook raises), so the B×T×V logits
are never built; `HFCausalLM.logits` applies W h + b (+ the model's own final soft-capping or
logit scale, where its config has one) when the caller wants them.

Also here: `resolve_hub_model`, `hf:ORG/NAME` to a model snapshot of the local hub cache (never a
download); the caches themselves, offline mode and `require` (the `[hf]` extra) are in lcfast.hub,
which data/ uses too.

transformers is imported only by the functions that need it (commands on lcfast's own models
never import it). Weights load through transformers' safetensors / weights-only path;
`trust_remote_code` is never set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from lcfast.errors import DataError, UsageError
from lcfast.hub import (  # noqa: F401 - datasets_cache_dir, HF_EXTRA: re-exported
    HF_EXTRA,
    datasets_cache_dir,
    hub_cache_dir,
    hub_snapshot,
    offline,
    require,
)

#: forward dtypes accepted by --dtype
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: the default --context is the model's own maximum, at most this
MAX_DEFAULT_CONTEXT = 2048
# config.json keys that do not change what the model computes (left out of the fingerprint)
_VOLATILE_CONFIG_KEYS = {"transformers_version", "torch_dtype", "dtype", "_name_or_path", "architectures", "use_cache"}


def parse_dtype(name: str | None) -> torch.dtype:
    """--dtype NAME -> torch dtype (UsageError naming the flag)."""
    key = str(name or "float32").strip().lower()
    key = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(key, key)
    if key not in DTYPES:
        raise UsageError(f"--dtype {name}: expected one of {', '.join(DTYPES)}")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def resolve_hub_model(repo: str, flag: str = "MODEL") -> Path:
    """`hf:ORG/NAME[@REV]` -> its snapshot folder in the local hub cache (never downloads)."""
    return resolve_hub_revision(repo, flag).path


def resolve_hub_revision(repo: str, flag: str = "MODEL"):
    """`hf:ORG/NAME[@REV]` -> its `lcfast.hub.CachedRevision` in the local hub cache, a model (its
    snapshot has config.json); DataError when the cache does not hold it (never downloads)."""
    from lcfast.hub import resolve_revision

    name, _, rev = repo.partition("@")
    found = resolve_revision(name, rev or None, "model", flag)
    if found is None or not (found.path / "config.json").is_file():
        where = hub_cache_dir()
        extra = f" --revision {rev}" if rev else ""
        held = "" if found is None else f" (its snapshot {found.path} has no config.json)"
        raise DataError(
            f"{flag} hf:{repo}: not in the local Hugging Face cache {where}{held} (lcfast never downloads: fetch it "
            f"first, e.g. 'huggingface-cli download {name}{extra}', or set HF_HUB_CACHE / HF_HOME)"
        )
    return found


# --------------------------------------------------------------------------------------------
# the model


class _HeadReached(Exception):
    """Raised by the pre-hook on the output embedding: the features are captured, stop the forward."""


def hf_config_dict(path: Path) -> dict:
    from lcfast.io import read_json

    cfg = read_json(path / "config.json", "model config")
    if not isinstance(cfg, dict):
        raise DataError(f"{path / 'config.json'}: expected a JSON object")
    return cfg


def max_positions(cfg: dict) -> int | None:
    """The longest sequence a transformers config allows (None when it says nothing)."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
    for src in (cfg, text):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
            v = src.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def attention_kwargs() -> dict:
    """from_pretrained/from_config keywords for the attention: eager on torch < 2.5, where
    transformers' SDPA mask for sliding-window models (Gemma 2, Mistral-style) writes into an
    expanded tensor and fails ("more than one element of the written-to tensor refers to a single
    memory location"); the default elsewhere."""
    major, minor = (int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    return {"attn_implementation": "eager"} if (major, minor) < (2, 5) else {}


def _dtype_kwargs(transformers, dtype: torch.dtype) -> dict:
    # transformers ≥ 4.56 names it `dtype` (and 5.x defaults to the checkpoint's dtype); older `torch_dtype`
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


class HFCausalLM:
    """A transformers causal LM, read as lcfast reads its own: `features(idx)` is the LM head's input.

    Attributes: `hf` (the transformers model), `path`, `config` (config.json as a dict),
    `lm_head_weight` W [C, d], `lm_head_bias` b [C] or None, `n_hidden_states` (L + 1),
    `max_context` (config's max positions or None), `dtype`.
    """

    def __init__(self, hf_model, path: Path, config: dict):
        self.hf = hf_model
        self.path = Path(path)
        self.config = config
        head = hf_model.get_output_embeddings()
        if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
            raise DataError(f"{path}: {type(hf_model).__name__} has no output embedding "
                            "(get_output_embeddings() is None)")
        self.head = head
        self.max_context = max_positions(config)
        tc = hf_model.config.get_text_config() if hasattr(hf_model.config, "get_text_config") else hf_model.config
        self.n_layers = int(getattr(tc, "num_hidden_layers", 0) or 0)
        self.width = int(getattr(tc, "hidden_size", 0) or self.head.weight.shape[1])
        self.heads = getattr(tc, "num_attention_heads", None)
        # transformations of the logits after the head (argmax-preserving; they matter for the loss)
        self.softcap = getattr(tc, "final_logit_softcapping", None)
        self.logit_scale = getattr(tc, "logit_scale", None) if type(hf_model).__name__.startswith("Cohere") else None
        self._fp: str | None = None
        self.load_notes: list[str] = []  # what transformers said while loading it (first lines)
        from transformers import PreTrainedModel

        self._inner = [m for m in hf_model.modules() if isinstance(m, PreTrainedModel) and m is not hf_model]

    # -- what collect and measure read ---------------------------------------------------------
    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.head.weight

    @property
    def lm_head_bias(self) -> torch.Tensor | None:
        b = getattr(self.head, "bias", None)
        return b if isinstance(b, torch.Tensor) else None

    @property
    def vocab_size(self) -> int:
        return int(self.head.weight.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def n_hidden_states(self) -> int:
        return self.n_layers + 1

    def n_params(self) -> int:
        """Distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.hf.parameters())

    def fingerprint(self) -> str:
        """sha256 over config.json (without version/dtype bookkeeping keys), the forward dtype and,
        per tensor, its name, shape and up to 1024 evenly strided values (as float32)."""
        if self._fp is None:
            cfg = {k: v for k, v in self.config.items() if k not in _VOLATILE_CONFIG_KEYS and not k.startswith("_")}
            h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
            h.update(dtype_name(self.dtype).encode())
            from lcfast.model.gptneo import hash_tensors

            hash_tensors(h, {k: t for k, t in self.hf.state_dict().items() if t.is_floating_point()})
            self._fp = h.hexdigest()[:20]
        return self._fp

    def to(self, device):
        self.hf.to(device)
        return self

    def eval(self):
        self.hf.eval()
        return self

    # -- the forward ---------------------------------------------------------------------------
    def _run(self, idx: torch.Tensor, hidden: bool):
        got: dict = {}

        def capture_input(module, args, kwargs):
            got["h"] = args[0] if args else next(iter(kwargs.values()))
            raise _HeadReached

        def capture_hidden(module, args, out):
            hs = getattr(out, "hidden_states", None)
            if hs is None and isinstance(out, dict):
                hs = out.get("hidden_states")
            if hs:
                got["hs"] = hs

        hooks = [self.head.register_forward_pre_hook(capture_input, with_kwargs=True)]
        if hidden:  # the inner model(s) return hidden_states before the head runs (OPT calls its decoder directly)
            hooks += [m.register_forward_hook(capture_hidden) for m in self._inner]
        try:
            self.hf(input_ids=idx, use_cache=False, output_hidden_states=hidden, return_dict=True)
        except _HeadReached:
            pass
        finally:
            for hk in hooks:
                hk.remove()
        if "h" not in got:
            raise DataError(f"{self.path}: the forward of {type(self.hf).__name__} never called its output embedding "
                            "(get_output_embeddings()): cannot capture the LM head's input")
        if hidden and not got.get("hs"):
            raise DataError(f"{self.path}: {type(self.hf).__name__} returned no hidden_states (needed for --layers)")
        return got["h"], got.get("hs")

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """LM-head inputs [B, T, d] for token ids idx [B, T] (the model's dtype)."""
        return self._run(idx, False)[0]

    def features_and_hidden(self, idx: torch.Tensor, layers: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(LM-head inputs [B, T, d], [hidden_states[i] [B, T, d_i] for i in layers]) from one forward."""
        h, hs = self._run(idx, True)
        if len(hs) != self.n_hidden_states:
            raise DataError(f"{self.path}: {len(hs)} hidden states, "
                            f"expected num_hidden_layers + 1 = {self.n_hidden_states}")
        return h, [hs[i] for i in layers]

    def logits(self, H: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """The model's logits for head inputs H [N, d] (float32): W h + b, then its own logit scale
        or final soft-capping when the config has one."""
        z = torch.nn.functional.linear(H.float(), W.float(), None if b is None else b.float())
        if self.logit_scale:
            z = z * float(self.logit_scale)
        if self.softcap:
            z = torch.tanh(z / float(self.softcap)) * float(self.softcap)
        return z


class _Said:
    """What transformers said while loading: its logger's warnings (first lines, without colour codes)
    and Python warnings. They used to be silenced (BERT's "add `is_decoder=True`" among them); now
    they come with a refusal, or in `HFCausalLM.load_notes`, which collect says on warning lines."""

    def __init__(self, transformers):
        import logging
        import warnings

        self.lines: list[str] = []
        said = self

        class Handler(logging.Handler):
            def emit(self, record):
                said.add(record.getMessage())

        transformers.utils.logging.get_logger()  # the library logger is configured now, not inside the block
        self._root = logging.getLogger("transformers")
        self._saved = (self._root.handlers[:], self._root.level, self._root.propagate)
        self._handler = Handler(logging.WARNING)
        self._warnings = warnings.catch_warnings(record=True)
        self._tlog = transformers.utils.logging

    def add(self, text) -> None:
        line = re.sub(r"\x1b\[[0-9;]*m", "", str(text)).strip().splitlines()
        if line and line[0].strip() and line[0].strip() not in self.lines:
            self.lines.append(line[0].strip())

    def __enter__(self) -> _Said:
        import warnings

        # one line per failure: transformers' own handler (and its progress bars) would print tables
        self._root.handlers, self._root.propagate = [self._handler], False
        self._root.setLevel("WARNING")
        self._bars = self._tlog.is_progress_bar_enabled()
        self._tlog.disable_progress_bar()
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc) -> bool:
        self._warnings.__exit__(*exc)
        for w in self._caught:
            self.add(w.message)
        self._root.handlers, level, self._root.propagate = self._saved
        self._root.setLevel(level)
        if self._bars:
            self._tlog.enable_progress_bar()
        return False

    def note(self) -> str:
        return f" (transformers said: {self.lines[0][:300]})" if self.lines else ""


def _check_weight_files(path: Path) -> None:
    """Every safetensors file of the folder has a readable header covering the file (a truncated or
    zero-filled file is named here, instead of a SafetensorError deep inside transformers)."""
    from lcfast.io import read_json, read_tensor_meta

    hint = "; the file is damaged: copy or save the model again"
    if (path / "model.safetensors").is_file():
        read_tensor_meta(path / "model.safetensors", "model weights", hint)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        obj = read_json(index, "weight index")
        wm = obj.get("weight_map") if isinstance(obj, dict) else None
        if not isinstance(wm, dict):
            raise DataError(f"{index}: corrupt weight index (no weight_map)")
        for name in sorted(set(map(str, wm.values()))):
            read_tensor_meta(path / name, f"model weights (listed in {index.name})", hint)


def _names(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "")


def _shape(s) -> str:
    return str(list(s)) if s is not None else "[?]"


def _mismatch(model: HFCausalLM, m) -> tuple:
    """(name, checkpoint shape, config shape) of one mismatched weight: transformers ≥ 5 reports the
    triple; 4.x only the name, so the shapes are read from the model (config side) and from the
    safetensors headers (checkpoint side), None where neither says."""
    if not isinstance(m, str):
        return str(m[0]), tuple(m[1]), tuple(m[2])
    try:
        mine = tuple(model.hf.get_parameter(m).shape)
    except (AttributeError, KeyError):
        mine = None
    prefix = str(getattr(model.hf, "base_model_prefix", "") or "")
    names = [m, m.removeprefix(prefix + "."), f"{prefix}.{m}"] if prefix else [m]
    theirs = None
    from safetensors import safe_open

    for f in sorted(model.path.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as st:
                keys = set(st.keys())
                hit = next((n for n in names if n in keys), None)
                if hit is not None:
                    theirs = tuple(st.get_slice(hit).get_shape())
                    break
        except Exception:  # noqa: BLE001 - a header that cannot be read: the shape stays unknown
            continue
    return m, theirs, mine


def _refuse_unloaded_weights(model: HFCausalLM, info: dict) -> None:
    """One DataError for weights that transformers did not load from the checkpoint (it would leave
    them random: a missing LM head, the blocks of a config edited to more layers), checkpoint
    tensors it ignored, or tensors of another shape. A head the config ties to the embeddings is
    not missing: it *is* the embedding."""
    hf = model.hf
    head_names = {n for n, p in hf.named_parameters(remove_duplicate=False) if p is model.head.weight}
    inp = hf.get_input_embeddings()
    tied = inp is not None and getattr(inp, "weight", None) is model.head.weight
    missing = {str(k) for k in info.get("missing_keys") or ()}
    if tied:
        missing -= head_names
    unexpected = {str(k) for k in info.get("unexpected_keys") or ()}
    mismatched = sorted(_mismatch(model, m) for m in info.get("mismatched_keys") or ())
    errors = [" ".join(str(e).split()) for e in info.get("error_msgs") or ()]
    if not (missing or unexpected or mismatched or errors):
        return
    cls = type(hf).__name__
    parts = []
    if missing:
        what = f"{len(missing)} weight{'s' * (len(missing) != 1)} of {cls} missing ({_names(missing)})"
        if missing & head_names:
            what += " — the LM head, which config.json does not tie to the embeddings (a base model without its head?)"
        parts.append(what)
    if unexpected:
        parts.append(f"{len(unexpected)} checkpoint tensor{'s' * (len(unexpected) != 1)} that {cls} has no place for "
                     f"({_names(unexpected)})")
    if mismatched:
        shapes = ", ".join(f"{k} {_shape(a)} in the checkpoint, {_shape(b)} in config.json"
                           for k, a, b in mismatched[:2])
        parts.append(f"{len(mismatched)} of another shape ({shapes}{', …' if len(mismatched) > 2 else ''})")
    if errors:
        parts.append(f"{len(errors)} loading error{'s' * (len(errors) != 1)} ({errors[0][:200]})")
    raise DataError(f"{model.path}: the weights do not match config.json: {'; '.join(parts)}; "
                    "lcfast measures only models whose every weight comes from the checkpoint")


#: model types that transformers loads as a causal LM only as a decoder variant of an encoder
#: (BERT's family: bidirectional unless config.json sets is_decoder)
def _encoder_types(transformers) -> set[str]:
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - every supported version has it
        return set()
    return set(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def non_causal_reason(cfg: dict, transformers) -> str | None:
    """Why config.json says the model is not causal (None when it does not say so). The direct check
    on a window (`check_causal`) is the real guard; this one names the cause."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
    if cfg.get("is_encoder_decoder") or text.get("is_encoder_decoder"):
        return "config.json says is_encoder_decoder: an encoder-decoder model, not a decoder-only causal LM"
    if cfg.get("use_bidirectional_attention") or text.get("use_bidirectional_attention"):
        return "config.json sets use_bidirectional_attention (an embedding model's attention)"
    mt = str(cfg.get("model_type", ""))
    if mt == "xlm":  # XLM's switch is `causal`
        return None if cfg.get("causal") else "config.json: an XLM model without causal: true is bidirectional"
    if mt in _encoder_types(transformers) and not cfg.get("is_decoder"):
        archs = cfg.get("architectures") or []
        arch = f" (architectures: {', '.join(map(str, archs))})" if archs else ""
        return (f"config.json: model_type {mt!r} is an encoder with bidirectional attention{arch}, "
                "and is_decoder is not set")
    return None


#: tokens of the causality probe: the first ones of the first window (a later token's pull on an
#: earlier position is diluted over the positions it attends to: a short window shows it best)
PROBE_TOKENS = 16
#: the largest move of an earlier head input, relative to the largest head input, allowed by
#: rounding. A causal forward gives bitwise-equal earlier rows (masked attention weights are exact
#: zeros and both rows run through the same kernels), so these only absorb a kernel that does not
#: reduce identically; a random tiny BERT moves them by ~1e-3 (2e-3 in bfloat16)
CAUSAL_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10, torch.bfloat16: 2.0**-10, torch.float16: 2.0**-11}


def check_causal(model: HFCausalLM, tokens: torch.Tensor, vocab: int, where: str) -> None:
    """Refuse (DataError) a model whose head input at a position depends on a later token: one
    forward of two copies of the first `PROBE_TOKENS` of `tokens` (ids < `vocab`) that differ in their
    last token; every earlier position must come out unchanged within `CAUSAL_TOLERANCE`."""
    x = tokens.reshape(-1)[:PROBE_TOKENS].to(torch.int64)
    t = int(x.numel())
    if t < 2:
        return
    y = x.clone()
    y[-1] = (y[-1] + 1) % max(int(vocab), 2)
    with torch.no_grad():
        h = model.features(torch.stack([x, y]).to(model.lm_head_weight.device)).float()
    scale = float(h[0].abs().max())
    moved = (h[0, :-1] - h[1, :-1]).abs().amax(dim=-1)
    tol = CAUSAL_TOLERANCE.get(model.dtype, 2.0**-10) * max(scale, 1e-30)
    bad = int((moved > tol).sum())  # (non-finite features are left to the statistics, which name them)
    if not bad:
        return
    rel = float(moved.max()) / max(scale, 1e-30)
    notes = model.load_notes
    said = f" (transformers said: {notes[0][:300]})" if notes else ""
    raise DataError(
        f"{model.path}: {type(model.hf).__name__} is not causal: changing token {t - 1} of {where} moved the "
        f"LM-head input at {bad} of the {t - 1} earlier positions (by up to {rel:.1e} of its largest value, more "
        f"than rounding explains): its features see the tokens they are meant to predict; lcfast measures "
        f"causal LMs only{said}")


def load_hf_causal_lm(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> HFCausalLM:
    """Open a local transformers folder (config.json + safetensors, sharded or not) with
    AutoModelForCausalLM, offline, in `dtype`, evaluation mode, on the CPU.

    Refused (one DataError line each): unreadable weight files; any loading failure; a model that
    config.json says is not causal (an encoder such as BERT, an encoder-decoder); any weight that
    is missing from the checkpoint (transformers would initialise it at random), unexpected or of
    another shape. What transformers said while loading comes with a refusal, and is kept in
    `load_notes` (collect shows it)."""
    path = Path(path)
    cfg = hf_config_dict(path)
    transformers = require("transformers", f"{path}: a {cfg.get('model_type', 'transformers')} model")
    _check_weight_files(path)
    said = _Said(transformers)
    try:
        with offline(), said:
            hf_model, info = transformers.AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False, output_loading_info=True,
                # a shape mismatch is reported below with the others (transformers' own error is a table)
                ignore_mismatched_sizes=True, **_dtype_kwargs(transformers, dtype), **attention_kwargs())
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - every loading failure is one line (SafetensorError is a bare Exception)
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:240]}"
        if cfg.get("auto_map"):
            why = (f"its config.json points to its own modeling code (auto_map), which lcfast never runs "
                   f"(trust_remote_code stays off); transformers {transformers.__version__} says: {why}")
        raise DataError(f"{path}: transformers cannot load this model as a causal LM ({why})") from None
    hf_model.eval()
    model = HFCausalLM(hf_model, path, cfg)
    model.load_notes = list(said.lines)
    reason = non_causal_reason(cfg, transformers)
    if reason:
        raise DataError(f"{path}: {type(hf_model).__name__} is not a causal language model ({reason}): its "
                        f"features would see the tokens they are meant to predict; lcfast measures causal LMs "
                        f"only{said.note()}")
    _refuse_unloaded_weights(model, info)
    return model


__all__ = ["HFCausalLM", "load_hf_causal_lm", "require", "parse_dtype", "dtype_name", "hub_cache_dir",
           "datasets_cache_dir", "hub_snapshot", "resolve_hub_model", "resolve_hub_revision", "offline",
           "max_positions", "DTYPES", "MAX_DEFAULT_CONTEXT", "HF_EXTRA", "non_causal_reason", "check_causal"]
