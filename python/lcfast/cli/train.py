"""CLI commands `lcfast train` and `lcfast sweep` (thin wrappers over lcfast.pipeline.train/sweep)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lcfast import validate
from lcfast.cli.options import FloatOption, IntOption, SeedOption
from lcfast.errors import UsageError
from lcfast.pipeline.train_config import TrainConfig  # (torch-free: --help stays fast)

D = TrainConfig  # the defaults of every hyper-parameter


def _int_list(flag: str, text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,2,4") from None
    if not vals:
        raise UsageError(f"{flag} {text!r}: expected at least one integer")
    if flag == "--seeds":
        return [validate.seed(flag, v) for v in vals]
    return [validate.integer(flag, v, min=1) for v in vals]


def _print_metrics(title: str, rows: list[dict], cols: list[str]) -> None:
    """The metrics of runs on stdout, never cut (see lcfast.tables)."""
    from rich.console import Console

    from lcfast.tables import print_table

    def cell(c, v) -> str:
        if v is None:
            return ""
        if c == "tokens_per_s":
            return f"{v:,.0f}"
        if isinstance(v, float):
            return f"{v:.4f}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    print_table(Console(), title, cols, [[cell(c, r.get(c)) for c in cols] for r in rows],
                keys=1 if cols[0] == "name" else 0,
                justify={c: "right" for c in cols if c not in ("name", "status")})


def train(
    *,
    data: Path = typer.Option(..., "--data", help="Data folder from 'lcfast tokenize' (train/val shards)."),
    layers: int = IntOption(..., "--layers", help="Transformer blocks."),
    width: int = IntOption(..., "--width", help="Hidden size d."),
    out: Path = typer.Option(..., "--out", help="Run folder (created; rerun the same command to resume)."),
    heads: int = IntOption(D.heads, "--heads", help="Attention heads (default: width // 64, at least 1)."),
    context: int = IntOption(D.context, "--context", help="Sequence length T (also the model's max positions)."),
    window: int = IntOption(D.window_size, "--window", help="Local-attention window (GPT-Neo: 256)."),
    epochs: int = IntOption(D.epochs, "--epochs", help="Epochs (one epoch = train tokens / (B*T) steps)."),
    batch_size: int = IntOption(D.batch_size, "--batch-size", help="Sequences per step B."),
    lr: float = FloatOption(D.lr, "--lr",
                            help="Peak learning rate (warm-up, then cosine decay to lr/10).", min=0, min_open=True),
    weight_decay: float = FloatOption(D.weight_decay, "--weight-decay", min=0,
                                      help="AdamW weight decay (matrices, embeddings)."),
    seed: int = SeedOption(D.seed, "--seed", help="Seed of initialisation and batch order."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    steps_per_epoch: int = IntOption(D.steps_per_epoch, "--steps-per-epoch", help="Override the steps of an epoch."),
    eval_tokens: int = IntOption(D.eval_tokens, "--eval-tokens", help="Cap on validation tokens per evaluation."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
    track_nc: bool = typer.Option(False, "--track-nc", help="Track neural collapse from the training forward "
                                  "(no extra pass) into OUT/nc_track.csv; see the README."),
    track_every: int = IntOption(None, "--track-every", help="With --track-nc: a row every N optimizer steps "
                                 "and at each epoch's end (default: one per epoch; at most an epoch)."),
    dist_timeout: float | None = FloatOption(
        None, "--dist-timeout", min=0, min_open=True, max=validate.DIST_TIMEOUT_MAX,
        help="Under torchrun: seconds a rank waits in one collective before it stops with an error naming the rank "
             "it waited for (default: $LCFAST_DIST_TIMEOUT, else 600)."),
) -> None:
    """Train a GPT-Neo-style causal LM; checkpoint + evaluate every epoch; resume by rerunning."""
    from lcfast.pipeline.train import run_training

    hp = TrainConfig(layers=layers, width=width, heads=heads, context=context, window_size=window, epochs=epochs,
                     batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                     steps_per_epoch=steps_per_epoch, eval_tokens=eval_tokens)
    m = run_training(data, out, hp, device=device, compile=compile, progress=progress, track_nc=track_nc,
                     track_every=track_every, dist_timeout=dist_timeout)
    from lcfast import dist

    if not dist.is_main():  # under torchrun only rank 0 reports
        return
    if json_out:
        print(json.dumps(m, indent=2, sort_keys=True))
        return
    title = f"{out} ({'already complete' if m.get('already_complete') else 'done'})"
    _print_metrics(title, [m], ["epoch", "step", "n_params", "train_loss", "val_loss", "val_acc", "perplexity",
                                "tokens_per_s"])

def sweep(
    *,
    data: Path = typer.Option(..., "--data", help="Data folder from 'lcfast tokenize'."),
    out: Path = typer.Option(..., "--out", help="Sweep folder; runs go to OUT/L{l}_W{w}_E{e}_S{s}."),
    layers: str = typer.Option(..., "--layers", help="Comma-separated depths, e.g. 1,2,4."),
    widths: str = typer.Option(..., "--widths", help="Comma-separated widths, e.g. 64,128,256."),
    epochs: str = typer.Option("1", "--epochs", help="Comma-separated epoch counts (separate runs)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds."),
    heads: int = IntOption(D.heads, "--heads", help="Attention heads (default: width // 64 per width)."),
    context: int = IntOption(D.context, "--context", help="Sequence length T."),
    window: int = IntOption(D.window_size, "--window", help="Local-attention window."),
    batch_size: int = IntOption(D.batch_size, "--batch-size", help="Sequences per step B."),
    lr: float = FloatOption(D.lr, "--lr", help="Peak learning rate.", min=0, min_open=True),
    weight_decay: float = FloatOption(D.weight_decay, "--weight-decay", help="AdamW weight decay.", min=0),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    steps_per_epoch: int = IntOption(D.steps_per_epoch, "--steps-per-epoch", help="Override the steps of an epoch."),
    eval_tokens: int = IntOption(D.eval_tokens, "--eval-tokens", help="Cap on validation tokens."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the models."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train a grid layers x widths x epochs x seeds, skipping finished runs; writes OUT/sweep.{json,csv}."""
    grid = {f: _int_list(f, v) for f, v in (("--layers", layers), ("--widths", widths), ("--epochs", epochs),
                                            ("--seeds", seeds))}
    from lcfast.errors import interrupt_note
    from lcfast.pipeline.sweep import run_sweep

    with interrupt_note(lambda: f"finished runs under {out} are intact; rerun the same command to continue"):
        rows = run_sweep(data, out, layers=grid["--layers"], widths=grid["--widths"], epochs=grid["--epochs"],
                         seeds=grid["--seeds"], heads=heads, context=context, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, device=device, steps_per_epoch=steps_per_epoch,
                         eval_tokens=eval_tokens, compile=compile, progress=progress, window_size=window)
    _print_metrics(f"sweep {out} (summary: {out / 'sweep.csv'})", rows,
                   ["name", "status", "n_params", "train_loss", "val_loss", "val_acc", "perplexity", "tokens_per_s"])


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("train")(train)
    app.command("sweep")(sweep)
