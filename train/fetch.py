"""`python -m train.fetch data=mnist`: download a data set into the data dir once (torchvision
verifies its checksums) and decode it into the tensor cache, so training can run offline.
`python -m train.fetch weights=resnet18` (or weights=resnet18:IMAGENET1K_V1): a torchvision
model's pretrained weights into paths.torch_home (`<data dir>/torch`), their SHA-256 checked
against the one in the file's published name."""

import sys
from pathlib import Path

from train.errors import UserError, run_entrypoint


def main(argv: list[str]) -> None:
    from train import config
    from train.config import cmdline, schema, targets

    wanted = [a.split("=", 1)[1] for a in argv if a.startswith("weights=")]
    rest = [a for a in argv if not a.startswith("weights=")]
    cmdline.check(rest, schema.Config, Path(config.CONF_DIR) / "config.yaml")
    cfg = config.checked(rest)
    for spec in wanted:
        print(f"ready: {weights(spec, cfg.paths.torch_home)}")
    if wanted and not any(a.startswith("data=") for a in rest):
        return
    schema.require_given(cfg)
    extra = {"download": True} if "download" in cfg.data else {}
    data = targets.instantiate("data", cfg.data, **extra)
    sizes = ", ".join(
        f"{n} {len(s)}" for n in ("train", "val", "test") if (s := getattr(data, n)) is not None
    )
    print(f"ready in {cfg.paths.data_dir}: {sizes}; inputs {tuple(data.in_shape)}")


def weights(spec: str, torch_home: str) -> Path:
    """`arch` or `arch:name` (DEFAULT when no name) downloaded, hash-checked, into place."""
    import torch

    from train.models import vision

    arch, _, name = spec.partition(":")
    chosen = vision.weights_of(arch, name or "DEFAULT")
    path = vision.weights_path(chosen, torch_home)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = Path(chosen.url).stem.rsplit("-", 1)[-1]
    try:
        torch.hub.download_url_to_file(chosen.url, str(path), hash_prefix=prefix, progress=True)
    except (OSError, RuntimeError, ValueError) as e:  # no network, a proxy, a wrong hash
        raise UserError(
            f"could not download {chosen} from {chosen.url} ({' '.join(str(e).split())[:300]}). "
            f"With no network here, download that file where there is one and copy it to "
            f"{path} (its SHA-256 starts with the {prefix} in its name; train warns when a file's "
            "does not)."
        ) from None
    return path


def cli() -> None:
    """The console script (pyproject's [project.scripts]) and `python -m train.fetch`."""
    run_entrypoint(lambda: main(sys.argv[1:]), usage=__doc__)


if __name__ == "__main__":
    cli()
