"""The options of `lcfast collect` (one record: the CLI and the Python API build it, the passes read
it), in a module of their own so that `run` and `passes` both import it and not each other.
`--layers` and `--classes` are parsed when the record is made (`LayerChoice`, `ClassChoice`)."""

from __future__ import annotations

from dataclasses import dataclass

from lcfast.pipeline.collect.layers import ClassChoice, LayerChoice
from lcfast.pipeline.collect.parts import Part


@dataclass
class CollectOptions:
    exact: bool = False
    covariance: bool = False
    min_count: int = 1
    batch_size: int = 16
    device: str = "auto"
    max_tokens: int | None = None
    save_every_s: float = 60.0
    save_every_windows: int | None = None
    backend: str = "auto"
    skip_nonfinite: bool = False
    restart: bool = False
    part: Part | None = None  # `--shard i/n`: collect part i of n alone (array jobs), then `lcfast merge`
    context: int | None = None  # window length T (default: the model's max positions, at most 2048)
    dtype: str = "float32"  # parameters and activations of the forward; statistics stay float64
    layers: LayerChoice | None = None  # `--layers all|0,6,12`: also the class statistics of these hidden states
    classes: ClassChoice | None = None  # `--classes top:K`: class statistics of the K most frequent classes only
    max_memory: int | None = None  # bytes the statistics may use (default: what is free on the device)
    dist_timeout: float | None = None  # seconds a collective may wait under torchrun (lcfast.dist)
    seed: int = 0  # --seed: the --max-tokens sample of windows and the folds (lcfast.model.features)
    # --folds K; None (the CLI's default): 8, fewer when they do not fit, 1 with --covariance. The
    # Python default stays 1: state files of C classes, as collect always wrote them.
    folds: int | None = 1

    def __post_init__(self):
        # parsed where the options are made (the CLI's edge, or a caller's): a string is taken too
        self.layers = LayerChoice.parse(self.layers)
        self.classes = ClassChoice.parse(self.classes)
