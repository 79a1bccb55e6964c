"""Batches on the device: a seeded, epoch-dependent order, and each rank's shard of it.

An in-memory split is normalised once, onto the device (one float copy beside the uint8 one the
data keeps), and batches are formed by indexing it: the hot loop does no per-sample work and
starts no worker processes, as the loop a user writes by hand. Folder splits use a DataLoader.

Under torchrun, training step k takes global batch k of the epoch's order (the per-rank batch
times the ranks) and rank r trains on the r-th slice of it: the ranks together see what one
process with the global batch would. Evaluation splits the data in contiguous parts instead,
uneven where it must be, so every example is scored exactly once.
"""

from collections.abc import Iterator

import torch
from torch import Tensor

from train.data import Data, FolderSplit, Split, TensorSplit


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The training order of epoch `epoch`: the same for a given seed on every machine and rank."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def shard_bounds(n: int, batch_size: int, rank: int, world: int) -> list[tuple[int, int]]:
    """Rank `rank`'s (start, end) positions in an epoch's order, batch by batch. Every rank gets
    the same number of equal batches; the last n % world positions of the order sit the epoch
    out (a different few each epoch, as the order is reshuffled)."""
    per = n // world
    return [(s * world + rank * (e - s), s * world + (rank + 1) * (e - s))
            for s, e in bounds(per, batch_size)]  # fmt: skip


def part(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous part of n examples (evaluation: sizes differ by at most one)."""
    return rank * n // world, (rank + 1) * n // world


def bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch (start, end) pairs; a trailing batch of one joins the previous one (batch norm)."""
    starts = list(range(0, n, batch_size))
    pairs = [(s, min(s + batch_size, n)) for s in starts]
    if len(pairs) > 1 and pairs[-1][1] - pairs[-1][0] == 1:
        pairs[-2:] = [(pairs[-2][0], n)]
    return pairs


class Normalizer:
    """(x / scale - mean) / std as one multiply-add on the device; float inputs pass in float.
    Image batches come out in `memory_format` (channels_last for NHWC models)."""

    def __init__(self, data: Data, device: torch.device, memory_format=torch.contiguous_format):
        shape = (-1, 1, 1) if data.is_image else (-1,)
        self.a = (1.0 / (data.scale * data.std)).reshape(shape).to(device)
        self.b = (-data.mean / data.std).reshape(shape).to(device)
        self.memory_format = memory_format if data.is_image else torch.contiguous_format

    @classmethod
    def from_meta(cls, meta, device: torch.device) -> "Normalizer":
        """The same normalisation from a checkpoint's `DataMeta` (no data needed)."""
        from types import SimpleNamespace

        fields = SimpleNamespace(scale=meta.scale, mean=torch.tensor(meta.mean),
                                 std=torch.tensor(meta.std), is_image=meta.is_image)  # fmt: skip
        return cls(fields, device)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.b, x.float(), self.a).contiguous(memory_format=self.memory_format)

    def whole(self, x: Tensor, device: torch.device, chunk: int = 4096) -> Tensor:
        """All of `x`, normalised, on `device`; done in chunks, so no second full copy is made."""
        out = torch.empty(x.shape, dtype=torch.float32, device=device,
                          memory_format=self.memory_format)  # fmt: skip
        for i in range(0, len(x), chunk):
            out[i : i + chunk] = self(x[i : i + chunk].to(device))
        return out


class Batches:
    """One split's batches on `device`, normalised; the whole split moved there once.
    `rank`/`world`: which of torchrun's processes this is (see the module's docstring).
    `augment` (train.augment, the training split's): applied to the batches of `ordered`,
    seeded by `seed`, the epoch and the batch."""

    def __init__(self, split: Split, batch_size: int, normalize: Normalizer, device: torch.device,
                 rank: int = 0, world: int = 1, augment=None, seed: int = 0):  # fmt: skip
        self.split, self.batch_size, self.normalize, self.device = (
            split,
            batch_size,
            normalize,
            device,
        )
        self.rank, self.world, self.augment, self.seed = rank, world, augment, seed
        if isinstance(split, TensorSplit):
            pixels = augment is not None and augment.on_pixels  # (augmented before normalising)
            self.x = None if pixels else normalize.whole(split.x, device)
            self.y = split.y.to(device)

    def __len__(self) -> int:
        """The training batches of one epoch (this rank's)."""
        return len(shard_bounds(len(self.split), self.batch_size, self.rank, self.world))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's part, in stored order (evaluation)."""
        first, end = part(len(self.split), self.rank, self.world)
        pairs = [(first + s, first + e) for s, e in bounds(end - first, self.batch_size)]
        return self._batches(None, pairs)

    def ordered(self, order: Tensor, start: int = 0,
                epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:  # fmt: skip
        """This rank's batches of epoch `epoch` in `order`, from batch number `start` on
        (resuming mid-epoch); augmented, when this split is."""
        bounds_ = shard_bounds(len(self.split), self.batch_size, self.rank, self.world)
        batches = self._batches(order, bounds_[start:])
        if self.augment is None:
            return batches
        return self._augmented(batches, bounds_[start:], start, epoch)

    def _augmented(self, batches, pairs, start: int, epoch: int):
        from train.data.augment import seed_of

        for k, ((s, e), (x, y)) in enumerate(zip(pairs, batches, strict=True), start):
            seed, n = seed_of(self.seed, epoch, k), e - s  # (n: this rank's share of batch k)
            if self.augment.on_pixels:
                x = self.normalize(self.augment(x, seed, self.rank * n).to(self.device))
            else:
                x = self.augment(x, self.normalize.b, seed, (self.rank * n, (self.rank + 1) * n),
                                 n * self.world).contiguous(
                                     memory_format=self.normalize.memory_format)  # fmt: skip
            yield x, y

    def _batches(self, order: Tensor | None, pairs) -> Iterator[tuple[Tensor, Tensor]]:
        if isinstance(self.split, FolderSplit):
            yield from self._from_loader(order, pairs)
            return
        if self.x is None:  # pixels for the augmentation: uint8, on the CPU, not normalised
            for s, e in pairs:
                idx = slice(s, e) if order is None else order[s:e]
                yield self.split.x[idx], self.y[idx.to(self.device) if order is not None else idx]
            return
        order = None if order is None else order.to(self.device)
        for s, e in pairs:
            idx = slice(s, e) if order is None else order[s:e]
            yield self.x[idx], self.y[idx]

    def _from_loader(self, order, pairs):
        idx = order.tolist() if order is not None else list(range(len(self.split)))
        sampler = [idx[s:e] for s, e in pairs]
        loader = torch.utils.data.DataLoader(
            self.split.dataset,
            batch_sampler=sampler,
            num_workers=self.split.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        pixels = self.augment is not None and self.augment.on_pixels
        for x, y in loader:
            if pixels and x.dtype != torch.uint8:
                from train.errors import UserError

                raise UserError(f"data.augment's policies work on uint8 pixels; this data's "
                                f"inputs are {x.dtype}: augment in your Dataset's transforms, "
                                "or use data.augment=flip_crop.")  # fmt: skip
            if not pixels:
                x = self.normalize(x.to(self.device, non_blocking=True))
            yield x, y.to(self.device, non_blocking=True)
