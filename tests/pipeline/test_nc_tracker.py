"""`lcfast.NCTracker` in plain training loops of tiny random models (lcfast.tracking).

The reference for every row is `lcfast.measure_embeddings` over the positions the test selects by
itself (its own hook on the output embedding, its own label shift, −100 and padding masks) from
the same training forwards; gradient accumulation, eval forwards, labels given after the forward
(lcfast's GPT-Neo), resume through state_dict, a 2-process gloo run and bad input."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest
import torch

import lcfast
from lcfast.errors import UsageError

from helpers import B, HeadInputs, T, V, assert_row_matches, build_hf_model, by_hand, torchrun, tracker_batch

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_row_equals_measure_embeddings(arch, tmp_path):
    """Two intervals of 2 steps, with layers [0, 1]: each row (head input, against the current W, b)
    and each layer's columns equal measure_embeddings of exactly that interval's positions."""
    model = build_hf_model(arch, V).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rec = HeadInputs(model)
    logged = []
    tracker = lcfast.NCTracker(model, every=2, csv=tmp_path / "t" / "nc.csv", log=logged.append, layers=[0, 1])
    feats, hidden, rows = [], {0: [], 1: []}, []
    for s in range(4):
        x, labels, mask = tracker_batch(s)
        out = model(input_ids=x, labels=labels, attention_mask=mask, output_hidden_states=True)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        feats.append(by_hand(rec.seen[-1], labels, mask))
        for i in (0, 1):
            hidden[i].append(by_hand(out.hidden_states[i].detach(), labels, mask))
        row = tracker.step()
        assert (row is None) == (s % 2 == 0)
        if row is None:
            continue
        H, Y = (torch.cat(t) for t in zip(*feats))
        W = model.get_output_embeddings().weight.detach()
        b = getattr(model.get_output_embeddings(), "bias", None)
        assert row["step"] == s + 1 and row["interval_steps"] == 2 and row["n_positions"] == len(Y) == 46
        assert_row_matches(row, lcfast.measure_embeddings(H, Y, W=W, b=b))
        assert row["nc1_pinv"] is not None and row["nc4_agreement"] is None
        for i in (0, 1):
            Hi, Yi = (torch.cat(t) for t in zip(*hidden[i]))
            assert torch.equal(Yi, Y)
            assert_row_matches(row, lcfast.measure_embeddings(Hi, Yi, n_classes=W.shape[0]), prefix=f"layer{i}/")
        rows.append(row)
        feats, hidden = [], {0: [], 1: []}
    tracker.close()
    assert logged == rows
    lines = list(csv.DictReader(io.StringIO((tmp_path / "t" / "nc.csv").read_text())))
    assert [int(r["step"]) for r in lines] == [2, 4]
    assert float(lines[1]["nc1_cdnv"]) == rows[1]["nc1_cdnv"] and lines[1]["nc4_agreement"] == ""
    assert float(lines[0]["layer1/nc2_norm_cov"]) == rows[0]["layer1/nc2_norm_cov"]


def test_accumulation_eval_and_closed_hooks():
    """Two micro-batches per optimizer step are one step of the interval; forwards in eval mode or
    under no_grad are not counted; after close() nothing is."""
    model = build_hf_model("gpt2", V).train()
    rec = HeadInputs(model)
    tracker = lcfast.NCTracker(model, every=1, covariance=False)
    feats = []
    for s in range(2):  # micro-batches
        x, labels, mask = tracker_batch(s)
        model(input_ids=x, labels=labels, attention_mask=mask).loss.backward()
        feats.append(by_hand(rec.seen[-1], labels, mask))
    with torch.no_grad():
        model(input_ids=x, labels=labels)
    model.eval()
    model(input_ids=x, labels=labels)
    model.train()
    row = tracker.step()
    H, Y = (torch.cat(t) for t in zip(*feats))
    assert row["interval_steps"] == 1 and row["n_positions"] == len(Y)
    ref = lcfast.measure_embeddings(H, Y, W=model.lm_head.weight.detach(), covariance=False)
    assert_row_matches(row, ref)
    assert row["nc1_pinv"] is None  # covariance=False
    tracker.close()
    model(input_ids=x, labels=labels)
    assert tracker.step()["n_positions"] == 0


def test_lcfast_gptneo_labels_after_forward():
    """lcfast's own model (called without labels): observe() / step(labels=…) give them, unshifted;
    the head input is its final layer norm's output."""
    from lcfast.model.gptneo import GPTNeo, GPTNeoConfig

    torch.manual_seed(0)
    model = GPTNeo(GPTNeoConfig(vocab_size=V, layers=1, width=16, heads=2, context=T, window_size=8)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = lcfast.NCTracker(model, every=2, shift_labels=False)
    Hs, Ys = [], []
    for s in range(2):
        x, _, _ = tracker_batch(s)
        y = torch.roll(x, -1, 1)
        y[:, -1] = -100
        with torch.no_grad():
            Hs.append(model.features(x)[:, :-1].reshape(-1, 16))
            Ys.append(y[:, :-1].reshape(-1))
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if s == 0:
            tracker.observe(y)
            row = tracker.step()
        else:
            row = tracker.step(labels=y)
    H, Y = torch.cat(Hs), torch.cat(Ys)
    assert row["n_positions"] == len(Y) == 2 * B * (T - 1)
    assert_row_matches(row, lcfast.measure_embeddings(H, Y, W=model.lm_head_weight.detach()))


def _train(tmp_path, steps, *, every=3, state=None, start=0):
    torch.manual_seed(0)
    model = build_hf_model("gpt2", V).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = lcfast.NCTracker(model, every=every, csv=tmp_path / "nc.csv")
    for s in range(steps):  # the weights of step s are those of an uninterrupted run (SGD, seeded dropout)
        if s == start and state is not None:  # the resumed run's tracker starts here (its earlier forwards: replaced)
            tracker.load_state_dict(state)
        torch.manual_seed(s)
        x, labels, mask = tracker_batch(s)
        loss = model(input_ids=x, labels=labels, attention_mask=mask).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if s >= start:
            tracker.step()
        if s == 3:
            saved = tracker.state_dict()
    tracker.close()
    return saved


def test_resume_from_state_dict(tmp_path):
    """A run killed after step 7 (its row at step 6 written) resumes from the state saved at step 4,
    mid-interval: the CSV ends identical to an uninterrupted run's."""
    (tmp_path / "a").mkdir()
    _train(tmp_path / "a", 9)
    (tmp_path / "b").mkdir()
    saved = _train(tmp_path / "b", 7)
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["global_step"] == 4 and state["interval_steps"] == 1 and state["stats"]["counts"].sum() > 0
    assert "6," in (tmp_path / "b" / "nc.csv").read_text()
    _train(tmp_path / "b", 9, state=state, start=4)
    a, b = ((tmp_path / d / "nc.csv").read_text() for d in "ab")
    assert a == b and len(a.splitlines()) == 4


def test_bad_input(tmp_path):
    model = build_hf_model("gpt2", V).train()
    with pytest.raises(UsageError, match="every 0"):
        lcfast.NCTracker(model, every=0)
    with pytest.raises(UsageError, match="no output embedding"):
        lcfast.NCTracker(torch.nn.Linear(4, 4), every=1)
    with pytest.raises(UsageError, match="2 blocks"):
        lcfast.NCTracker(model, every=1, layers=[2])
    with pytest.raises(UsageError, match="callable"):
        lcfast.NCTracker(model, every=1, log="wandb")
    tracker = lcfast.NCTracker(model, every=1)
    x, labels, _ = tracker_batch(0)
    with pytest.raises(UsageError, match=r"labels must be \[B, T\]"):
        model(input_ids=x, labels=labels[:, :-1])
    model(input_ids=x)
    with pytest.raises(UsageError, match="had no labels="):
        tracker.step()
    with pytest.raises(UsageError, match="no training forward without labels"):
        tracker.observe(labels)
    other = lcfast.NCTracker(model, every=2)
    with pytest.raises(UsageError, match="every=1"):
        other.load_state_dict(tracker.state_dict())
    tracker.close()
    other.close()
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    t = lcfast.NCTracker(model, every=1, csv=tmp_path / "x.csv")
    model(input_ids=x, labels=labels)
    with pytest.raises(lcfast.DataError, match="columns are not this tracker's"):
        t.step()
    t.close()


# -- two ranks -----------------------------------------------------------------------------------------
def _rank_main(out: Path) -> None:
    """Under torchrun: DDP on gloo, 2 steps per rank on its own batches, every=2; each rank saves the
    positions it fed (selected by hand), rank 0 also the W of the row."""
    import torch.distributed as tdist

    tdist.init_process_group("gloo")
    r = tdist.get_rank()
    torch.set_num_threads(1)
    model = build_hf_model("gpt2", V).train()
    rec = HeadInputs(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    tracker = lcfast.NCTracker(ddp, every=2, csv=out / "nc.csv")
    feats = []
    for s in range(2):
        x, labels, mask = tracker_batch(s, rank=r)
        ddp(input_ids=x, labels=labels, attention_mask=mask).loss.backward()
        opt.step()
        opt.zero_grad()
        feats.append(by_hand(rec.seen[-1], labels, mask))
        row = tracker.step()
    H, Y = (torch.cat(t) for t in zip(*feats))
    torch.save({"H": H, "Y": Y, "W": model.lm_head.weight.detach().clone(), "row": row}, out / f"rank{r}.pt")
    tdist.destroy_process_group()


def test_two_ranks_sum_statistics(tmp_path):
    p = torchrun([str(tmp_path)], nproc=2, timeout=240, script=Path(__file__))
    assert p.returncode == 0, p.stderr[-3000:]
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    H, Y = torch.cat([g["H"] for g in got]), torch.cat([g["Y"] for g in got])
    assert torch.equal(got[0]["W"], got[1]["W"])
    ref = lcfast.measure_embeddings(H, Y, W=got[0]["W"])
    for g in got:  # every rank gets the summed row
        assert g["row"]["n_positions"] == len(Y) == 92
        assert_row_matches(g["row"], ref)
    lines = list(csv.DictReader(io.StringIO((tmp_path / "nc.csv").read_text())))
    assert len(lines) == 1 and float(lines[0]["nc1_cdnv"]) == got[0]["row"]["nc1_cdnv"]


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
