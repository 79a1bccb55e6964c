"""Comparing two runs bit for bit (shared by the reproducibility and reliability tests)."""

import json
from pathlib import Path

import torch

from runs import events


def outcome(run: Path) -> tuple[dict, dict, str, dict]:
    """Final weights, optimizer state, metrics.json and every logged training scalar; not the
    timing (metrics.json "timing", the train/ group's timing tags), which no two runs share."""
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    acc = events(run)
    timing = {"train/samples_per_s", "train/epoch_seconds", "train/validation_share"}
    tags = [t for t in acc.Tags()["scalars"] if t not in timing]
    scalars = {t: [(e.step, repr(e.value)) for e in acc.Scalars(t)] for t in tags}  # repr: exact
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["timing"]
    return blob["model"], blob["optimizer"], metrics, scalars


def assert_same(a, b):
    wa, oa, ma, sa = a
    wb, ob, mb, sb = b
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    for sa_, sb_ in zip(oa["state"].values(), ob["state"].values(), strict=True):
        assert all(torch.equal(torch.as_tensor(sa_[k]), torch.as_tensor(sb_[k])) for k in sa_)
    assert ma == mb, "metrics.json differs"
    assert sa == sb, "logged scalars differ"
