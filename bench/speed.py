"""`python -m bench.speed` (`make bench`): our entrypoint side by side with the loop a user would
write by hand, the tutorials' DataLoader path and the machine's limit.

Per row (model x batch size), each variant in its own process, in alternating order per repeat:
  A   `python -m train` as a user runs it: validation, TensorBoard, checkpoints, progress on
  A*  the same with the settings measured fastest on this device (listed in the output)
  B   the same model and optimizer in a plain loop over normalised tensors in memory
  C   torchvision.datasets.MNIST + ToTensor() + DataLoader, reading MNIST files written here
  D   dense matmul GFLOP/s (the limit) and each model's training FLOPs per sample
Throughput is samples/s over whole epochs, timed from the end of the first optimizer step
(start-up, reported for A, ends there). A's figure counts its checkpoints and logging but not
its validation passes, whose share of the epoch is reported apart. The data: synthetic
MNIST-shaped images (60,000 to train on, 1x28x28, 10 classes), so nothing is downloaded.
"""

import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# model -> (overrides, epochs per measurement: about ten seconds or more of training each)
MODELS = {
    "mlp": (["model=mlp", "model.hidden=[512,512]"], 3),
    "cnn": (["model=examples_cnn"], 1),
}
VAL_SHARE = 6  # validation images: 1 per 6 training images (10,000 for 60,000); A validates
TARGETS = "A/B >= 0.95; A/C >= 2.5 for mlp@64; mlp@1024 >= 75% of peak; cnn@64 A*/B >= 1.2"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mlp,cnn", help="of: " + ", ".join(MODELS))
    p.add_argument("--batches", default="64,256,1024")
    p.add_argument("--repeats", type=int, default=3, help="medians of this many (alternating)")
    p.add_argument("--samples", type=int, default=None, help="training images (60,000)")
    p.add_argument("--epochs", type=int, default=None, help="default: per model (mlp 3, cnn 1)")
    p.add_argument("--compile", action="store_true", help="also measure trainer.compile=true")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2,000 images, 1 repeat")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: runs/bench/)")
    p.add_argument("--worker", choices=["B", "C", "D"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(_work(a)))
        return
    if a.quick:
        a.repeats, a.epochs = 1, 1
    a.samples = a.samples or (2000 if a.quick else 60_000)
    models, batches = a.models.split(","), [int(b) for b in a.batches.split(",")]
    if unknown := [m for m in models if m not in MODELS]:
        raise SystemExit(f"--models: {unknown} not among {list(MODELS)}")
    out = a.out or Path("runs/bench") / f"bench-{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    result = run(models, batches, a.repeats, a.samples, a.epochs, a.compile)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"\nwrote {out}")


# --- the parent: rows, variants, alternation, medians ------------------------------------------


def run(models, batches, repeats, samples, epochs, compile_too) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tuned = _tuned_settings(device)
    variants = {"A": [], "A*": tuned, "B": None, "C": None}
    if compile_too:
        variants["A+compile"] = [*tuned, "trainer.compile=true"]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        _write_mnist_files(root, samples)
        peak = _worker("D", "mlp", 0, samples, 1, root)[0]
        rows = []
        for model in models:
            for batch in batches:
                rows.append({"model": model, "batch": batch, "runs": {v: [] for v in variants}})
        for r in range(repeats):
            for row in rows:
                names = list(variants) if r % 2 == 0 else list(variants)[::-1]
                for v in names:
                    n_epochs = epochs or MODELS[row["model"]][1]
                    if variants[v] is None:
                        res, rss = _worker(v, row["model"], row["batch"], samples, n_epochs, root)
                    else:
                        res, rss = _entrypoint(row, variants[v], samples, n_epochs, root / "runs")
                    row["runs"][v].append({**res, "peak_rss_mb": rss})
                    print(f"  {row['model']}@{row['batch']} {v}: {res['samples_per_s']:,.0f} "
                          f"samples/s", file=sys.stderr, flush=True)  # fmt: skip
    for row in rows:
        _summarise(row, peak, variants)
    return {"machine": _machine(device), "peak": peak, "settings": {"A*": tuned},
            "samples": samples, "repeats": repeats, "targets": TARGETS, "rows": rows}  # fmt: skip


def _tuned_settings(device: str) -> list[str]:
    """What we measured to help (docs/benchmarks.md): bf16 autocast where the hardware has bf16
    units (it also turns channels_last on for CNNs); otherwise channels_last alone."""
    import torch

    if device == "cuda" or torch.backends.mkldnn.is_available() and _cpu_has_bf16():
        return ["trainer.amp=bf16"]
    return ["trainer.channels_last=true"]


def _cpu_has_bf16() -> bool:
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _limit(peak: dict, settings: list[str] | None) -> float:
    """The matmul peak of the precision a variant trains in (bf16 under trainer.amp=bf16)."""
    bf16 = settings is not None and "trainer.amp=bf16" in settings
    return peak["all"]["bf16"] if bf16 and "bf16" in peak["all"] else peak["gflops"]


def _summarise(row: dict, peak: dict, settings: dict) -> None:
    med = {v: _median(runs, "samples_per_s") for v, runs in row["runs"].items()}
    flops = _median(row["runs"]["B"], "flops_per_sample")
    a = row["runs"]["A"]
    row.update(
        samples_per_s=med,
        flops_per_sample=flops,
        gflops={v: s * flops / 1e9 for v, s in med.items()},
        fraction_of_peak={v: s * flops / 1e9 / _limit(peak, settings[v]) for v, s in med.items()},
        ratios={
            "A/B": med["A"] / med["B"],
            "A/C": med["A"] / med["C"],
            "A*/B": med["A*"] / med["B"],
        },  # fmt: skip
        startup_s=_median(a, "first_step_s"),
        val_fraction=_median(a, "val_fraction"),
        peak_rss_mb={v: max(r["peak_rss_mb"] for r in runs) for v, runs in row["runs"].items()},
    )
    cuda = {v: max(r.get("cuda_max_allocated_mb", 0) for r in runs)
            for v, runs in row["runs"].items()}  # fmt: skip
    if any(cuda.values()):
        row["cuda_max_allocated_mb"] = cuda


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(result: dict) -> str:
    """The results as Markdown tables, then the targets, each with its measured figure."""
    peak = result["peak"]
    limits = ", ".join(f"{k} {v:.0f}" for k, v in peak["all"].items())
    lines = [
        f"{result['machine']['summary']}; matmul peak GFLOP/s ({peak['n']}x{peak['n']}): "
        f"{limits}; medians of {result['repeats']}; A* = A with "
        f"{' '.join(result['settings']['A*'])}",
        "",
        "| model | batch | C tutorial | B plain loop | A ours | A* | A/B | A/C | A*/B "
        "| A GFLOP/s (% peak) | A* % peak | MFLOP/sample | val % of epoch | A start-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        s, q = r["samples_per_s"], r["ratios"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {s['C']:,.0f} | {s['B']:,.0f} | {s['A']:,.0f} "
            f"| {s['A*']:,.0f} | {q['A/B']:.2f} | {q['A/C']:.2f} | {q['A*/B']:.2f} "
            f"| {r['gflops']['A']:.0f} ({100 * r['fraction_of_peak']['A']:.0f}%) "
            f"| {100 * r['fraction_of_peak']['A*']:.0f}% "
            f"| {r['flops_per_sample'] / 1e6:.1f} | {100 * r['val_fraction']:.1f} "
            f"| {r['startup_s']:.1f} |"
        )
    extra = [(r, v) for r in result["rows"] for v in r["samples_per_s"] if len(v) > 2]
    if extra:
        lines += ["", "| model | batch | variant | samples/s | /B |", "|---|---|---|---|---|"]
        for r, v in extra:
            s = r["samples_per_s"]
            lines.append(f"| {r['model']} | {r['batch']} | {v} | {s[v]:,.0f} "
                         f"| {s[v] / s['B']:.2f} |")  # fmt: skip
    lines += ["", "| model | batch | peak RSS MB: A | A* | B | C |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        m = r["peak_rss_mb"]
        lines.append(f"| {r['model']} | {r['batch']} | {m['A']:.0f} | {m['A*']:.0f} "
                     f"| {m['B']:.0f} | {m['C']:.0f} |")  # fmt: skip
    lines += ["", "Targets:"] + [f"  {'met' if ok else 'MISSED'}: {what}" for what, ok in
                                 targets(result)]  # fmt: skip
    return "\n".join(lines)


def targets(result: dict) -> list[tuple[str, bool]]:
    """Each target with its measured figure, and whether it was met."""
    rows = {(r["model"], r["batch"]): r for r in result["rows"]}
    out = []
    for (m, b), r in rows.items():
        out.append((f"{m}@{b} A/B {r['ratios']['A/B']:.2f} >= 0.95", r["ratios"]["A/B"] >= 0.95))
        out.append((f"{m}@{b} start-up {r['startup_s']:.1f}s < 4s", r["startup_s"] < 4))
    if r := rows.get(("mlp", 64)):
        out.append((f"mlp@64 A/C {r['ratios']['A/C']:.2f} >= 2.5", r["ratios"]["A/C"] >= 2.5))
    if r := rows.get(("mlp", 1024)):
        f = r["fraction_of_peak"]["A"]
        out.append((f"mlp@1024 A at {100 * f:.0f}% of peak >= 75%", f >= 0.75))
    if r := rows.get(("cnn", 64)):
        q = r["ratios"]["A*/B"]
        out.append((f"cnn@64 A*/B {q:.2f} >= 1.2", q >= 1.2))
    return out


def _machine(device: str) -> dict:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    name = torch.cuda.get_device_name() if device == "cuda" else f"{cpu}, {os.cpu_count()} cores"
    return {"device": device, "name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "summary": f"{name}, torch {torch.__version__}"}  # fmt: skip


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# --- processes -------------------------------------------------------------------------------


def _spawn(cmd: list[str]) -> tuple[str, float]:
    """Run `cmd`; its output and peak RSS in MB (os.wait4: this child's own, not the tree's max)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         f"{out[-4000:]}")  # fmt: skip
    kb = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return out, kb / 1024


def _entrypoint(row: dict, extra: list[str], samples: int, epochs: int, runs: Path):
    """A: the entrypoint as a user runs it; its own timing from the run's metrics.json."""
    runs = runs / f"{len(list(runs.glob('*'))) if runs.exists() else 0}"
    cmd = [sys.executable, "-m", "train", *_overrides(row["model"], row["batch"], samples),
           *extra, f"trainer.max_epochs={epochs}", "trainer.progress=lines",
           f"paths.runs_dir={runs}"]  # fmt: skip
    _, rss = _spawn(cmd)
    (metrics,) = runs.rglob("metrics.json")
    t = json.loads(metrics.read_text())["timing"]
    seconds = sum(e["seconds"] for e in t["epochs"])
    val = sum(e["val_seconds"] for e in t["epochs"])
    res = {"samples_per_s": sum(e["samples"] for e in t["epochs"]) / (seconds - val),
           "val_fraction": val / seconds, "first_step_s": t["first_step_s"]}  # fmt: skip
    if "cuda_max_allocated_mb" in t:
        res["cuda_max_allocated_mb"] = t["cuda_max_allocated_mb"]
    return res, rss


def _worker(kind: str, model: str, batch: int, samples: int, epochs: int, root: Path):
    cmd = [sys.executable, "-m", "bench.speed", "--worker", kind, "--model", model,
           "--batch", str(batch), "--samples", str(samples), "--epochs", str(epochs),
           "--root", str(root)]  # fmt: skip
    out, rss = _spawn(cmd)
    return json.loads(out.strip().splitlines()[-1]), rss


def _overrides(model: str, batch: int, samples: int) -> list[str]:
    n = samples + samples // VAL_SHARE
    return ["data=synthetic", f"data.num_samples={n}", f"data.val_fraction={(n - samples) / n}",
            "data.test_fraction=0", f"data.batch_size={batch}", *MODELS[model][0],
            "optim=sgd"]  # fmt: skip


# --- the workers (B, C, D), each in a fresh process ------------------------------------------


def _work(a) -> dict:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.worker == "D":
        return _peak(device)
    cfg, data, model, opt = _build(a.model, a.batch, a.samples, device)
    if a.worker == "B":
        x = ((data.train.x.float() / data.scale - data.mean.view(-1, 1, 1))
             / data.std.view(-1, 1, 1)).to(device)  # fmt: skip
        y = data.train.y.to(device)
        flops = _flops(model, x[: a.batch], y[: a.batch]) / a.batch

        def batches():
            for _ in range(a.epochs):
                perm = torch.randperm(len(y), device=device)
                for i in range(0, len(y), a.batch):
                    idx = perm[i : i + a.batch]
                    yield x[idx], y[idx]

        return {**_timed(model, opt, batches(), device), "flops_per_sample": flops}
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    train_set = datasets.MNIST(a.root, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(train_set, batch_size=a.batch, shuffle=True)

    def loaded():
        for _ in range(a.epochs):
            for x, y in loader:
                yield x.to(device), y.to(device)

    return _timed(model, opt, loaded(), device)


def _build(model_name: str, batch: int, samples: int, device):
    """The data, model and optimizer A gets, from the same config; the optimizer in torch's
    default implementation (`torch.optim.SGD(params, lr)`, as a hand-written loop has it), where
    A takes torch's fused one."""
    import torch
    from hydra.utils import instantiate

    from train.build import optimizer

    cfg = _compose([*_overrides(model_name, batch, samples), "optim.fused=false"])
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data)
    model = instantiate(cfg.model, in_shape=data.in_shape, num_outputs=data.num_outputs)
    model.to(device)
    return cfg, data, model, optimizer(cfg.optim, model)


def _timed(model, opt, batches, device) -> dict:
    """Train on `batches`; samples/s from the end of the first step on (as A is timed)."""
    import torch
    import torch.nn.functional as F

    model.train()
    n, start = 0, None
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if start is None:
            _sync(device)
            start = time.perf_counter()
        else:
            n += len(y)
    _sync(device)
    res = {"samples_per_s": n / (time.perf_counter() - start)}
    if device.type == "cuda":
        res["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def _flops(model, x, y) -> float:
    """FLOPs of one training step (forward and backward) on this batch, as torch counts them."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _peak(device) -> dict:
    """Dense matmul GFLOP/s: float32 (TF32 on CUDA) and bf16 where the hardware has it."""
    import torch

    n = 2048 if device.type == "cpu" else 8192
    kinds = {"float32": torch.float32}
    if device.type == "cuda" or _cpu_has_bf16():
        kinds["bf16"] = torch.bfloat16
    torch.backends.cuda.matmul.allow_tf32 = True  # what "float32" means on a GPU's tensor cores
    best = {}
    for name, dtype in kinds.items():
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        runs = []
        for _ in range(6):
            _sync(device)
            t = time.perf_counter()
            for _ in range(4):
                a @ b
            _sync(device)
            runs.append(4 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
        best[name] = max(runs[1:])  # the first warms up
    return {"gflops": best["float32"], "dtype": "float32", "n": n, "all": best}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- MNIST files for C -----------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (the MNIST format): magic, big-endian dimensions, then uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(head + array.astype(np.uint8).tobytes())


def _write_mnist_files(root: Path, samples: int) -> None:
    """The benchmark's training images as MNIST files (its validation images as the test set)."""
    from hydra.utils import instantiate

    data = instantiate(_compose(_overrides("mlp", 64, samples)).data)
    for prefix, split in (("train", data.train), ("t10k", data.val)):
        x, y = split.x.squeeze(1).numpy(), split.y.numpy()
        write_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", x)
        write_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", y)


def _compose(overrides: list[str]):
    """The config `python -m train <overrides>` runs with (Hydra's compose API)."""
    from train import config

    return config.compose(overrides)


if __name__ == "__main__":
    main()
