"""The Typer CLI `lcfast`: one module per group of commands, each with `register(app)`."""
