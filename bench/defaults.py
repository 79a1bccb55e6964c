"""`python -m bench.defaults`: what the defaults reach against the same model tuned, on every
data set that needs no download (docs/defaults.md has the table).

Per data x model: `python -m train data=... model=...` with nothing else (the defaults), and
the same with `optim.lr` swept over LRS, the best by validation picked and its test score
reported ("tuned"). The course's tiny tables: the defaults against the course's own preset.
Scikit-learn's digits, wine and diabetes are real data; the image folder is digits saved as
ordinary PNGs.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

LRS = ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2"]


def write_inputs(root: Path) -> dict:
    """Real tables and images as users would save them; the overrides that point at them."""
    from PIL import Image
    from sklearn.datasets import load_diabetes, load_digits, load_wine

    load_wine(as_frame=True).frame.to_csv(root / "wine.csv", index=False)
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(root / "diabetes.csv", index=False)
    bunch = load_digits()
    for i, (img, t) in enumerate(zip(bunch.images, bunch.target, strict=True)):
        (root / "pngs" / str(t)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8)).save(root / "pngs" / str(t) /
                                                                       f"{i}.png")  # fmt: skip
    return {
        "digits": ["data=digits"],
        "digit PNGs": ["data=image_folder", f"data.path={root / 'pngs'}"],
        "wine": ["data=csv", f"data.path={root / 'wine.csv'}", "data.target=target"],
        "diabetes": ["data=csv", f"data.path={root / 'diabetes.csv'}", "data.target=target"],
    }


ROWS = [("digits", "softmax"), ("digits", "mlp"), ("digits", "cnn"), ("digit PNGs", "mlp"),
        ("digit PNGs", "cnn"), ("wine", "softmax"), ("wine", "mlp"), ("diabetes", "linear"),
        ("diabetes", "mlp")]  # fmt: skip
COURSE = [("linear_toy", "linear", "linear_regression", "train/mse"),
          ("quiz_scores", "linear", "multivariable_regression", "train/mse"),
          ("logistic_points", "logistic", "logistic_regression", "train/accuracy"),
          ("softmax_points", "softmax", "softmax_classification", "train/loss")]  # fmt: skip


def train(args: list[str], runs: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "train", *args, f"paths.runs_dir={runs}",
                          "trainer.progress=lines"], capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{args}: exit {out.returncode}\n{out.stderr[-2000:]}")
    newest = max(runs.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def score(metrics: dict, split: str) -> tuple[str, float]:
    m = metrics[split]
    return ("accuracy", m["accuracy"]) if "accuracy" in m else ("r2", m["r2"])


def main() -> None:
    lines = ["| data | model | metric | defaults | tuned (best lr by val) | epochs (defaults) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as tmp:
        tmp = Path(tmp)
        inputs = write_inputs(tmp)
        for data, model in ROWS:
            base = [*inputs[data], f"model={model}"]
            default = train(base, tmp / "runs")
            sweep = [train([*base, f"optim.lr={lr}"], tmp / "runs") for lr in LRS]
            best = max(sweep, key=lambda m: score(m, "val")[1])
            name, value = score(default, "test")
            lines.append(f"| {data} | {model} | test {name} | {value:.3f} | "
                         f"{score(best, 'test')[1]:.3f} (lr {best_lr(sweep, best)}) | "
                         f"{default['epochs']} |")  # fmt: skip
            print(lines[-1], file=sys.stderr, flush=True)
        for data, model, preset, key in COURSE:
            default = train([f"data={data}", f"model={model}"], tmp / "runs")
            course = train([f"experiment={preset}"], tmp / "runs")
            split, metric = key.split("/")
            lines.append(f"| {data} | {model} | {key} | {default[split][metric]:.4g} | "
                         f"{course[split][metric]:.4g} (preset {preset}) | "
                         f"{default['epochs']} |")  # fmt: skip
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


def best_lr(sweep: list[dict], best: dict) -> str:
    return LRS[sweep.index(best)]


if __name__ == "__main__":
    main()
