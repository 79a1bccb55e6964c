"""`python -m bench.tune` (`make bench-tune`): how fast a search reaches 95% validation accuracy
on the digits, side by side in one run, alternating order per repeat:

P  python -m train.tune with the median pruner (the default), N trials
N  the same search without pruning (tune.pruner=none), N trials
G  a grid sweep of the same size, python -m train -m optim.lr=...,... data.batch_size=...

Per variant: the wall time of the whole search, the wall time until the first trial (job)
that reached 95% had finished, the best value and the trials pruned.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = ["data=digits", "trainer.monitor=accuracy", "trainer.monitor_mode=max",
        "trainer.progress=lines"]  # fmt: skip
LRS = ("0.0001", "0.001", "0.01", "0.1")
BATCHES = ("32", "128", "256")
GOAL = 0.95


def search(variant: str, runs: Path, n: int) -> dict:
    """One search in a fresh process; its figures."""
    start = time.time()
    if variant == "G":
        cmd = [sys.executable, "-m", "train", "-m", *BASE, f"paths.runs_dir={runs}",
               f"optim.lr={','.join(LRS)}", f"data.batch_size={','.join(BATCHES)}"]  # fmt: skip
    else:
        pruner = "median" if variant == "P" else "none"
        cmd = [sys.executable, "-m", "train.tune", *BASE, f"paths.runs_dir={runs}",
               f"tune.study={variant}", f"tune.n_trials={n}", f"tune.pruner={pruner}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    if out.returncode != 0:
        raise SystemExit(f"{variant}: exit {out.returncode}\n{out.stderr[-2000:]}")
    finished = _finished(variant, runs)  # (completion time, value), in completion order
    reached = [t for t, v in finished if v >= GOAL]
    return {"wall_s": wall, "to_goal_s": (min(reached) - start) if reached else None,
            "best": max(v for _, v in finished), "trials": len(finished),
            "pruned": _pruned(variant, runs)}  # fmt: skip


def _finished(variant: str, runs: Path) -> list[tuple[float, float]]:
    if variant == "G":
        return sorted((p.stat().st_mtime, json.loads(p.read_text())["val"]["accuracy"])
                      for p in runs.rglob("metrics.json"))  # fmt: skip
    import optuna

    study = optuna.load_study(
        study_name=variant, storage=f"sqlite:///{runs / 'tune' / variant / 'study.db'}"
    )
    return sorted((t.datetime_complete.timestamp(), t.value) for t in study.trials
                  if t.state.name == "COMPLETE")  # fmt: skip


def _pruned(variant: str, runs: Path) -> int:
    if variant == "G":
        return 0
    summary = json.loads((runs / "tune" / variant / "summary.json").read_text())
    return summary["trials"].get("PRUNED", 0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.tune", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    n = len(LRS) * len(BATCHES)  # the grid's size: every variant runs as many trials
    results = {v: [] for v in "PNG"}
    for r in range(a.repeats):
        for v in "PNG" if r % 2 == 0 else "GNP":
            with tempfile.TemporaryDirectory(prefix=f"bench-tune-{v}-") as tmp:
                results[v].append(search(v, Path(tmp), n))
            print(f"  {v}: {results[v][-1]}", file=sys.stderr, flush=True)
    print(table(results, a.repeats, n))


def table(results: dict, repeats: int, n: int) -> str:
    def med(v, key):
        xs = [r[key] for r in results[v] if r[key] is not None]
        return statistics.median(xs) if xs else None

    def fmt(x):
        return "not reached" if x is None else f"{x:.1f}"

    names = {"P": "tune, median pruner", "N": "tune, no pruning", "G": "grid sweep (-m)"}
    lines = [f"{n} trials each on data=digits, medians of {repeats}, alternating order", "",
             f"| search | wall s | s to {GOAL:.0%} | best val accuracy | pruned | wall / G |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for v in "PNG":
        ratio = med(v, "wall_s") / med("G", "wall_s")
        wall, goal = fmt(med(v, "wall_s")), fmt(med(v, "to_goal_s"))
        lines.append(f"| {v}: {names[v]} | {wall} | {goal} | {med(v, 'best'):.4f} "
                     f"| {med(v, 'pruned'):.0f} | {ratio:.2f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
