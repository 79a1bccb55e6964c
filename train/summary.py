"""The model's layers, output shapes and parameter counts, like the course's `summary(model)`.

`python -m train.summary model=cnn data=digits` prints it for any config without training;
every training run logs it and writes it to `summary.txt` and TensorBoard's TEXT tab.
"""

import logging
import sys
from pathlib import Path

import torch
from torch import nn

from train import files


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


def describe(model: nn.Module, in_shape, run_dir: Path, writer) -> None:
    """The model's summary into the log, summary.txt and TensorBoard's TEXT tab."""
    text = table(model, in_shape)
    logging.getLogger("train").info("model:\n%s", text)
    files.write(run_dir / "summary.txt", text + "\n", sync=False)
    writer.add_text("viz/model summary", "    " + text.replace("\n", "\n    "), 0)  # preformatted


def main(argv: list[str] | None = None) -> None:
    """`python -m train.summary <overrides>`: the summary of the model the config describes."""
    from train import conf, config, models, targets
    from train.errors import run_entrypoint

    def show():
        cfg = conf.checked(list(sys.argv[1:] if argv is None else argv))
        config.require_given(cfg)
        data = targets.instantiate("data", cfg.data)
        model = targets.instantiate("model", cfg.model, in_shape=data.in_shape,
                                    num_outputs=data.num_outputs)  # fmt: skip
        models.check_fits(model, data.task, data.num_classes)
        print(table(model, data.in_shape))

    run_entrypoint(show, usage=__doc__)


if __name__ == "__main__":
    main()
