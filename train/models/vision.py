"""torchvision's classification models by name: `model=torchvision model.arch=resnet18`.

Built with the data's classes (the head replaced) and channels (the first convolution adapted:
grayscale data sums the pretrained RGB filters), from scratch or from pretrained weights read
from TORCH_HOME (`paths.torch_home`, under the data dir). The weights file is loaded as every
file here is (weights_only, its tensors bounded by their storage), never by torch.hub's loader,
which unpickles; its SHA-256 goes into run.json and the checkpoint. With pretrained weights the
inputs are prepared as the weights were trained (resize, centre crop, their mean and std).
"""

import hashlib
import logging
import math
from pathlib import Path

import torch
from torch import nn

from train.errors import UserError

log = logging.getLogger("train")
FREEZE = ("none", "backbone")
PREPROCESS = ("auto", "data")


def architectures() -> list[str]:
    """Every classification model torchvision builds by name."""
    from torchvision import models

    return models.list_models(module=models)


def weights_of(arch: str, name: str | None):
    """The weights enum member `name` (DEFAULT, IMAGENET1K_V1, ResNet18_Weights.DEFAULT) of
    `arch`, or None; an unknown architecture or name is one paragraph with the valid ones."""
    from torchvision import models

    known = architectures()
    if arch not in known:
        import difflib

        close = difflib.get_close_matches(arch, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"model.arch={arch!r} is not a torchvision classification model{hint}; "
                        f"they are {', '.join(known)}.")  # fmt: skip
    if name is None or str(name).lower() in ("null", "none"):
        return None
    enum = models.get_model_weights(arch)
    member = str(name).rsplit(".", 1)[-1]
    if member not in enum.__members__:
        raise UserError(f"model.weights={name!r} is not a weights name of {arch}; use null (from "
                        f"scratch) or one of {list(enum.__members__)}.")  # fmt: skip
    return enum[member]


def weights_path(weights, torch_home: str) -> Path:
    """Where torchvision keeps the file of `weights`: <TORCH_HOME>/hub/checkpoints/<its name>."""
    return Path(torch_home) / "hub" / "checkpoints" / Path(weights.url).name


def check_weights(arch: str, name: str | None, torch_home: str) -> None:
    """Before any work: the pretrained file is on disk, or one paragraph naming the file, its
    URL and the command that fetches it."""
    weights = weights_of(arch, name)
    if weights is None:
        return
    path = weights_path(weights, torch_home)
    if not path.is_file():
        raise UserError(
            f"model.weights={name} needs {path} (the file of {weights}, from {weights.url}), and "
            f"it is not there. Fetch it once where there is a network: python -m train.fetch "
            f"weights={arch}:{weights.name} (make data WEIGHTS={arch}), or copy the file there; "
            "or train from scratch with model.weights=null."
        )


