"""`lcfast collect`: class statistics over the train shard and NC4 decisions over the val shard,
per checkpoint, resumable (the passes and their files: `run`'s docstring).

The parts, in the order they build on each other: `state` (the file names of the states and
collect.json, reading and checking a saved state), `layers` (`--layers` / `--classes`: the slots of
one accumulator, its memory), `parts` (`--shard i/n` and `lcfast merge`), `options`
(`CollectOptions`), `passes` (one resumable pass of a shard through the model), `run` (set-up, the
passes of one checkpoint, `collect` and `merge`). Each part imports only parts before it, so the
package has no import circle (tests/test_imports.py). This package exposes the public names of
`options` and `run`.
"""

from lcfast.pipeline.collect.options import CollectOptions
from lcfast.pipeline.collect.run import (
    SaveHook,
    check_memory,
    check_options,
    collect,
    collect_checkpoint,
    data_paths,
    default_out_dir,
    merge,
    print_collect_summary,
    window_length,
)

__all__ = [
    "CollectOptions",
    "SaveHook",
    "check_memory",
    "check_options",
    "collect",
    "collect_checkpoint",
    "data_paths",
    "default_out_dir",
    "merge",
    "print_collect_summary",
    "window_length",
]
