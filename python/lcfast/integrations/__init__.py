"""Bridges from lcfast to other training frameworks. `lcfast.integrations.transformers`: NC metrics
in a transformers `Trainer` (`NCCallback`, `track_nc`); it imports transformers, so nothing here is
imported by `import lcfast`."""
