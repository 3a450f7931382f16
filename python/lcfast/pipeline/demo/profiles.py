"""The demo's sweeps: `DemoProfile` (corpus, tokenizer, model grid, training and collection
settings), `QUICK` and `FULL`."""

from __future__ import annotations

from dataclasses import dataclass

from lcfast.pipeline.train_config import DEFAULT_EVAL_TOKENS, TrainConfig


@dataclass(frozen=True)
class DemoProfile:
    """One demo sweep: the corpus and tokenizer, the model grid (layers × widths × epochs), training
    and collection settings."""

    name: str
    n_stories: int
    seed: int
    vocab: int
    val_fraction: float
    context: int
    batch_size: int
    lr: float
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    epochs: tuple[int, ...]
    steps_per_epoch: int
    collect_batch: int = 32
    track_training: str = "none"  # every epoch's checkpoint collected for: "none", "largest" (multi-epoch run), "all"
    eval_tokens: int = DEFAULT_EVAL_TOKENS
    track_every: int | None = 20  # train --track-nc --track-every N (None: no tracking): the over-training curves

    def train_config(self, layers: int, width: int, epochs: int) -> TrainConfig:
        """The hyper-parameters of the grid's model (layers, width, epochs); the rest TrainConfig's defaults."""
        return TrainConfig(layers=layers, width=width, epochs=epochs, context=self.context, batch_size=self.batch_size,
                           lr=self.lr, seed=self.seed, steps_per_epoch=self.steps_per_epoch,
                           eval_tokens=self.eval_tokens)


# Sizes tuned by timing on 2 CPU cores shared with other jobs (we got ~50-60% of them): --quick
# ran in 97 s, the default in 11.5 min; an idle machine should take about half.
QUICK = DemoProfile(
    name="quick", n_stories=2500, seed=0, vocab=2048, val_fraction=0.05, context=64, batch_size=32, lr=3e-3,
    layers=(1,), widths=(32, 96), epochs=(1, 3), steps_per_epoch=60,
)
FULL = DemoProfile(
    name="full", n_stories=5000, seed=0, vocab=2048, val_fraction=0.03, context=64, batch_size=32, lr=3e-3,
    layers=(1, 2), widths=(32, 64, 128), epochs=(1, 3), steps_per_epoch=100, track_training="largest",
)
