"""Every hyper-parameter of a training run, once (`TrainConfig`): its default and what it is.

`lcfast train`, `lcfast sweep`, `train_run`, `run_sweep` and the demo take their defaults from
here. A run's config.json is its serialization: its "train" section is `train_section` (the
schedule resolved on the train shard), its "model" section the GPTNeoConfig built from the model
fields; a resume must find both unchanged. Imports neither torch nor the model, so the CLI's
`--help` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lcfast import validate
from lcfast.errors import UsageError

#: the cap on validation tokens per evaluation, by default
DEFAULT_EVAL_TOKENS = 1 << 20


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # -- the model (GPT-Neo: alternating global and local attention)
    layers: int  # transformer blocks
    width: int  # hidden size d
    heads: int | None = None  # attention heads (None: width // 64, at least 1); must divide width
    context: int = 256  # sequence length T, also the model's maximum positions
    window_size: int = 256  # local-attention window (GPT-Neo: 256)
    # -- data, schedule and evaluation
    epochs: int = 1  # one epoch = train tokens // (batch_size · context) optimizer steps
    batch_size: int = 32  # sequences per optimizer step (under torchrun: the global batch)
    steps_per_epoch: int | None = None  # overrides the steps of an epoch
    eval_tokens: int = DEFAULT_EVAL_TOKENS  # cap on validation tokens per evaluation
    seed: int = 0  # initialisation and batch order
    # -- the optimizer (AdamW) and its schedule
    lr: float = 1e-3  # peak learning rate
    warmup_frac: float = 0.05  # linear warm-up over this share of all steps
    min_lr_frac: float = 0.1  # then cosine decay to min_lr_frac · lr
    weight_decay: float = 0.1  # on matrices and embeddings only (lcfast.model.gptneo.param_groups)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW's moment decay rates
    eps: float = 1e-8  # AdamW's denominator floor
    grad_clip: float = 1.0  # the global gradient norm is clipped to this

    def checked(self) -> TrainConfig:
        """Every value checked and normalised (UsageError naming the flag), `heads` resolved; no I/O.
        Shared by train_run and run_sweep, which checks a whole grid before it starts the first run."""
        c = dataclasses.replace(
            self,
            layers=validate.integer("--layers", self.layers, min=1),
            width=validate.integer("--width", self.width, min=1),
            context=validate.integer("--context", self.context, min=1),
            epochs=validate.integer("--epochs", self.epochs, min=1),
            batch_size=validate.integer("--batch-size", self.batch_size, min=1),
            window_size=validate.integer("--window", self.window_size, min=1),
            eval_tokens=validate.integer("--eval-tokens", self.eval_tokens, min=1),
            steps_per_epoch=(None if self.steps_per_epoch is None
                             else validate.integer("--steps-per-epoch", self.steps_per_epoch, min=1)),
            lr=validate.number("--lr", self.lr, min=0, min_open=True),
            weight_decay=validate.number("--weight-decay", self.weight_decay, min=0),
            grad_clip=validate.number("grad_clip", self.grad_clip, min=0),
            warmup_frac=validate.number("warmup_frac", self.warmup_frac, min=0, max=1),
            min_lr_frac=validate.number("min_lr_frac", self.min_lr_frac, min=0, max=1),
            seed=validate.seed("--seed", self.seed),
        )
        heads = default_heads(c.width) if c.heads is None else validate.integer("--heads", c.heads, min=1)
        if c.width % heads:
            raise UsageError(f"--heads {heads} must divide --width {c.width}")
        if c.weight_decay > 1 and c.lr * c.weight_decay >= 1:
            # AdamW scales the decayed weights by (1 − lr·wd) every step: lr·wd ≥ 1 zeroes or flips them.
            # (An absurd --lr with an ordinary decay is left to the non-finite-loss stop, which names --lr.)
            raise UsageError(f"--weight-decay {c.weight_decay:g}: with --lr {c.lr:g} AdamW would scale the weights "
                             f"by 1 − lr·wd = {1 - c.lr * c.weight_decay:g} every step; "
                             "lr × weight decay must be < 1")
        return dataclasses.replace(c, heads=heads)

    def steps(self, train_tokens: int) -> tuple[int, int, int]:
        """(optimizer steps per epoch, steps of the run, warm-up steps) on a train shard of
        `train_tokens` tokens."""
        spe = self.steps_per_epoch or max(1, int(train_tokens) // (self.batch_size * self.context))
        total = spe * self.epochs
        return spe, total, min(total, int(round(self.warmup_frac * total)))

    def train_section(self, train_tokens: int) -> dict:
        """config.json's "train" section (the schedule resolved on a train shard of `train_tokens`)."""
        spe, total, warmup = self.steps(train_tokens)
        return {
            "epochs": self.epochs, "batch_size": self.batch_size, "context": self.context, "lr": self.lr,
            "min_lr": self.lr * self.min_lr_frac, "weight_decay": self.weight_decay, "betas": list(self.betas),
            "eps": self.eps, "grad_clip": self.grad_clip, "warmup_steps": warmup, "steps_per_epoch": spe,
            "total_steps": total, "seed": self.seed, "eval_tokens": self.eval_tokens,
            "tokens_per_step": self.batch_size * self.context,
        }


def default_heads(width: int) -> int:
    """GPT-Neo's head size is 64 (768 wide, 12 heads); narrower models get one head."""
    h = max(1, width // 64)
    return h if width % h == 0 else 1
