"""A GPT-Neo-style causal language model in plain PyTorch (the architecture of `transformers`'
GPTNeoForCausalLM, numerically matched to it; see tests/test_model.py).

    x = wte[idx] + wpe[0..T)
    for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    features = ln_f(x)                                # [B, T, d]: what neural-collapse collection reads
    logits   = features @ W.T                         # W = wte.weight (tied), no bias

GPT-Neo specifics kept on purpose: attention is NOT scaled by 1/sqrt(head_dim); q/k/v projections have
no bias, out_proj has one; blocks alternate global and local attention (local = each position sees
itself and the previous window_size - 1 positions); the MLP uses the tanh approximation of GELU
("gelu_new"); no dropout (GPT-Neo's defaults are 0).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from lcfast.errors import DataError, UsageError

_ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def default_attention_layers(layers: int) -> list[str]:
    """GPT-Neo's default pattern: global, local, global, local, ..."""
    return ["global" if i % 2 == 0 else "local" for i in range(layers)]


def count_params(vocab_size: int, layers: int, width: int, context: int, mlp_dim: int = 0,
                 tie_embeddings: bool = True) -> int:
    """Parameters of a GPTNeo with these sizes (tied head counted once); mlp_dim 0 = 4 × width."""
    w, m = width, mlp_dim or 4 * width
    block = 2 * w + 4 * w * w + w + 2 * w + (w * m + m) + (m * w + w)  # ln_1, q/k/v/out(+b), ln_2, mlp
    head = 0 if tie_embeddings else vocab_size * w
    return vocab_size * w + context * w + layers * block + 2 * w + head


def memory_terms(*, vocab_size: int, layers: int, width: int, heads: int, context: int, window_size: int,
                 n_local: int, batch: int, seq: int, train: bool, logits: bool = True, mlp_dim: int = 0,
                 tie_embeddings: bool = True, device_type: str = "cpu") -> dict[str, int]:
    """Rough peak memory (bytes, float32) of a model step on `batch` sequences of length `seq`, as
    {term: bytes}, from the sizes alone (no config object: a config of 10^9 layers is itself big).
    train=True: weights, gradients and AdamW moments, logits with the loss and its gradient, and
    every block's saved activations; train=False: weights and one block's live activations
    (logits=False: features only, as collection runs the model). `n_local` local-attention layers
    with a mask (seq > window_size) materialise batch×heads×seq×seq scores on CPU (SDPA's math
    kernel); the causal path and the fused CUDA kernels do not. Used to refuse impossible requests
    before anything is allocated; it is an estimate of the largest terms, not a bound."""
    m = mlp_dim or 4 * width
    P = count_params(vocab_size, layers, width, context, m, tie_embeddings)
    bt = batch * seq
    parts = {"weights": 4 * P}
    if train:
        parts["gradients + AdamW state"] = 12 * P
    if logits:
        parts["logits"] = bt * vocab_size * 4 * 3
    per_block = bt * (8 * width + 2 * m) * 4
    masked = seq > window_size and n_local > 0
    scores = batch * heads * seq * seq * 4 * (2 if train else 1) if device_type != "cuda" and masked else 0
    parts["activations"] = layers * per_block + n_local * scores if train else 2 * per_block + scores
    if masked:
        parts["attention mask"] = seq * seq
    return parts


