"""`lcfast corpus …`: the embedded synthetic stories corpus (lcfast.data.synth)."""

from __future__ import annotations

from pathlib import Path

import typer

from lcfast.cli.options import FloatOption, IntOption, SeedOption
from lcfast.data.synth import DEFAULT_N_STORIES, DEFAULT_SEED

corpus_app = typer.Typer(
    help="The embedded default corpus (deterministic synthetic children's stories).",
    no_args_is_help=True,
    add_completion=False,
)


@corpus_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (gets stories.txt and corpus.json)."),
    stories: int = IntOption(DEFAULT_N_STORIES, "--stories", help="Number of stories (≥ 1)."),
    seed: int = SeedOption(DEFAULT_SEED, "--seed", help="Random seed; the same seed gives the same corpus."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
) -> None:
    """Write the deterministic synthetic stories corpus to OUT/stories.txt (+ OUT/corpus.json)."""
    import json

    from rich.console import Console

    from lcfast.cli.data import unchanged_note
    from lcfast.data.synth import META_FILE, STORIES_FILE, write_corpus
    from lcfast.errors import UsageError, interrupt_note
    from lcfast.progress import progress_bar
    from lcfast.tables import print_table

    n = stories
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    console = Console(stderr=True)
    with progress_bar(unit="stories", console=console, enabled=not json_out, transient=True) as prog:
        task = prog.add_task("synth", total=n)
        with interrupt_note(lambda: unchanged_note(out)):
            meta = write_corpus(out, n_stories=n, seed=seed, progress=lambda k: prog.update(task, completed=k))

    if json_out:
        print(json.dumps(meta, indent=2))
        return
    rows = [[k, f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)]
            for k, v in ((k, meta[k]) for k in ("n_stories", "seed", "n_words", "n_word_types",
                                                 "mean_words_per_story", "n_chars", "seconds"))]
    print_table(Console(), f"synthetic corpus → {out}", ["field", "value"], rows, justify={"value": "right"})
    Console().print(f"wrote {Path(out) / STORIES_FILE} and {Path(out) / META_FILE}")


@corpus_app.command("controlled")
def controlled(
    out: Path = typer.Option(..., "--out", help="Output data dir (train.lcshard, val.lcshard, controlled.json)."),
    tokens: int = IntOption(200_000, "--tokens", help="Tokens in all (≥ 2).", min=2),
    deterministic: float = FloatOption(0.2, "--deterministic", min=0, max=0.5,
                                       help="Share of tokens determined by the previous token (0 to 0.5)."),
    ambiguous: float = FloatOption(0.2, "--ambiguous", min=0, max=0.5,
                                   help="Share of tokens drawn uniformly of 8 after shared cues (0 to 0.5; "
                                        "with --deterministic at most 0.5)."),
    val_fraction: float = FloatOption(0.1, "--val-fraction", min=0, max=1, min_open=True, max_open=True,
                                      help="Share of the stream in val.lcshard (the end of it)."),
    seed: int = SeedOption(DEFAULT_SEED, "--seed", help="Random seed; the same seed gives the same tokens."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """A token corpus with known context ambiguity (docs/metrics.md, "Per-class table"): a data dir for
    `lcfast train --data OUT` and `lcfast collect`, no tokenizer."""
    import json

    from rich.console import Console

    from lcfast.cli.data import unchanged_note
    from lcfast.data.synth import CONTROLLED_FILE, ControlledCorpus
    from lcfast.errors import UsageError, interrupt_note

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    cc = ControlledCorpus(deterministic, ambiguous)
    with interrupt_note(lambda: unchanged_note(out)):
        meta = cc.write(out, tokens, seed=seed, val_fraction=val_fraction)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in meta.items()}
    if json_out:
        print(json.dumps(meta, indent=2))
        return
    Console().print(f"wrote {meta['train']} ({meta['train_tokens']:,} tokens), {meta['val']} "
                    f"({meta['val_tokens']:,}) and {out / CONTROLLED_FILE}; vocabulary {meta['vocab_size']}",
                    highlight=False)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(corpus_app, name="corpus")
