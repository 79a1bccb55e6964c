"""The metric sums: every batch counted, its loss given read (a float) or not (a tensor)."""

import pytest
import torch

from train.fit.task import Task

BATCHES = 139


def _batches(regression: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for i in range(BATCHES):
        n = 5 + i % 4  # uneven batch sizes
        out = torch.randn(n, 1 if regression else 4, generator=g)
        y = torch.randn(n, 1, generator=g) if regression else torch.randint(4, (n,), generator=g)
        yield out, y, torch.rand((), generator=g) if i % 2 else torch.rand((), generator=g).item()


def _expected(task: Task, batches) -> dict:
    out = torch.cat([b[0] for b in batches]).double()
    y = torch.cat([b[1] for b in batches]).double()
    loss = sum(float(b[2]) * len(b[1]) for b in batches) / len(y)
    if task.kind == "regression":
        err = out - y
        sst = ((y - y.mean()) ** 2).sum()
        return {"loss": loss, "mse": (err**2).mean().item(), "mae": err.abs().mean().item(),
                "r2": (1 - (err**2).sum() / sst).item()}  # fmt: skip
    pred, y = out.argmax(1), y.long()
    hits = [((pred == c) & (y == c)).sum().double() for c in range(4)]
    precision = [hits[c] / max((pred == c).sum(), 1) for c in range(4)]
    recall = [hits[c] / max((y == c).sum(), 1) for c in range(4)]
    return {"loss": loss, "accuracy": (pred == y).double().mean().item(),
            "precision": torch.stack(precision).mean().item(),
            "recall": torch.stack(recall).mean().item()}  # fmt: skip


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_meter_counts_every_batch_read_or_not(kind):
    task = Task(kind, None if kind == "regression" else 4)
    batches = list(_batches(kind == "regression"))
    meter = task.meter(torch.device("cpu"))
    for out, y, loss in batches:
        meter.update(task, out, y, loss)
    assert meter.compute() == pytest.approx(_expected(task, batches), rel=1e-9, abs=1e-12)
    if kind == "classification":
        assert meter.confusion_matrix().sum() == sum(len(b[1]) for b in batches)


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_meter_saved_mid_epoch_resumes_exactly(kind):
    """A run stopped mid-epoch saves the meter; the resumed epoch's metrics equal one unbroken."""
    task = Task(kind, None if kind == "regression" else 4)
    batches = list(_batches(kind == "regression", seed=1))
    whole = task.meter(torch.device("cpu"))
    for b in batches:
        whole.update(task, *b)
    first = task.meter(torch.device("cpu"))
    for b in batches[:67]:
        first.update(task, *b)
    resumed = task.meter(torch.device("cpu"))
    resumed.load_state_dict(first.state_dict())
    for b in batches[67:]:
        resumed.update(task, *b)
    assert resumed.compute() == whole.compute()


def test_meter_filled_under_inference_mode_is_read_outside_it():
    """Validation fills its meter under inference_mode; the epoch reads it afterwards."""
    task = Task("classification", 4)
    with torch.inference_mode():
        meter = task.meter(torch.device("cpu"))
        for out, y, loss in _batches(False):
            meter.update(task, out, y, torch.as_tensor(loss))
    assert set(meter.compute()) == {"loss", "accuracy", "precision", "recall"}
    assert meter.confusion_matrix().sum() == meter.n
