"""CLI command `lcfast export`: a trained run as a transformers GPT-Neo folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def export_cmd(
    run: Path = typer.Argument(..., help="A `lcfast train` run dir."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: config.json, model.safetensors, tokenizer.json."),
    checkpoint: str = typer.Option("last", "--checkpoint", "-c", help="Epoch K or 'last'."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer",
                                          help="tokenizer.json to ship (default: the run's data dir's)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a checkpoint as a transformers GPT-Neo folder (AutoModelForCausalLM.from_pretrained loads it)."""
    from rich.console import Console

    from lcfast.model.export import export_run

    res = export_run(run, out, checkpoint, tokenizer)
    if json_out:
        print(json.dumps(res, indent=2))
    else:
        Console().print(f"{res['run']} {res['checkpoint']} ({res['n_params']:,} parameters) -> {res['out']}: "
                        + ", ".join(res["files"]))


def register(app: typer.Typer) -> None:
    """Attach `export` to the root app."""
    app.command("export")(export_cmd)
