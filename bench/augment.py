"""`python -m bench.augment` (`make bench-augment`): what data.augment costs, side by side.

The CNN preset's network (model=cnn, 32-64 channels) at batch 256 on CIFAR-10-sized images
(3x32x32, in memory), trained through our loop with data.augment=none, flip_crop and
trivialaugment, the variants interleaved in every repeat; each one's training samples per
second (the run's own epoch timing), the median over the repeats, and the ratio to none.
Target (issue 27): flip_crop >= 0.9x none on the CPU.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

VARIANTS = ("none", "flip_crop", "trivialaugment")
TARGET = 0.9  # flip_crop's samples/s over none's


def once(variant: str, samples: int, epochs: int, runs: Path) -> float:
    """Samples per second of training (validation excluded), over the epochs after the first."""
    from train import api

    result = api.train(
        "data=synthetic", "data.shape=[3,32,32]", f"data.num_samples={samples}",
        "data.val_fraction=0.05", "data.batch_size=256", "model=cnn", f"data.augment={variant}",
        f"trainer.max_epochs={epochs}", "trainer.patience=null", "trainer.checkpoint_every_s=600",
        "trainer.num_sample_images=0", "trainer.progress=lines",
        f"paths.runs_dir={runs}")  # fmt: skip
    timing = json.loads((result.run_dir / "metrics.json").read_text())["timing"]
    timed = timing["epochs"][1:] or timing["epochs"]
    return sum(e["samples"] for e in timed) / sum(e["seconds"] - e["val_seconds"] for e in timed)


def measure(samples: int, epochs: int, repeats: int) -> dict:
    speeds = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]  # (neither always first)
            for v in order:
                speeds[v].append(once(v, samples, epochs, Path(tmp) / f"{v}-{r}"))
    median = {v: statistics.median(s) for v, s in speeds.items()}
    ratios = {v: median[v] / median["none"] for v in VARIANTS}
    return {"samples": samples, "epochs": epochs, "repeats": repeats, "samples_per_s": median,
            "runs": speeds, "ratios": ratios}  # fmt: skip


def table(result: dict) -> str:
    lines = ["| data.augment | samples/s (median) | x none |", "|---|---|---|"]
    for v in VARIANTS:
        lines.append(f"| {v} | {result['samples_per_s'][v]:,.0f} | {result['ratios'][v]:.2f} |")
    ok = result["ratios"]["flip_crop"] >= TARGET
    lines.append(f"\nflip_crop >= {TARGET}x none: {'met' if ok else 'NOT met'} "
                 f"({result['ratios']['flip_crop']:.2f}x)")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=6400)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="one small repeat (the tests')")
    p.add_argument("--out", type=Path, default=Path("bench-augment.json"))
    a = p.parse_args()
    if a.quick:
        a.samples, a.epochs, a.repeats = 600, 2, 1
    result = measure(a.samples, a.epochs, a.repeats)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
