"""NC metrics in a transformers Trainer (lcfast.integrations.transformers): `track_nc` puts them into
the logs that `report_to="tensorboard"` writes, into log_history and OUTPUT/nc_track.csv; rows equal
measure_embeddings of the positions the training forwards fed the loss (gradient accumulation:
optimizer steps); `resume_from_checkpoint` mid-interval continues the CSV as an uninterrupted run."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")  # the Trainer needs it
transformers = pytest.importorskip("transformers")

import lcfast  # noqa: E402
from lcfast.errors import UsageError  # noqa: E402
from lcfast.integrations.transformers import NCCallback, track_nc  # noqa: E402

from helpers import V, assert_row_matches, build_hf_model, by_hand, tracker_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class Windows(torch.utils.data.Dataset):
    """Rows of `tracker_batch(i)`: labels with −100 and padding, as a collator for causal LM leaves them."""

    def __init__(self, n: int = 8):
        self.rows = []
        for i in range(n):
            x, labels, mask = tracker_batch(i)
            self.rows += [{"input_ids": x[j], "labels": labels[j], "attention_mask": mask[j]} for j in range(len(x))]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def trainer_for(out: Path, *, max_steps: int, report_to: str = "none", accum: int = 1, save_steps: int = 0,
                callbacks=None, **more):
    model = build_hf_model("gpt2", V).train()
    kw = dict(save_strategy="steps", save_steps=save_steps) if save_steps else dict(save_strategy="no")
    args = transformers.TrainingArguments(
        str(out), max_steps=max_steps, per_device_train_batch_size=2, gradient_accumulation_steps=accum,
        learning_rate=1e-2, logging_steps=1000, report_to=report_to, use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0, **kw, **more)
    return transformers.Trainer(model=model, args=args, train_dataset=Windows(), callbacks=callbacks)


def test_trainer_reports_to_tensorboard(tmp_path):
    """Gradient accumulation 2, every=2: each row covers 4 micro-batches, equals measure_embeddings of
    their positions against W after the step, and reaches log_history, the CSV and TensorBoard."""
    trainer = trainer_for(tmp_path / "out", max_steps=4, report_to="tensorboard", accum=2)
    model = trainer.model
    seen, W_at = [], {}

    def record(module, args, kwargs):
        seen.append({"labels": kwargs["labels"], "mask": kwargs["attention_mask"]})

    model.register_forward_pre_hook(record, with_kwargs=True)
    model.get_output_embeddings().register_forward_pre_hook(lambda m, a: seen[-1].update(h=a[0].detach().clone()))

    class KeepW(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            W_at[state.global_step] = (model.lm_head.weight.detach().clone(), len(seen))

    trainer.add_callback(KeepW())
    cb = track_nc(trainer, every=2)
    trainer.train()
    assert [r["step"] for r in cb.rows] == [2, 4]
    start = 0
    for row in cb.rows:
        W, end = W_at[row["step"]]
        H, Y = (torch.cat(t) for t in zip(*(by_hand(f["h"], f["labels"], f["mask"]) for f in seen[start:end])))
        assert end - start == 4 and row["interval_steps"] == 2 and row["n_positions"] == len(Y)
        assert_row_matches(row, lcfast.measure_embeddings(H, Y, W=W))
        start = end
    logged = {h["step"]: h for h in trainer.state.log_history if "nc/nc1_cdnv" in h}
    assert sorted(logged) == [2, 4]
    assert logged[4]["nc/nc1_cdnv"] == cb.rows[1]["nc1_cdnv"]
    assert logged[4]["nc/n_positions"] == cb.rows[1]["n_positions"]
    lines = list(csv.DictReader(io.StringIO((tmp_path / "out" / "nc_track.csv").read_text())))
    assert [int(r["step"]) for r in lines] == [2, 4] and float(lines[0]["nc2_norm_cov"]) == cb.rows[0]["nc2_norm_cov"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((tmp_path / "out").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    scalars = acc.Scalars("train/nc/nc1_cdnv")
    assert [s.step for s in scalars] == [2, 4]
    assert [s.value for s in scalars] == pytest.approx([r["nc1_cdnv"] for r in cb.rows], rel=1e-6)
    assert "train/nc/nc3_dual_cos_mean" in acc.Tags()["scalars"]


def test_trainer_resume_mid_interval(tmp_path):
    """every=3, checkpoints every 2 steps: resumed from checkpoint-4 (one step into an interval) in the
    folder of a run that went on to step 6, the CSV ends equal to an uninterrupted run's."""
    a = trainer_for(tmp_path / "a", max_steps=6, save_steps=2)
    track_nc(a, every=3)
    a.train()
    b = trainer_for(tmp_path / "b", max_steps=6, save_steps=2)
    track_nc(b, every=3)
    b.train()
    assert (tmp_path / "b" / "checkpoint-4" / "nc_tracker_rank0.pt").is_file()
    state = torch.load(tmp_path / "b" / "checkpoint-4" / "nc_tracker_rank0.pt", weights_only=True)
    assert state["global_step"] == 4 and state["interval_steps"] == 1
    b2 = trainer_for(tmp_path / "b", max_steps=6, save_steps=2)
    cb = track_nc(b2, every=3)
    b2.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-4"))
    assert [r["step"] for r in cb.rows] == [6] and cb.rows[0]["interval_steps"] == 3
    rows = [list(csv.DictReader(io.StringIO((tmp_path / d / "nc_track.csv").read_text()))) for d in ("a", "b")]
    assert [r["step"] for r in rows[1]] == ["3", "6"]
    for ra, rb in zip(*rows):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert (ra[k] == rb[k] == "") or float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-6), k


def test_callback_in_callbacks_and_bad_input(tmp_path):
    """Passed in callbacks= it still writes the CSV and log_history, and says report_to misses it."""
    cb = NCCallback(every=2)
    trainer = trainer_for(tmp_path / "out", max_steps=2, report_to="tensorboard", callbacks=[cb])
    with pytest.warns(UserWarning, match="use lcfast.integrations.transformers.track_nc"):
        trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "nc/nc1_cdnv" in h] == [2]
    assert (tmp_path / "out" / "nc_track.csv").is_file()
    with pytest.raises(UsageError, match="every 0"):
        NCCallback(every=0)
    with pytest.raises(UsageError, match="already has an NCCallback"):
        track_nc(trainer, every=2)
    with pytest.raises(UsageError, match="expected a transformers Trainer"):
        track_nc(object(), every=2)


def test_labels_popped_by_label_smoothing(tmp_path):
    """label_smoothing_factor makes the Trainer pop the labels before the forward: one UsageError
    saying the forwards had none, not rows over wrong positions."""
    trainer = trainer_for(tmp_path / "out", max_steps=2, label_smoothing_factor=0.1)
    track_nc(trainer, every=1)
    with pytest.raises(UsageError, match="had no labels="):
        trainer.train()
    assert not (tmp_path / "out" / "nc_track.csv").exists()
