"""NC metrics in a transformers Trainer (lcfast.integrations.transformers): `track_nc` puts them into
the logs that `report_to="tensorboard"` writes, into log_history and OUTPUT/nc_track.csv; rows equal
measure_embeddings of the positions the training forwards fed the loss (gradient accumulation:
optimizer steps); `resume_from_checkpoint` mid-interval continues the CSV as an uninterrupted run."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")  # the Trainer needs it
transformers = pytest.importorskip("transformers")

import lcfast  # noqa: E402
from lcfast.errors import UsageError  # noqa: E402
from lcfast.integrations.transformers import NCCallback, track_nc  # noqa: E402

from helpers import V, assert_row_matches, build_hf_model, by_hand, torchrun, tracker_batch  # noqa: E402

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


class Recorder:
    """The test's own record of each training forward's labels, mask and head input, and of W after
    each optimizer step (with the number of forwards by then)."""

    def __init__(self, trainer):
        model = trainer.model
        self.seen, self.W_at = [], {}

        def record(module, args, kwargs):
            if module.training:
                self.seen.append({"labels": kwargs["labels"], "mask": kwargs["attention_mask"]})

        def head(module, args):
            if module.training:
                self.seen[-1].update(h=args[0].detach().clone())

        model.register_forward_pre_hook(record, with_kwargs=True)
        model.get_output_embeddings().register_forward_pre_hook(head)
        rec = self

        class KeepW(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                rec.W_at[state.global_step] = (model.lm_head.weight.detach().clone(), len(rec.seen))

        trainer.add_callback(KeepW())

    def positions(self, start: int, end: int):
        """(H, Y) of forwards start..end−1, selected by hand."""
        picked = [by_hand(f["h"], f["labels"], f["mask"]) for f in self.seen[start:end]]
        return tuple(torch.cat(t) for t in zip(*picked))


def test_trainer_reports_to_tensorboard(tmp_path):
    """Gradient accumulation 2, every=2: each row covers 4 micro-batches, equals measure_embeddings of
    their positions against W after the step, and reaches log_history, the CSV and TensorBoard."""
    trainer = trainer_for(tmp_path / "out", max_steps=4, report_to="tensorboard", accum=2)
    rec = Recorder(trainer)
    cb = track_nc(trainer, every=2)
    trainer.train()
    assert [r["step"] for r in cb.rows] == [2, 4]
    start = 0
    for row in cb.rows:
        W, end = rec.W_at[row["step"]]
        H, Y = rec.positions(start, end)
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


def _trainer_refuses_resume() -> str | None:
    """Why this transformers' Trainer itself cannot resume here, or None: from 4.50 on it loads the
    optimizer state with torch.load only on torch ≥ 2.6 (CVE-2025-32434), so at the floor (torch 2.4)
    `resume_from_checkpoint` fails inside transformers before any callback runs."""
    try:
        from transformers.utils.import_utils import check_torch_load_is_safe
    except ImportError:
        return None
    try:
        check_torch_load_is_safe()
    except ValueError:
        return f"transformers' Trainer refuses to resume on torch {torch.__version__} (needs ≥ 2.6: CVE-2025-32434)"
    return None


@pytest.mark.skipif(_trainer_refuses_resume() is not None, reason=str(_trainer_refuses_resume()))
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


# -- torchrun ------------------------------------------------------------------------------------------
def _rank_main(out: Path) -> None:
    """Under torchrun (gloo): a Trainer of 2 optimizer steps per rank, every=2; each rank saves the
    positions its forwards fed the loss and the row it got."""
    import torch.distributed as tdist

    torch.set_num_threads(1)
    trainer = trainer_for(out / "out", max_steps=2, ddp_backend="gloo")
    rec = Recorder(trainer)
    cb = track_nc(trainer, every=2)
    trainer.train()
    r = tdist.get_rank()
    H, Y = rec.positions(0, len(rec.seen))
    torch.save({"H": H, "Y": Y, "W": rec.W_at[2][0], "rows": cb.rows,
                "logged": [h for h in trainer.state.log_history if "nc/nc1_cdnv" in h]}, out / f"rank{r}.pt")


def test_trainer_under_torchrun(tmp_path):
    """2 ranks: the row sums both ranks' positions (equals measure_embeddings of their union), every
    rank gets it, rank 0 writes the CSV."""
    p = torchrun([str(tmp_path)], nproc=2, timeout=300, script=Path(__file__))
    assert p.returncode == 0, p.stderr[-3000:]
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert torch.equal(got[0]["W"], got[1]["W"]) and not torch.equal(got[0]["Y"], got[1]["Y"])
    H, Y = torch.cat([g["H"] for g in got]), torch.cat([g["Y"] for g in got])
    ref = lcfast.measure_embeddings(H, Y, W=got[0]["W"])
    for g in got:
        assert len(g["rows"]) == 1 and g["rows"][0]["n_positions"] == len(Y)
        assert_row_matches(g["rows"][0], ref)
    assert got[0]["logged"][0]["nc/nc1_cdnv"] == got[0]["rows"][0]["nc1_cdnv"]
    lines = list(csv.DictReader(io.StringIO((tmp_path / "out" / "nc_track.csv").read_text())))
    assert [r["step"] for r in lines] == ["2"] and float(lines[0]["nc1_cdnv"]) == got[0]["rows"][0]["nc1_cdnv"]


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
