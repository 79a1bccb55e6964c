"""`python -m bench.data` (`make bench-data`): the own-data paths side by side, each in its own
process, alternating order per repeat, medians reported.

CSV: a 200,000 x 30 file of floats. `numpy.loadtxt` reading it (numpy is loaded already, as in
a training process) against our `data=csv` builder: pandas imported, the file read, every cell
checked, the task chosen, features and splits made. Time, and the peak memory each adds to its
process.

Image folder: 20,000 28x28 grayscale PNGs in 10 class folders. One epoch of batches (64) on the
CPU, the data path alone: ours decoded into memory (the built-in sets' path), ours streamed
through a DataLoader (2 workers), and torchvision's ImageFolder + ToTensor + DataLoader
(shuffle, 2 workers) as the tutorials write it. Start-up (building the data) is reported too:
the first build checks and decodes every file, a second finds them cached.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CSV_ROWS, CSV_COLS = 200_000, 30
IMAGES = 20_000


def write_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(CSV_ROWS, CSV_COLS)) * 100
    header = ",".join([f"f{i}" for i in range(CSV_COLS - 1)] + ["target"])
    np.savetxt(path, x, delimiter=",", header=header, comments="", fmt="%.6f")


def write_folder(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % 10
        img = rng.integers(0, 60, (28, 28)).astype(np.uint8)
        img[c * 2 : c * 2 + 6] = 220
        d = root / str(c)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.png")


# --- workers: one measurement each, in a fresh process -------------------------------------------


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work(kind: str, path: Path, cache: Path) -> dict:
    import torch  # noqa: F401 - a training process has torch (and numpy) loaded already

    from train.data import sets

    imported = {}
    if kind == "ours_csv":  # the library's own start-up, once per process: reported apart
        before, start = _rss_mb(), time.perf_counter()
        import pandas  # noqa: F401

        imported = {"import_s": time.perf_counter() - start, "import_mb": _rss_mb() - before}
    before = _rss_mb()
    start = time.perf_counter()
    if kind == "loadtxt":
        np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    elif kind == "ours_csv":
        sets.csv(str(path), "target", task="auto", delimiter=None, decimal=None,
                 encoding="utf-8", missing="error", drop_columns=[], batch_size=64,
                 eval_batch_size=1024, val_fraction=0.1, test_fraction=0.2, split_seed=0,
                 normalize=True)  # fmt: skip
    else:
        return _epoch(kind, path, cache)
    return {"seconds": time.perf_counter() - start, "added_mb": _rss_mb() - before, **imported}


def _epoch(kind: str, root: Path, cache: Path) -> dict:
    import torch

    start = time.perf_counter()
    if kind == "torchvision":
        from torchvision import datasets, transforms

        ds = datasets.ImageFolder(str(root), transform=transforms.Compose(
            [transforms.Grayscale(), transforms.ToTensor()]))  # fmt: skip
        batches = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)
        n = len(ds)
    else:
        from train.data import sets
        from train.data.batches import Batches, Normalizer, epoch_order

        d = sets.image_folder(str(root), image_size=None, grayscale=None, background="white",
                              skip_bad_files=False, in_memory=kind == "memory", num_workers=2,
                              cache_dir=str(cache), batch_size=64, eval_batch_size=1024,
                              val_fraction=0.0, test_fraction=0.0, split_seed=0,
                              normalize=True)  # fmt: skip
        cpu = torch.device("cpu")
        split = Batches(d.train, 64, Normalizer(d, cpu), cpu)
        batches, n = split.ordered(epoch_order(len(d.train), 0, 0)), len(d.train)
    built = time.perf_counter()
    seen = sum(len(y) for _, y in batches)
    assert seen == n
    return {"build_s": built - start, "samples_per_s": n / (time.perf_counter() - built)}


# --- the parent ----------------------------------------------------------------------------------


def _run(kind: str, path: Path, cache: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.data", "--worker", kind, str(path),
                          str(cache)], capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=IMAGES)
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(work(a.worker[0], Path(a.worker[1]), Path(a.worker[2]))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        tmp = Path(tmp)
        write_csv(tmp / "big.csv")
        size_mb = (tmp / "big.csv").stat().st_size / 2**20
        write_folder(tmp / "pics", a.images)
        first = _run("memory", tmp / "pics", tmp / "cache")  # checks and decodes every file
        runs = {k: [] for k in ("loadtxt", "ours_csv", "memory", "stream", "torchvision")}
        for r in range(a.repeats):
            for kind in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                target = tmp / ("big.csv" if kind in ("loadtxt", "ours_csv") else "pics")
                runs[kind].append(_run(kind, target, tmp / "cache"))
                print(f"  {kind}: {runs[kind][-1]}", file=sys.stderr, flush=True)
    print(report(runs, first, size_mb, a.repeats, a.images))


def report(runs: dict, first: dict, size_mb: float, repeats: int, images: int) -> str:
    def med(kind, key):
        return statistics.median(r[key] for r in runs[kind])

    ours, np_ = med("ours_csv", "seconds"), med("loadtxt", "seconds")
    lines = [f"medians of {repeats}, alternating order", "",
             f"CSV {CSV_ROWS:,} x {CSV_COLS} ({size_mb:.0f} MB):", "",
             "| reader | seconds | peak memory added, MB | x file size |",
             "|---|---|---|---|"]  # fmt: skip
    for kind, name in (("loadtxt", "numpy.loadtxt"), ("ours_csv", "data=csv (pandas, checked)")):
        added = med(kind, "added_mb")
        lines.append(f"| {name} | {med(kind, 'seconds'):.2f} | {added:.0f} | "
                     f"{added / size_mb:.2f} |")  # fmt: skip
    imp = med("ours_csv", "import_s")
    lines += ["", f"importing pandas (once per process, not counted above): {imp:.2f} s, "
              f"{med('ours_csv', 'import_mb'):.0f} MB",
              f"ours / loadtxt: {ours / np_:.2f} (target <= 1.0); with pandas' import "
              f"{(ours + imp) / np_:.2f}; peak memory "
              f"{med('ours_csv', 'added_mb') / size_mb:.2f}x the file (target < 3)", "",
              f"Image folder, {images:,} PNGs of 28x28, one epoch of batches of 64 on the CPU:",
              "", "| path | samples/s | data build s | vs torchvision |",
              "|---|---|---|---|"]  # fmt: skip
    tv = med("torchvision", "samples_per_s")
    for kind, name in (("memory", "ours, decoded into memory"), ("stream", "ours, streamed"),
                       ("torchvision", "torchvision ImageFolder + DataLoader")):  # fmt: skip
        s = med(kind, "samples_per_s")
        lines.append(f"| {name} | {s:,.0f} | {med(kind, 'build_s'):.2f} | {s / tv:.1f}x |")
    lines += ["", f"first build of the folder (check and decode every file): "
              f"{first['build_s']:.2f} s"]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
