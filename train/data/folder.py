"""A user's image folder (torchvision's ImageFolder layout): found, checked, and decoded.

Every file is decoded once before training, in parallel; what each holds (or why it cannot be
read) is cached beside the data by file size and modification time, so later runs check only
new or changed files. A folder that fits in memory is decoded once into a uint8 tensor (cached
the same way), and trains from memory at the built-in sets' speed; a larger one streams
through a DataLoader.
"""

import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from train.data import images
from train.data.cache import load_cache, save_cache
from train.errors import UserError
from train.system.container import not_found

log = logging.getLogger("train")
CACHE_VERSION = 2  # 2: each file's SHA-256


@dataclass
class Listing:
    """The image files of one split and their class indices."""

    files: list[Path]
    labels: list[int]
    classes: list[str]


@dataclass(frozen=True)
class Layout:
    """How every image of the folder is made into a tensor (recorded for predict)."""

    channels: int
    height: int
    width: int
    resize: bool  # false: every image already has this size
    background: str


def find(root: Path) -> tuple[Listing, Listing | None]:
    """The folder's train listing, and its test listing when root/train and root/test exist."""
    if not root.exists():
        raise UserError(not_found("data.path", root))
    if not root.is_dir():
        raise UserError(
            f"data.path={root} is not a directory. image_folder expects one folder per class "
            "(path/cat/1.png, path/dog/2.png, ...), optionally under path/train and path/test."
        )
    has_test = (root / "train").is_dir() and (root / "test").is_dir()
    train = _list(root / "train" if has_test else root)
    test = _list(root / "test") if has_test else None
    if test is not None and (extra := sorted(set(test.classes) - set(train.classes))):
        raise UserError(
            f"{root}/test has the class folder(s) {extra}, which {root}/train has no images of "
            f"(its classes: {train.classes}); a model cannot predict a class it never saw."
        )
    if test is not None:  # (test may lack a class: its labels are train's indices)
        test = Listing(test.files, [train.classes.index(test.classes[i]) for i in test.labels],
                       train.classes)  # fmt: skip
    return train, test


SMALL_CLASS = 3  # images a class needs to have one in each of train, val and test


def _list(root: Path) -> Listing:
    """Every image file under root/<class>/ (at any depth), by class. Hidden files and
    folders (macOS's ._x.png AppleDouble files, .DS_Store, .ipynb_checkpoints) are left out
    and counted; a class folder with no images is left out, named; a class with too few
    images to split is named."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        found = {d.name: _images(d, IMG_EXTENSIONS) for d in folders}
    except OSError as e:
        raise UserError(f"data.path={root} is not a usable image folder: {e}") from None
    hidden = sum(n for _, n in found.values())
    if hidden:
        log.info("left out %d hidden file(s) under %s (names starting with '.': macOS's ._* "
                 "AppleDouble files, .DS_Store, ...)", hidden, root)  # fmt: skip
    if empty := [name for name, (files, _) in found.items() if not files]:
        log.warning("left out %d class folder(s) of %s holding no images: %s", len(empty), root,
                    empty)  # fmt: skip
    classes = [name for name, (files, _) in found.items() if files]
    if len(classes) == 0:
        raise UserError(
            f"data.path={root} holds no image files ({', '.join(IMG_EXTENSIONS)}) in class "
            "folders; put each class's images in a folder of its own: path/<class>/<file>."
        )
    if small := [f"{c} ({len(found[c][0])})" for c in classes if len(found[c][0]) < SMALL_CLASS]:
        log.warning("class(es) with fewer than %d images, too few to appear in every split and "
                    "to be scored: %s", SMALL_CLASS, ", ".join(small))  # fmt: skip
    pairs = [(f, i) for i, c in enumerate(classes) for f in found[c][0]]
    return Listing([f for f, _ in pairs], [i for _, i in pairs], classes)


def _images(folder: Path, extensions) -> tuple[list[Path], int]:
    """The image files under `folder` (sorted, links followed) and how many hidden files
    were left out."""
    files, hidden = [], 0
    for where, dirs, names in os.walk(folder, followlinks=True):
        hidden += sum(1 for n in names if n.startswith("."))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(where) / n for n in sorted(names)
                  if not n.startswith(".") and n.lower().endswith(extensions)]  # fmt: skip
    return files, hidden


def check(files: list[Path], cache: Path, background: str) -> list[images.Probe]:
    """Decode every file once (in parallel), reusing earlier answers for unchanged files."""
    stats = [_stat(f) for f in files]
    known = _read_json(cache)
    todo = [i for i, (f, s) in enumerate(zip(files, stats, strict=True))
            if known.get(str(f), {}).get("stat") != s]  # fmt: skip
    if todo:
        log.info("checking %s image file(s) ...", f"{len(todo):,}")
        found = _parallel(lambda i: images.probe(files[i], background), todo)
        for i, p in zip(todo, found, strict=True):
            known[str(files[i])] = {"stat": stats[i], "probe": asdict(p)}
        _write_json(cache, known)
    return [images.Probe(**known[str(f)]["probe"]) for f in files]


def refuse_or_skip(listing: Listing, probes: list[images.Probe], skip: bool) -> Listing:
    """The listing without unreadable files, which are named (all of them): an error unless
    `skip` (data.skip_bad_files), then a warning."""
    bad = [(f, p.error) for f, p in zip(listing.files, probes, strict=True) if p.error]
    if not bad:
        return listing
    named = "; ".join(f"{f} ({why})" for f, why in bad)
    if not skip:
        raise UserError(
            f"{len(bad)} of {len(listing.files)} image file(s) cannot be read: {named}. Remove "
            "or replace them, or leave them out with data.skip_bad_files=true."
        )
    log.warning("skipping %d unreadable image file(s) (data.skip_bad_files=true): %s", len(bad),
                named)  # fmt: skip
    keep = [i for i, p in enumerate(probes) if not p.error]
    return Listing([listing.files[i] for i in keep], [listing.labels[i] for i in keep],
                   listing.classes)  # fmt: skip


def layout(probes: list[images.Probe], image_size, grayscale, background: str) -> Layout:
    """Channels and size from the images where they agree; `image_size` / `grayscale` (not
    null) decide instead. Mixed sizes without `image_size`: the most common size, said once."""
    ok = [p for p in probes if not p.error]
    channels = max(p.channels for p in ok) if grayscale is None else (1 if grayscale else 3)
    sizes = Counter((p.height, p.width) for p in ok)
    if image_size is not None:
        h, w = image_size
    else:
        (h, w), n = sizes.most_common(1)[0]
        if len(sizes) > 1:
            log.info("images come in %d sizes; resizing all to the most common, %dx%d (%d of "
                     "%d); set data.image_size=[height,width] to choose", len(sizes), w, h, n,
                     len(ok))  # fmt: skip
    return Layout(channels, h, w, resize=set(sizes) != {(h, w)}, background=background)


def to_tensor(pixels, lay: Layout) -> Tensor:
    """HWC uint8 pixels as a CHW uint8 tensor of the layout's size."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)
    if tuple(x.shape[1:]) != (lay.height, lay.width):
        from torchvision.transforms.v2 import functional as TF

        x = TF.resize(x, [lay.height, lay.width], antialias=True)
    return x.contiguous()


