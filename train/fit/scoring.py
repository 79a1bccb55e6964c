"""The end of a run: scores of the best weights on every split, and pictures.

The pictures' tags start with viz/: TensorBoard sorts tag groups by name, and the train and val
curves come first on its page."""

import torch

from train.data import Data, TensorSplit
from train.data.batches import Batches, Normalizer
from train.fit.loop import measure
from train.fit.pictures import confusion_image, sample_grid
from train.fit.task import ClassificationMeter, Task

SPLITS = ("train", "val", "test")


def score(model, data: Data, task: Task, device, autocast, splits=SPLITS, batch_size: int = 1024):
    """Metrics per split present, and the confusion matrix of the last one (classifiers)."""
    norm = Normalizer(data, device)
    results, confusion = {}, None
    for name in splits:
        split = getattr(data, name)
        if split is None:
            continue
        meter = measure(model, Batches(split, batch_size, norm, device), task, autocast)
        results[name] = meter.compute()
        if isinstance(meter, ClassificationMeter):
            confusion = meter.confusion_matrix()
    return results, confusion


def undertrained(history: list[float], s, state) -> str | None:
    """A sentence when the run ended at max_epochs while the monitored metric was still
    clearly improving: a new best in the last two epochs, more than 2% better than a few
    epochs before, a gain that is more than 1% of all the run's gain (a loss creeping from
    1e-6 to 1e-7 is done). None otherwise (max_steps, a plateau; the caller knows of an early
    stop)."""
    if state.epoch < s.max_epochs or len(history) < 3:
        return None
    span = min(len(history) - 1, max(2, len(history) // 5))
    before, recent = history[-span - 1], history[-2:]
    best = min(recent) if s.monitor_mode == "min" else max(recent)
    if best != (min(history) if s.monitor_mode == "min" else max(history)):
        return None
    sign = 1 if s.monitor_mode == "min" else -1
    gain, total = sign * (before - best), sign * (history[0] - best)
    if not (gain > 0.02 * max(abs(before), 1e-12) and gain > 0.01 * total):
        return None
    return (
        f"under-trained: {s.monitor} was still improving when trainer.max_epochs="
        f"{s.max_epochs} ended ({before:.4g} -> {best:.4g} over the last {span} epochs); "
        f"more epochs would likely help, e.g. {2 * state.epoch}"
    )


def pictures(loggers, model, data: Data, task: Task, device, confusion, count: int, step: int):
    """The confusion matrix, a grid of sample inputs labelled predicted/true, and the grid of
    the worst-predicted validation examples (highest loss) beside it, to the `loggers`."""
    if confusion is not None:
        loggers.image("viz/confusion matrix", confusion_image(confusion, data.class_names), step)
    split = next(s for s in (data.test, data.val, data.train) if s is not None)
    if not (data.is_image and isinstance(split, TensorSplit) and count > 0):
        return
    x = split.x[:count]
    with torch.inference_mode():
        model.eval()
        pred = task.predict(model(Normalizer(data, device)(x.to(device)))).cpu()
    names = data.class_names
    grid = sample_grid(
        x.float() / data.scale, [names[i] for i in pred], [names[i] for i in split.y[:count]]
    )
    loggers.image("viz/samples (predicted,true)", grid, step)
    held_out = data.val if isinstance(data.val, TensorSplit) else split
    idx, pred = _worst(model, data, task, device, held_out, count)
    grid = sample_grid(held_out.x[idx].float() / data.scale, [names[i] for i in pred],
                       [names[i] for i in held_out.y[idx]])  # fmt: skip
    loggers.image("viz/worst predictions (predicted,true)", grid, step)


def _worst(model, data: Data, task: Task, device, split: TensorSplit, count: int):
    """Indices of the `count` examples of `split` with the highest loss, and their predictions."""
    losses, preds = [], []
    with torch.inference_mode():
        model.eval()
        for x, y in Batches(split, 1024, Normalizer(data, device), device):  # (inference only)
            out = model(x)
            losses.append(task.loss(out, y, reduction="none").cpu())
            preds.append(task.predict(out).cpu())
    losses = torch.cat(losses)
    idx = losses.topk(min(count, len(losses))).indices
    return idx, torch.cat(preds)[idx].tolist()
