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
    timing = {"vitals/samples_per_s", "vitals/epoch_seconds", "vitals/validation_share"}
    tags = [t for t in acc.Tags()["scalars"] if t not in timing]
    scalars = {t: [(e.step, repr(e.value)) for e in acc.Scalars(t)] for t in tags}  # repr: exact
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["timing"]
    return blob["model"], blob["optimizer"], metrics, scalars


def assert_same(a, b):
    wa, oa, ma, sa = a
    wb, ob, mb, sb = b
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"weights differ: {differ[:5]} of {len(wa)}, e.g. {_gap(wa, wb, differ)}"
    assert oa["param_groups"] == ob["param_groups"], "the optimizers' param groups differ"
    assert oa["state"].keys() == ob["state"].keys(), "the optimizers hold different parameters"
    for p in oa["state"]:
        assert oa["state"][p].keys() == ob["state"][p].keys(), f"optimizer state {p}'s keys"
        moved = [k for k in oa["state"][p]
                 if not torch.equal(torch.as_tensor(oa["state"][p][k]),
                                    torch.as_tensor(ob["state"][p][k]))]  # fmt: skip
        assert not moved, f"optimizer state of parameter {p} differs: {moved}"
    assert ma == mb, f"metrics.json differs: {ma} != {mb}"
    first = next((t for t in sa if sa[t] != sb.get(t)), None)
    assert sa == sb, f"logged scalars differ, first {first}: {sa.get(first)} != {sb.get(first)}"


def _gap(wa: dict, wb: dict, keys: list) -> str:
    """The largest difference in the first differing tensor (the failure's size, for the log)."""
    a, b = wa[keys[0]].double(), wb[keys[0]].double()
    return f"max |a-b| = {(a - b).abs().max().item():.3g} in {keys[0]}"
