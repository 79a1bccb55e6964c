"""`python -m bench.labs` (`make bench-labs`): the course's four tabular labs through our
entrypoint against the same steps written by hand, side by side, alternating order per repeat.

A: `python -m train experiment=<lab>`; its loop time is the process's wall time minus its
start-up (process start to the end of the first optimizer step, `metrics.json` timing), so
it holds every epoch's bookkeeping and the end of the run (scoring, metrics.json, TensorBoard).
B: the same model, optimizer and full-batch data in a plain loop, timed from the end of its
first step to the end of its last. Target (issue 21): A <= 3 x B + 0.5 s for every lab.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LABS = ("linear_regression", "multivariable_regression", "logistic_regression",
        "softmax_classification")  # fmt: skip


def entrypoint(lab: str, runs: Path) -> tuple[float, float]:
    """The loop's seconds (the end of the first step to the end of the last epoch, as the run
    records them) and the process's wall time minus its start-up."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "train", f"experiment={lab}",
                          f"paths.runs_dir={runs}", "trainer.progress=lines"],
                         capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{lab}: exit {out.returncode}\n{out.stderr[-2000:]}")
    newest = max(runs.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    timing = json.loads(newest.read_text())["timing"]
    return timing["loop_s"], wall - timing["first_step_s"]


def by_hand(lab: str) -> float:
    """The lab's steps in a plain loop, in a fresh process: seconds after the first step."""
    out = subprocess.run([sys.executable, "-m", "bench.labs", "--by-hand", lab],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def _by_hand(lab: str) -> float:
    """The loop a learner writes: model, optimizer and tensors as the preset builds them."""
    import torch
    from hydra.utils import instantiate

    from train import config

    cfg = config.compose([f"experiment={lab}"])
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data)
    model = instantiate(cfg.model, in_shape=data.in_shape, num_outputs=data.num_outputs)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr)
    x, y = data.train.x.float(), data.train.y
    if data.task == "regression":
        loss_fn = torch.nn.functional.mse_loss
    elif data.num_classes == 2:
        y = y.float()

        def loss_fn(out, t):
            return torch.nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), t)
    else:
        loss_fn = torch.nn.functional.cross_entropy
    start = None
    for _ in range(cfg.trainer.max_epochs):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        start = start or time.perf_counter()
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.labs", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--by-hand", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.by_hand:
        print(_by_hand(a.by_hand))
        return
    runs = {lab: {"A": [], "wall": [], "B": []} for lab in LABS}
    with tempfile.TemporaryDirectory(prefix="bench-labs-") as tmp:
        for r in range(a.repeats):
            for lab in LABS:
                for v in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    if v == "A":
                        loop, wall = entrypoint(lab, Path(tmp))
                        runs[lab]["A"].append(loop)
                        runs[lab]["wall"].append(wall)
                    else:
                        runs[lab]["B"].append(by_hand(lab))
                    print(f"  {lab} {v}: {runs[lab][v][-1]:.3f} s", file=sys.stderr, flush=True)
    print(table(runs, a.repeats))


def table(runs: dict, repeats: int) -> str:
    lines = [f"medians of {repeats}, alternating order", "",
             "| lab | epochs | A: ours, loop s | B: by hand, s | A/B | target 3B+0.5 s | met "
             "| A: process wall minus start-up, s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    epochs = {"linear_regression": 300}
    for lab in LABS:
        am, bm, wm = (statistics.median(runs[lab][v]) for v in ("A", "B", "wall"))
        target = 3 * bm + 0.5
        met = "yes" if am <= target else "NO"
        lines.append(f"| {lab} | {epochs.get(lab, 1000):,} | {am:.2f} | {bm:.3f} | {am / bm:.1f} "
                     f"| {target:.2f} | {met} | {wm:.2f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
