"""`lcfast corpus …`: the embedded synthetic stories corpus (lcfast.data.synth)."""

from __future__ import annotations

from pathlib import Path

import typer

from lcfast.cli.options import IntOption, SeedOption
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


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(corpus_app, name="corpus")