class Vision(nn.Module):
    """A torchvision classifier for this data: `net`, with its head (`head`, its module name)
    sized to the outputs, and, with pretrained weights (`preprocess=auto`), their input
    preparation in `forward` (resize, crop) and `normalization` (their mean and std)."""

    def __init__(self, in_shape, num_outputs: int, arch: str, weights=None, freeze="none",
                 preprocess="auto", cifar_stem: bool = False, torch_home: str = "."):  # fmt: skip
        super().__init__()
        from torchvision import models

        freeze, preprocess = _name(freeze), _name(preprocess)
        _one_of("model.freeze", freeze, FREEZE)
        _one_of("model.preprocess", preprocess, PREPROCESS)
        chosen = weights_of(arch, weights)
        if freeze == "backbone" and chosen is None:
            raise UserError("model.freeze=backbone trains the head alone, on a pretrained "
                            "backbone: give model.weights (e.g. DEFAULT), or use "
                            "model.freeze=none.")  # fmt: skip
        try:
            net = models.get_model(arch, weights=None, **_build_options(arch, chosen, in_shape))
        except (AssertionError, ValueError, TypeError) as e:  # (a ViT's size, a patch size)
            raise UserError(f"torchvision cannot build {arch} for inputs shaped "
                            f"{tuple(in_shape)}: {e}") from None  # fmt: skip
        self.train_origin = None  # (recorded in run.json and every checkpoint)
        if chosen is not None:
            self.train_origin = _load_weights(net, chosen, weights_path(chosen, torch_home), arch)
        _drop_aux(net)
        if cifar_stem:
            _cifar_stem(net, arch)
        _adapt_channels(net, in_shape[0])
        self.head = _replace_head(net, num_outputs)
        self.net = net
        self.resize = self.crop = None
        self.normalization = None  # (mean, std) per input channel, for the data's Normalizer
        if chosen is not None and preprocess == "auto":
            self._prepare_as(chosen, in_shape[0])
        self.frozen = [m for n, m in net.named_modules() if freeze == "backbone"
                       and n and not _in_head(n, self.head)]  # fmt: skip
        for m in self.frozen:
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)

    def _prepare_as(self, weights, channels: int) -> None:
        t = weights.transforms()
        self.resize, self.crop = int(t.resize_size[0]), int(t.crop_size[0])
        mean, std = list(t.mean), list(t.std)
        if channels != 3:  # (grayscale: the filters were summed over RGB, the statistics averaged)
            mean, std = [sum(mean) / 3] * channels, [sum(std) / 3] * channels
        self.normalization = (mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            x = _resize_crop(x, self.resize, self.crop)
        return self.net(x)

    def train(self, mode: bool = True) -> "Vision":
        """Frozen batch norm stays in eval mode: its running statistics are the backbone's."""
        super().train(mode)
        for m in self.frozen:
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def param_groups(self, lr: float, scale: float) -> list[dict]:
        """What the optimizer trains: the head at `lr`, the (unfrozen) backbone at lr * scale."""
        head, backbone = [], []
        for n, p in self.net.named_parameters():
            if p.requires_grad:
                (head if _in_head(n, self.head) else backbone).append(p)
        return [{"params": head}] + ([{"params": backbone, "lr": lr * scale}] if backbone else [])


def _build_options(arch: str, weights, in_shape) -> dict:
    """What get_model needs beyond the name: ViTs from scratch take the data's image size."""
    if arch.startswith("vit_") and weights is None:
        return {"image_size": in_shape[1]}
    return {}


def _load_weights(net: nn.Module, weights, path: Path, arch: str) -> dict:
    """The pretrained state into `net`, read as every checkpoint is; what was loaded."""
    from train.run import checkpoint

    if not path.is_file():
        check_weights(arch, weights.name, str(path.parent.parent.parent))
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any damage: the file is not the weights
        fetch = f"python -m train.fetch weights={arch}:{weights.name}"
        raise UserError(f"{path} is not a loadable weights file ({type(e).__name__}); fetch it "
                        f"again: {fetch}") from None  # fmt: skip
    if not isinstance(state, dict) or (bad := checkpoint.oversized(state)) is not None:
        raise UserError(f"{path} is not a weights file of {arch}: {bad or 'not a state dict'}.")
    checkpoint.load_model(net, state, path)
    prefix = Path(weights.url).stem.rsplit("-", 1)[-1]
    if not digest.startswith(prefix):  # torchvision names its files by their hash
        log.warning("%s is not the file torchvision published (its SHA-256 %s... does not start "
                    "with the %s in its name)", path, digest[:12], prefix)  # fmt: skip
    log.info("pretrained weights: %s from %s (sha256 %s)", weights, path, digest[:16])
    return {"arch": arch, "weights": str(weights), "file": str(path), "sha256": digest}


def _drop_aux(net: nn.Module) -> None:
    """Inception's and GoogLeNet's auxiliary heads: a training-time extra output, left out."""
    if getattr(net, "aux_logits", False):
        net.aux_logits = False
        for name in ("AuxLogits", "aux1", "aux2"):
            if hasattr(net, name):
                setattr(net, name, None)


def _cifar_stem(net: nn.Module, arch: str) -> None:
    """The CIFAR ResNet stem: a 3x3 stride-1 first convolution and no max pool (32x32 inputs
    keep their detail, as in He et al.'s CIFAR experiments)."""
    if not (hasattr(net, "conv1") and hasattr(net, "maxpool")):
        raise UserError(f"model.cifar_stem=true is for the ResNet family; {arch} has no "
                        "conv1/maxpool stem.")  # fmt: skip
    old = net.conv1
    net.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()


def _adapt_channels(net: nn.Module, channels: int) -> None:
    """The first convolution for `channels` inputs: pretrained RGB filters summed for one
    channel (a gray image gets the response an RGB one of equal channels would)."""
    name, conv = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == channels:
        return
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)  # fmt: skip
    with torch.no_grad():
        w = conv.weight
        if channels == 1:
            new.weight.copy_(w.sum(1, keepdim=True))
        else:
            new.weight.copy_(w.repeat(1, math.ceil(channels / w.shape[1]), 1, 1)[:, :channels]
                             * (w.shape[1] / channels))  # fmt: skip
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set(net, name, new)


def _replace_head(net: nn.Module, num_outputs: int) -> str:
    """The last classifying layer (a Linear, or SqueezeNet's 1x1 Conv2d) for `num_outputs`;
    its module name."""
    name, layer = [(n, m) for n, m in net.named_modules()
                   if isinstance(m, nn.Linear | nn.Conv2d)][-1]  # fmt: skip
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, num_outputs)
    else:
        new = nn.Conv2d(layer.in_channels, num_outputs, layer.kernel_size, layer.stride)
    _set(net, name, new)
    return name


def _in_head(name: str, head: str) -> bool:
    return name == head or name.startswith(head + ".")


def _set(net: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, last = dotted.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, last, module)


def _resize_crop(x: torch.Tensor, size: int, crop: int) -> torch.Tensor:
    """The weights' own preparation on a batch: the shorter side to `size`, a centre crop of
    `crop` (torchvision's ImageClassification, done on the device)."""
    import torch.nn.functional as F

    h, w = (int(s) for s in x.shape[-2:])  # (ints also while TensorBoard traces the graph)
    scale = size / min(h, w)
    nh, nw = max(crop, int(h * scale + 0.5)), max(crop, int(w * scale + 0.5))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=nh < h or nw < w)  # fmt: skip
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def _name(value) -> str:
    return getattr(value, "value", value)


def _one_of(key: str, value, options) -> None:
    if value not in options:
        raise UserError(f"{key}={value!r} is not one of {list(options)}.")
