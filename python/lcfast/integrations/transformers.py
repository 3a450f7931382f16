"""Neural collapse tracked in a transformers `Trainer`: `track_nc(trainer, every=N)` or `NCCallback`.

    trainer = Trainer(model=model, args=args, train_dataset=ds)
    track_nc(trainer, every=50)       # before trainer.train()
    trainer.train()

Every `every` optimizer steps (the Trainer's global_step: gradient accumulation counts once) an
`lcfast.NCTracker` measures the interval's head-input features against the labels the loss used
(the batch's `labels`, −100 and padding left out) and:

- writes the row to `output_dir/nc_track.csv` (rank 0);
- puts every metric, as `nc/<key>` (`nc/layer{i}/<key>` with `layers`), into the Trainer's logs
  at that step: into `trainer.state.log_history` and, through the reporting integrations, into
  whatever `report_to` names (TensorBoard shows them as `train/nc/…`). A log is forced at those
  steps (the Trainer's own logging_steps are unchanged otherwise).

Why `track_nc` and not only `callbacks=[NCCallback(…)]`: the Trainer hands `on_log` to the reporting
callbacks (TensorBoard, W&B, …) before the user's, so metrics a user's callback adds to `logs` arrive
after they were reported. `track_nc` puts the callback first. Passed in `callbacks=`, an NCCallback
still writes the CSV and `trainer.state.log_history`, and warns once that `report_to` will not see
its metrics.

Resume: at each checkpoint every rank saves its tracker state (the step and the open interval's
accumulators) as `checkpoint-N/nc_tracker_rank{r}.pt`; `trainer.train(resume_from_checkpoint=…)`
reads it back, and rows the killed run wrote past the checkpoint are recomputed. Under torchrun the
statistics are summed over the ranks before each row (every rank must reach the same steps, as the
Trainer's do).

Labels: the tracker reads the `labels=` keyword of the model's forward. A Trainer with
`label_smoothing_factor` or `compute_loss_func` pops them from the inputs before the forward; the
tracker then stops with a UsageError saying so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from transformers import TrainerCallback

from lcfast import validate
from lcfast.errors import UsageError
from lcfast.tracking import NCTracker

TRACK_FILE = "nc_track.csv"
PREFIX = "nc/"


def _state_file(folder: Path) -> Path:
    import torch.distributed as tdist

    r = tdist.get_rank() if tdist.is_available() and tdist.is_initialized() else 0
    return folder / f"nc_tracker_rank{r}.pt"


class NCCallback(TrainerCallback):
    """A `TrainerCallback` that runs an `lcfast.NCTracker` on the Trainer's model.

    every: optimizer steps per row (≥ 1). layers, covariance, backend: as `NCTracker`.
    csv_name: the file in `args.output_dir` (default nc_track.csv). prefix: of the keys in the logs.
    After training, `.tracker` is the NCTracker (its hooks removed) and `.rows` every row of this
    `train()` call (dicts, as `NCTracker.step` returns them)."""

    def __init__(self, every: int, *, layers=None, covariance: bool = True, backend: str = "auto",
                 csv_name: str = TRACK_FILE, prefix: str = PREFIX) -> None:
        self.every = validate.integer("NCCallback: every", every, min=1)
        if not isinstance(csv_name, str) or not csv_name or os.sep in csv_name:
            raise UsageError(f"NCCallback: csv_name must be a file name, got {csv_name!r}")
        self.layers, self.covariance, self.backend = layers, covariance, backend
        self.csv_name, self.prefix = csv_name, str(prefix)
        self.tracker: NCTracker | None = None
        self.rows: list[dict] = []
        self._first = False  # set by track_nc: this callback runs before the reporting ones
        self._due: dict | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise UsageError("NCCallback: the Trainer passed no model to on_train_begin")
        if self.tracker is not None:
            self.tracker.close()
        self.tracker = NCTracker(model, self.every, csv=Path(args.output_dir) / self.csv_name, layers=self.layers,
                                 covariance=self.covariance, backend=self.backend)
        self.rows, self._due = [], None
        if state.global_step > 0:  # resumed: the checkpoint the Trainer read its state from
            saved = _state_file(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            if saved.is_file():
                self.tracker.load_state_dict(torch.load(saved, map_location="cpu", weights_only=True))
            else:
                warnings.warn(f"NCCallback: resumed at step {state.global_step} without {saved}: the first "
                              "interval starts here (its row covers fewer steps)", stacklevel=2)
                self.tracker.global_step = state.global_step
        report = [r for r in (args.report_to or []) if r != "none"]
        if report and not self._first:
            warnings.warn(f"NCCallback passed in callbacks=: report_to={report} runs before it and will not see the "
                          "NC metrics (they reach the CSV and trainer.state.log_history); use "
                          "lcfast.integrations.transformers.track_nc(trainer, every=N) instead", stacklevel=2)

    def on_step_end(self, args, state, control, **kwargs):
        row = self.tracker.step(global_step=state.global_step)
        if row is not None:
            self.rows.append(row)
            self._due = {self.prefix + k: v for k, v in row.items()
                         if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            control.should_log = True  # the Trainer logs at this step, whatever its logging_steps
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._due is None or logs is None:
            return
        due, self._due = self._due, None
        logs.update(due)
        # Trainer.log appended a copy of `logs` to log_history before calling on_log
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(due)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.tracker is not None:
            # rank 0 may not have created the folder yet when another rank gets here
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.tracker.state_dict(), _state_file(folder))

    def on_train_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.close()


def track_nc(trainer, every: int, **kwargs) -> NCCallback:
    """Track neural collapse in `trainer` (a transformers Trainer, before `train()`): adds an
    NCCallback (`every`, and `kwargs`: layers, covariance, backend, csv_name, prefix) ahead of the
    reporting callbacks, so its metrics reach `report_to`. Returns the callback."""
    handler = getattr(trainer, "callback_handler", None)
    if handler is None or not isinstance(getattr(handler, "callbacks", None), list):
        raise UsageError(f"track_nc: expected a transformers Trainer, got {type(trainer).__name__}")
    if any(isinstance(c, NCCallback) for c in handler.callbacks):
        raise UsageError("track_nc: this Trainer already has an NCCallback")
    cb = NCCallback(every, **kwargs)
    cb._first = True
    handler.callbacks.insert(0, cb)
    return cb


__all__ = ["NCCallback", "PREFIX", "TRACK_FILE", "track_nc"]