@dataclass
class GPTNeoConfig:
    vocab_size: int
    layers: int
    width: int
    heads: int
    context: int  # max_position_embeddings: the longest sequence the model accepts
    window_size: int = 256
    attention_layers: list[str] = field(default_factory=list)  # empty -> default_attention_layers
    mlp_dim: int = 0  # 0 -> 4 * width
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_new"
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "layers", "width", "heads", "context", "window_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise UsageError(f"model config: {name} must be a positive integer, got {v!r}")
        if self.width % self.heads:
            raise UsageError(f"model config: width {self.width} is not divisible by heads {self.heads}")
        if not self.attention_layers:
            self.attention_layers = default_attention_layers(self.layers)
        self.attention_layers = [str(a) for a in self.attention_layers]
        if len(self.attention_layers) != self.layers:
            raise UsageError(
                f"model config: attention_layers has {len(self.attention_layers)} entries for {self.layers} layers"
            )
        bad = sorted(set(self.attention_layers) - {"global", "local"})
        if bad:
            raise UsageError(f"model config: unknown attention type(s) {bad} (use 'global' or 'local')")
        if not self.mlp_dim:
            self.mlp_dim = 4 * self.width
        if self.activation not in _ACTIVATIONS:
            raise UsageError(f"model config: unsupported activation {self.activation!r} ({sorted(_ACTIVATIONS)})")

    def to_dict(self) -> dict:
        return asdict(self)

    def n_params(self) -> int:
        """Parameters of the model this config builds (tied head counted once), without building it."""
        return count_params(self.vocab_size, self.layers, self.width, self.context, self.mlp_dim, self.tie_embeddings)

    def memory_bytes(self, batch: int, seq: int, *, train: bool, logits: bool = True,
                     device_type: str = "cpu") -> dict[str, int]:
        """Rough peak memory of a step on `batch` sequences of length `seq` (see `memory_terms`)."""
        return memory_terms(vocab_size=self.vocab_size, layers=self.layers, width=self.width, heads=self.heads,
                            context=self.context, window_size=self.window_size,
                            n_local=sum(a == "local" for a in self.attention_layers), mlp_dim=self.mlp_dim,
                            tie_embeddings=self.tie_embeddings, batch=batch, seq=seq, train=train, logits=logits,
                            device_type=device_type)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model config") -> GPTNeoConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DataError(f"{source}: unknown model config key(s) {unknown}")
        try:
            return cls(**d)
        except TypeError as e:
            raise DataError(f"{source}: incomplete model config ({e})") from None
        except UsageError as e:
            raise DataError(f"{source}: {e}") from None


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTNeoConfig, kind: str):
        super().__init__()
        self.kind = kind
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.out_proj = nn.Linear(cfg.width, cfg.width, bias=True)

    def forward(self, x: torch.Tensor, local_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (p(x).view(B, T, self.heads, D // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        if self.kind == "local" and local_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=local_mask, scale=1.0)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, cfg: GPTNeoConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.width, cfg.mlp_dim)
        self.c_proj = nn.Linear(cfg.mlp_dim, cfg.width)
        self.act = _ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTNeoConfig, kind: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(cfg, kind)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, local_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), local_mask)
        return x + self.mlp(self.ln_2(x))


class GPTNeo(nn.Module):
    """GPT-Neo causal LM. State-dict names are those of transformers' GPTNeoForCausalLM without the
    `transformer.` prefix and with `attn.attention.` shortened to `attn.` (see load_hf.py)."""

    def __init__(self, cfg: GPTNeoConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.wpe = nn.Embedding(cfg.context, cfg.width)
        self.h = nn.ModuleList(Block(cfg, kind) for kind in cfg.attention_layers)
        self.ln_f = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:  # as transformers' GPTNeoPreTrainedModel
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=self.config.init_std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- the classifier of the neural-collapse view ------------------------------------------------
    @property
    def lm_head_weight(self) -> torch.Tensor:
        """W, shape [vocab_size, width]."""
        return self.wte.weight if self.lm_head is None else self.lm_head.weight

    @property
    def lm_head_bias(self) -> None:
        """GPT-Neo's LM head has no bias."""
        return None

    def _local_mask(self, T: int, device: torch.device) -> torch.Tensor | None:
        w = self.config.window_size
        if T <= w or "local" not in self.config.attention_layers:
            return None  # the window covers the whole sequence: local == global (causal)
        i = torch.arange(T, device=device)
        d = i[:, None] - i[None, :]
        return (d >= 0) & (d < w)  # True = may attend

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-layer-norm outputs [B, T, width] for token ids idx [B, T]."""
        B, T = idx.shape
        if T > self.config.context:
            raise UsageError(f"sequence length {T} exceeds the model's context {self.config.context}")
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        mask = self._local_mask(T, idx.device)
        for block in self.h:
            x = block(x, mask)
        return self.ln_f(x)

    def features_and_hidden(self, idx: torch.Tensor, layers: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(final-layer-norm outputs [B, T, width], [hidden state i [B, T, width] for i in layers]) in
        transformers' convention: state 0 is the embeddings, state i < L the output of block i, state L
        the final-layer-norm output (the LM head's input)."""
        B, T = idx.shape
        if T > self.config.context:
            raise UsageError(f"sequence length {T} exceeds the model's context {self.config.context}")
        want = set(layers)
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        mask = self._local_mask(T, idx.device)
        states = {0: x} if 0 in want else {}
        for i, block in enumerate(self.h, 1):
            x = block(x, mask)
            if i in want and i < len(self.h):
                states[i] = x
        h = self.ln_f(x)
        states[len(self.h)] = h
        return h, [states[i] for i in layers]

    @property
    def n_hidden_states(self) -> int:
        """L + 1: the embeddings and the output of each block (the last one final-layer-normed)."""
        return self.config.layers + 1

    def forward(self, idx: torch.Tensor, return_features: bool = False):
        """Logits [B, T, vocab_size]; with return_features=True, (logits, features [B, T, width]):
        the LM head's input from the same forward (training reads it for `--track-nc` without a
        second pass; detach it before keeping it)."""
        h = self.features(idx)
        logits = F.linear(h, self.lm_head_weight)
        return (logits, h) if return_features else logits

    def n_params(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (the tied head counted once); optionally without wte/wpe."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    def fingerprint(self) -> str:
        """Cheap identity of config + weights: sha256 over the config JSON and, per tensor, its name,
        shape and up to 1024 evenly strided values (as float32). Same on any device."""
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        hash_tensors(h, self.state_dict())
        return h.hexdigest()[:20]


def hash_tensors(h, tensors: dict[str, torch.Tensor]) -> None:
    """Feed `tensors` (by name, sorted) into the hash `h`: per tensor its name, shape and up to 1024
    evenly strided values as float32 — the weights' part of a model fingerprint, cheap on any
    device (lcfast.model.hf fingerprints transformers models the same way)."""
    for name, t in sorted(tensors.items()):
        flat = t.detach().reshape(-1)
        n = flat.numel()
        if n > 1024:
            flat = flat[torch.arange(1024, device=flat.device) * (n // 1024)]
        h.update(f"{name}:{tuple(t.shape)}:".encode())
        h.update(flat.to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes())


def param_groups(model: GPTNeo, weight_decay: float) -> list[dict]:
    """AdamW groups as in nanoGPT: decay matrices and embeddings, not biases or layer norms."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


__all__ = ["GPTNeo", "GPTNeoConfig", "default_attention_layers", "param_groups", "hash_tensors", "count_params",
           "memory_terms"]
