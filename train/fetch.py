"""`python -m train.fetch data=mnist`: download a data set into the data dir once (torchvision
verifies its checksums) and decode it into the tensor cache, so training can run offline."""

import sys

from train.errors import run_entrypoint


def main(argv: list[str]) -> None:
    from train import conf, targets

    cfg = conf.compose(argv)
    extra = {"download": True} if "download" in cfg.data else {}
    data = targets.instantiate("data", cfg.data, **extra)
    sizes = ", ".join(
        f"{n} {len(s)}" for n in ("train", "val", "test") if (s := getattr(data, n)) is not None
    )
    print(f"ready in {cfg.paths.data_dir}: {sizes}; inputs {tuple(data.in_shape)}")


def cli() -> None:
    """The console script (pyproject's [project.scripts]) and `python -m train.fetch`."""
    run_entrypoint(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
