"""The model's layers, output shapes and parameter counts, like the course's `summary(model)`:
every training run logs it and writes it to `summary.txt` and TensorBoard's TEXT tab."""

import logging

import torch
from torch import nn


def table(model: nn.Module, in_shape) -> str:
    """One row per leaf layer (name, type, output shape, parameters), then the totals."""
    rows: list[tuple[str, str, str, int]] = []

    def record(name):
        def hook(module, inputs, out):
            own = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append((name, type(module).__name__, str((-1, *out.shape[1:])), own))

        return hook

    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record(n)) for n, m in leaves]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()  # batch norm: one example, no running-statistics update
        with torch.inference_mode():
            model(torch.zeros(1, *in_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = ("Layer", "Type", "Output shape", "Param #")
    cells = [head, *[(n, t, s, f"{p:,}") for n, t, s, p in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(4)]
    line = "  ".join(f"{{:<{w}}}" for w in widths[:3]) + f"  {{:>{widths[3]}}}"
    rule = "-" * (sum(widths) + 6)
    out = [rule, line.format(*head), rule, *(line.format(*r) for r in cells[1:]), rule]
    out += [
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Input shape: {(-1, *in_shape)}",
    ]
    return "\n".join(out)


def describe(model: nn.Module, in_shape, run, loggers) -> None:
    """The model's summary into the log, the train.run.rundir.RunDir `run`'s summary.txt and
    the loggers (TensorBoard's TEXT tab)."""
    text = table(model, in_shape)
    logging.getLogger("train").info("model:\n%s", text)
    run.write("summary.txt", text + "\n", sync=False)
    loggers.text("viz/model summary", text)