def load(path: Path, lay: Layout) -> Tensor:
    """One file, read and shaped as the layout says."""
    return to_tensor(images.read(path, lay.channels, lay.background), lay)


def decode(listing: Listing, lay: Layout, cache: Path, split: str) -> Tensor:
    """Every image of `listing` as one uint8 tensor (N, C, H, W), cached beside `cache` by the
    files' sizes and modification times and the layout."""
    key = hashlib.sha256(json.dumps([CACHE_VERSION, asdict(lay), [
        (str(f), _stat(f)) for f in listing.files]]).encode()).hexdigest()[:16]  # fmt: skip
    path = cache.with_name(f"tensors-{split}-{key}.pt")
    blob = load_cache(path)
    if blob is not None:
        return blob["x"]
    log.info("decoding %s image(s) into memory ...", f"{len(listing.files):,}")
    x = torch.empty(len(listing.files), lay.channels, lay.height, lay.width, dtype=torch.uint8)

    def one(i):
        x[i] = load(listing.files[i], lay)

    _parallel(one, range(len(listing.files)))
    for old in cache.parent.glob(f"tensors-{split}-*.pt"):  # one decoded copy, not one a change
        old.unlink(missing_ok=True)
    save_cache(path, {"x": x})
    return x


def fits_in_memory(n: int, lay: Layout) -> bool:
    """Decoded, the folder takes under a quarter of the memory this process may use."""
    return n * lay.channels * lay.height * lay.width < _memory_bytes() / 4


class FolderDataset(torch.utils.data.Dataset):
    """Files read on demand (a DataLoader's workers), shaped by the layout."""

    def __init__(self, listing: Listing, lay: Layout):
        self.listing, self.layout = listing, lay

    def __len__(self) -> int:
        return len(self.listing.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return load(self.listing.files[i], self.layout), self.listing.labels[i]


def cache_for(cache_dir: str, root: Path) -> Path:
    """Where a folder's check results live: one directory per folder under the data dir."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir) / "image_folder" / key / "checked.json"


def _parallel(fn, items):
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with ThreadPoolExecutor(max_workers=max(1, workers or 1)) as pool:  # PIL decodes without
        return list(pool.map(fn, items))  # the GIL


def _stat(path: Path) -> list[int]:
    s = path.stat()
    return [s.st_size, s.st_mtime_ns]


def _read_json(path: Path) -> dict:
    try:
        blob = json.loads(path.read_text())
        return blob["files"] if blob.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}  # absent or damaged: check again


def _write_json(path: Path, files: dict) -> None:
    """Best effort: a read-only data dir only means checking again next time."""
    from train.run import files as written

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written.write(path, json.dumps({"version": CACHE_VERSION, "files": files}),
                      "its image checks", sync=False)  # fmt: skip
    except OSError:
        pass


def _memory_bytes() -> int:
    """The memory this process may use: the machine's, or the container's cgroup limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total
