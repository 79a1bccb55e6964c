"""The model's layers, output shapes and parameter counts, like the course's `summary(model)`.

`python -m train.summary model=cnn data=digits` prints it for any config without training;
every training run logs it and writes it to `summary.txt` and TensorBoard's TEXT tab.
"""

import sys

from train.models.layers import table


def main(argv: list[str] | None = None) -> None:
    """`python -m train.summary <overrides>`: the summary of the model the config describes."""
    from train import config
    from train.config import schema, targets
    from train.errors import run_entrypoint
    from train.models import course

    def show():
        cfg = config.checked(list(sys.argv[1:] if argv is None else argv))
        schema.require_given(cfg)
        data = targets.instantiate("data", cfg.data)
        model = targets.instantiate("model", cfg.model, in_shape=data.in_shape,
                                    num_outputs=data.num_outputs)  # fmt: skip
        course.check_fits(model, data.task, data.num_classes)
        print(table(model, data.in_shape))

    run_entrypoint(show, usage=__doc__)


if __name__ == "__main__":
    main()
