"""`python -m train.fetch data=mnist`: download a data set into the data dir once (torchvision
verifies its checksums) and decode it into the tensor cache, so training can run offline."""

import sys

from train.errors import run_entrypoint


def main(argv: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from train import config, targets
    from train.app import CONF_DIR

    config.register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=argv)
    extra = {"download": True} if "download" in cfg.data else {}
    data = targets.instantiate("data", cfg.data, **extra)
    sizes = ", ".join(
        f"{n} {len(s)}" for n in ("train", "val", "test") if (s := getattr(data, n)) is not None
    )
    print(f"ready in {cfg.paths.data_dir}: {sizes}; inputs {tuple(data.in_shape)}")


if __name__ == "__main__":
    run_entrypoint(lambda: main(sys.argv[1:]))
