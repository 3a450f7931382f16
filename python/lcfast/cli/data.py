"""CLI commands `lcfast tokenize` and `lcfast count` (heavy imports happen inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from lcfast.cli.options import FloatOption, IntOption, SeedOption
from lcfast.validate import THREADS_MAX


def _check_json_path(path: Path, inputs, flag: str = "--json") -> None:
    """Refuse a bad --json before any work (after it, the failure would waste or half-report it)."""
    from lcfast.errors import UsageError
    from lcfast.io import refuse_overwriting_inputs

    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory")
    if not path.parent.exists():
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist")
    refuse_overwriting_inputs([path], inputs, flag)


def _write_json(path: Path, obj: dict) -> None:
    from lcfast.io import atomic_write_json

    atomic_write_json(path, obj, sort_keys=False)


def unchanged_note(out) -> str:
    """What an interrupted command that publishes its outputs only when complete kept."""
    return f"{out} is unchanged (outputs are published only when complete); rerun the same command"


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def tokenize_cmd(
    inputs: list[str] = typer.Argument(
        ..., metavar="INPUT",
        help=".txt (documents split on blank lines), .jsonl / .parquet (field 'text'), a directory of those, "
             "hf:PATH (a save_to_disk dataset) or hf:NAME[:CONFIG][:SPLIT] (local Hugging Face cache)."
    ),
    tokenizer: str = typer.Option(..., "--tokenizer", "-t",
                                  help="tokenizer.json path, a model folder (its tokenizer.json), hf:ORG/NAME (local "
                                       "cache, never downloaded), or train:VOCAB (byte-level BPE trained on the "
                                       "input)."),
    text_column: str = typer.Option("text", "--text-column",
                                    help="Column holding the documents in .parquet and hf: inputs."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="Output folder: train.lcshard, val.lcshard, tokenizer.json, meta.json."),
    val_fraction: float = FloatOption(0.01, "--val-fraction",
                                      help="Share of documents in the val split (hash of text and seed).",
                                      min=0, max=1),
    seed: int = SeedOption(0, "--seed", help="Seed of the train/val split."),
    eos: str | None = typer.Option(None, "--eos",
                                   help="End-of-text token appended after every document (default: auto-detect)."),
    threads: int = IntOption(0, "--threads",
                             help="Worker threads (0 = RAYON_NUM_THREADS or all cores).", min=0, max=THREADS_MAX),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary (meta.json) here."),
) -> None:
    """Tokenize a corpus into train/val token shards with per-token counts."""
    from rich.console import Console

    from lcfast.data.datadir import TOKENIZER, TRAIN_SHARD, VAL_SHARD
    from lcfast.data.tokenize import tokenize_files
    from lcfast.errors import UsageError, interrupt_note
    from lcfast.progress import progress_bar
    from lcfast.tables import print_table

    if json_out is not None:
        if json_out.resolve().parent == out.resolve() and json_out.name in (TRAIN_SHARD, VAL_SHARD, TOKENIZER):
            raise UsageError(f"--json {json_out}: is one of the outputs in --out {out}")
        _check_json_path(json_out, [*inputs, tokenizer])

    err = Console(stderr=True)
    with progress_bar(bytes_=True, console=err, enabled=err.is_terminal, transient=True) as prog:
        task = prog.add_task("tokenize", total=None)

        def progress(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total or None)

        with interrupt_note(lambda: unchanged_note(out)):
            meta = tokenize_files(
                inputs, tokenizer, out, val_fraction=val_fraction, seed=seed, eos=eos, threads=threads,
                progress=progress, text_column=text_column,
            )
    if json_out is not None:
        _write_json(json_out, meta)
    rows = [[split, _fmt_int(meta["documents"][split]), _fmt_int(meta["tokens"][split])]
            for split in ("train", "val", "total")]
    print_table(Console(), f"lcfast tokenize → {out}", ["split", "documents", "tokens"], rows,
                justify={"documents": "right", "tokens": "right"})
    tim = meta["timing"]
    Console().print(
        f"vocab {meta['vocab_size']:,} ({meta['dtype']}), eos {meta['tokenizer']['eos_token']!r} = {meta['eos_id']}, "
        f"tokenizer {meta['tokenizer']['source']} [{meta['tokenizer_fingerprint'][:12]}]; "
        f"{tim['tokens_per_s'] / 1e6:.2f} M tokens/s on {meta['threads']} threads; "
        f"skipped {meta['documents']['skipped_empty']} empty documents"
    )
    for w in meta["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {w}")

def count_cmd(
    shards: list[Path] = typer.Argument(..., metavar="SHARD",
                                        help=".lcshard files (or folders of them); same tokenizer."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the statistics as JSON here."),
    ambiguity: int = IntOption(0, "--ambiguity",
                               help="Context-ambiguity statistics for context lengths 1..K (0 = off).", min=0),
    top: int = IntOption(20, "--top", help="Number of most frequent tokens to list.", min=0),
    memory_mb: float = FloatOption(1024, "--memory-mb",
                                   help="Approximate memory for the ambiguity tables.", min=0, min_open=True),
) -> None:
    """Token frequencies, imbalance (classes seen, classes >= k, entropy, Gini) and context ambiguity."""
    from rich.console import Console

    from lcfast.data.counts import count_tokens
    from lcfast.tables import print_table

    err = Console(stderr=True)
    if json_path is not None:
        _check_json_path(json_path, shards)
    from lcfast.progress import status

    with status(err, "counting…"):
        res = count_tokens(shards, ambiguity=ambiguity, top=top, memory_bytes=int(memory_mb * 2**20))
    if json_path is not None:
        _write_json(json_path, res)
    con = Console()
    right = {h: "right" for h in ("value", "id", "count", "share", "k", "positions", "contexts", "ambiguous",
                                  "H(next | context)")}
    rows = [["tokens", _fmt_int(res["n_tokens"])], ["documents", _fmt_int(res["n_docs"])],
            ["vocab size", _fmt_int(res["vocab_size"])], ["classes seen", _fmt_int(res["classes_seen"])]]
    rows += [[f"classes with ≥ {k} samples", _fmt_int(v)] for k, v in res["classes_ge"].items()]
    rows += [["entropy (bits)", f"{res['entropy_bits']:.4f}"], ["Gini (vocabulary)", f"{res['gini']:.4f}"],
             ["Gini (seen classes)", f"{res['gini_seen']:.4f}"]]
    print_table(con, "lcfast count: " + ", ".join(Path(s).name for s in res["shards"]), ["statistic", "value"],
                rows, justify=right)
    if res["top_tokens"]:
        rows = [[str(r["id"]), repr(r["token"]) if "token" in r else "", _fmt_int(r["count"]),
                 f"{100 * r['share']:.2f}%"] for r in res["top_tokens"]]
        print_table(con, f"top {len(res['top_tokens'])} tokens", ["id", "token", "count", "share"], rows,
                    justify=right, fold=["token"])
    if res["ambiguity"]:
        rows = [[str(r["k"]), _fmt_int(r["positions"]), _fmt_int(r["contexts"]), f"{100 * r['ambiguous_share']:.2f}%",
                 f"{r['cond_entropy_bits']:.4f} bits"] for r in res["ambiguity"]]
        print_table(con, "context ambiguity", ["k", "positions", "contexts", "ambiguous", "H(next | context)"],
                    rows, justify=right)
        con.print("k: context length (tokens); ambiguous: share of positions whose context is followed by "
                  "more than one distinct next token")
    for n in res["notes"]:
        err.print(f"[yellow]note:[/yellow] {n}")


def register(app: typer.Typer) -> None:
    """Attach `tokenize` and `count` to the root app."""
    app.command("tokenize")(tokenize_cmd)
    app.command("count")(count_cmd)
