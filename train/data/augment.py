"""Data augmentation (data.augment) for image data, on the training split only.

`flip_crop` (a random horizontal flip and a random crop of the image padded by 4 pixels, the
CIFAR recipe) works on whole batches on the device: one gather, no per-image work.
`trivialaugment` and `randaugment` are torchvision's policies (transforms.v2), per image, on
the uint8 pixels. Every draw is seeded by the run's seed, the epoch and the example's place in
the epoch's global batch: a rerun, a resume mid-epoch and any number of torchrun ranks see the
same augmented images. `auto` is none: the course's sets are digits and letters, which a flip
would turn into other ones, and presets say what they use.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from train.errors import UserError

NAMES = ("auto", "none", "flip_crop", "trivialaugment", "randaugment")
PAD = 4


def choose(name: str, is_image: bool):
    """The augmentation `name` stands for (None: none); refused for data that is not images."""
    name = getattr(name, "value", name)
    if name not in NAMES:
        raise UserError(f"data.augment={name!r} is not one of {list(NAMES)}.")
    if name in ("auto", "none"):
        return None
    if not is_image:
        raise UserError(f"data.augment={name} is for image data; this data is not images "
                        "(use data.augment=none).")  # fmt: skip
    return FlipCrop() if name == "flip_crop" else Policy(name)


def seed_of(seed: int, epoch: int, batch: int) -> int:
    """The seed of one global batch's draws (the same on every rank)."""
    return (seed * 1_000_003 + epoch) * 1_000_033 + batch


class FlipCrop:
    """A random crop of the PAD-padded image (padding: black), flipped left to right at
    random, on a batch already normalised and on the device."""

    on_pixels = False  # works on normalised floats

    def __call__(self, x: Tensor, black: Tensor, seed: int, part: tuple[int, int],
                 size: int) -> Tensor:  # fmt: skip
        """`x`: this rank's `part` (start, end) of a global batch of `size` examples."""
        g = torch.Generator(device=x.device).manual_seed(seed)
        flip = torch.rand(size, generator=g, device=x.device)[part[0] : part[1]] < 0.5
        shift = torch.randint(-PAD, PAD + 1, (2, size), generator=g, device=x.device)
        dy, dx = shift[:, part[0] : part[1]]
        n, _, h, w = x.shape
        padded = F.pad(x - black, (PAD, PAD, PAD, PAD)) + black
        rows = torch.arange(h, device=x.device) + PAD + dy[:, None]
        cols = torch.arange(w, device=x.device)
        cols = torch.where(flip[:, None], w - 1 - cols, cols) + PAD + dx[:, None]
        which = torch.arange(n, device=x.device)[:, None, None]
        out = padded[which, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
        return out.permute(0, 3, 1, 2)  # (channels_last in memory, as gathered)


class Policy:
    """torchvision's TrivialAugmentWide or RandAugment, one draw per image, on uint8 pixels
    (the CPU's: torchvision's ops draw from torch's global generator, seeded per image inside
    a fork of it, so the run's own random state is untouched)."""

    on_pixels = True

    def __init__(self, name: str):
        from torchvision.transforms import v2

        self.transform = v2.TrivialAugmentWide() if name == "trivialaugment" else v2.RandAugment()

    def __call__(self, x: Tensor, seed: int, first: int) -> Tensor:
        """`x`: uint8 images (N, C, H, W), the first at position `first` of its global batch."""
        out = torch.empty_like(x)
        with torch.random.fork_rng(devices=[]):
            for i, image in enumerate(x):
                torch.manual_seed(seed * 4099 + first + i)
                out[i] = self.transform(image)
        return out
