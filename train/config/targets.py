"""The callables a config may name as `_target_`: this package's data builders and models,
and torch's optimizers and schedulers. Nothing else is ever called from a config.

A run's record (run.json, a checkpoint's stored config) is untrusted input: a crafted one could
name `pathlib.Path.write_text` or `os.system`, and Hydra's own blocklist covers only a few
such names. So every `_target_` is resolved here, against this allowlist, and a stored config
is called with its values as they are: no interpolation in it is ever resolved.
"""

import importlib
from typing import Any

from train.errors import UserError

# A user's code (train.models.usercode) is on the lists too, and runs only by its user's consent:
# `call` refuses it unless the command line named the file again (see train.models.usercode).
DATA = tuple(f"train.data.sets.{name}" for name in (
    "torchvision_data", "digits", "course_table", "synthetic", "csv", "image_folder",
)) + ("train.models.usercode.data",)  # fmt: skip
MODELS = tuple(f"train.models.course.{name}" for name in (
    "Linear", "logistic", "softmax", "MLP", "CNN",
)) + ("train.models.vision.Vision", "train.models.usercode.model",
      "train.models.usercode.in_process")  # fmt: skip
OPTIMIZERS = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.Adagrad",
              "torch.optim.RMSprop", "torch.optim.Adadelta", "torch.optim.Adamax",
              "torch.optim.NAdam", "torch.optim.RAdam")  # fmt: skip
SCHEDULERS = tuple(f"torch.optim.lr_scheduler.{name}" for name in (
    "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
    "OneCycleLR", "LinearLR", "ConstantLR", "PolynomialLR", "ReduceLROnPlateau"))  # fmt: skip
ALLOWED = {"data": DATA, "model": MODELS, "optim": OPTIMIZERS, "sched": SCHEDULERS}
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def check(config, where: str) -> None:
    """Refuse, in one paragraph, any `_target_` in `config` (a composed DictConfig or a stored
    plain dict) outside its group's allowlist, and any other callable a config could name."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(config, resolve=False) if OmegaConf.is_config(config) else config
    bad = []
    for group, node in (plain or {}).items():
        for key, target in _targets(node, group):
            if target not in ALLOWED.get(group, ()):
                bad.append(f"{key}={target!r}")
    if bad:
        raise UserError(
            f"{where} names callables this package does not build: {', '.join(bad)}. Configs may "
            "only name train.data.* builders, train.models.* models and torch.optim optimizers "
            "and schedulers (a run dir from elsewhere may have been tampered with); refusing it."
        )


def _targets(node, prefix: str):
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}"
            if k == "_target_":
                yield key, v
            else:
                yield from _targets(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _targets(v, f"{prefix}[{i}]")


def call(group: str, stored: dict, consent=None, origin: dict | None = None, **extra) -> Any:
    """Build `group` ("data" or "model") from a stored, plain config: its `_target_` from the
    allowlist, its values passed as they are (never interpolated). A user's code runs only as
    a file `consent` (train.models.usercode.Consent: what the command line named) holds with
    the SHA-256 `origin` records for the group."""
    from train.models import usercode

    if not isinstance(stored, dict) or "_target_" not in stored:
        raise UserError(f"the stored {group} config is not a config of ours: {stored!r:.200}")
    check({group: stored}, f"the stored {group} config")
    kwargs = {k: v for k, v in stored.items() if k not in HYDRA_KEYS}
    if stored["_target_"] in (usercode.MODEL, usercode.DATA):
        recorded = (origin or {}).get(group)
        kwargs["code"] = (consent or usercode.Consent()).file_for(f"{group}", recorded)
    module, name = stored["_target_"].rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module), name)(**kwargs, **extra)
    except TypeError as e:  # keys the builder does not take: not a config it wrote
        target = stored["_target_"]
        raise UserError(f"the stored {group} config does not fit {target}: {e}.") from None


def instantiate(group: str, node, **extra) -> Any:
    """Hydra's instantiate for a composed config, once its `_target_` is checked."""
    from hydra.utils import instantiate as hydra_instantiate

    check({group: node}, f"the {group} config")
    return hydra_instantiate(node, **extra)
