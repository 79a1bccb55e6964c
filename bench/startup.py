"""`python -m bench.startup` (`make bench-startup`): start-up and exit, ours against a script
written by hand, side by side, interleaved, medians of --repeats.

Per lab (the course's four tabular labs and the digits quick start): `python -m train
<lab>` against a fresh process that imports torch, builds the same model and data, runs as
many epochs as ours did and saves a state_dict. Phases, ours: imports and compose (process start
to the "run dir" line), to the first optimizer step (metrics.json timing), the loop, the end of
the run (scoring, metrics.json, TensorBoard), exit (the last line to the process's end). The
hand script: `import torch`, to its first step, its loop, its exit. Also `--help` and
`--cfg job`, which import no torch, and where the imports' time goes, by package
(`python -X importtime`). Targets (issue 31): whole process <= 1.0x the hand script; first step
<= import torch + 1.0 s; exit <= 0.3 s; --help and --cfg job <= 1.5 s.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LABS = {"linear_regression": ["experiment=linear_regression"],
        "multivariable_regression": ["experiment=multivariable_regression"],
        "logistic_regression": ["experiment=logistic_regression"],
        "softmax_classification": ["experiment=softmax_classification"],
        "digits": ["data=digits"]}  # fmt: skip


def timed_lines(cmd: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """Run `cmd`; its wall time and its stdout lines, each with the second it arrived."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, err = [], []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr))
    reader.start()
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
    proc.wait()
    reader.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}\n{''.join(err)[-2000:]}")
    return wall, lines


def ours(lab: str, runs: Path) -> dict:
    wall, lines = timed_lines([sys.executable, "-m", "train", *LABS[lab], f"paths.runs_dir={runs}",
                               "trainer.progress=lines"])  # fmt: skip
    newest = max(runs.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    metrics = json.loads(newest.read_text())
    t = metrics["timing"]
    compose = next(s for s, line in lines if line.startswith("run dir: "))
    return {"wall": wall, "imports_compose": compose, "first_step": t["first_step_s"],
            "loop": t["loop_s"], "end": lines[-1][0] - t["first_step_s"] - t["loop_s"],
            "exit": wall - lines[-1][0], "epochs": metrics["epochs"]}  # fmt: skip


def hand(lab: str, epochs: int) -> dict:
    wall, lines = timed_lines([sys.executable, "-m", "bench.startup", "--hand", lab,
                               "--epochs", str(epochs)])  # fmt: skip
    marks = dict(line.split("=", 1) for _, line in lines if "=" in line)
    done = float(marks["saved"])
    return {"wall": wall, "import_torch": float(marks["imported"]),
            "first_step": float(marks["first_step"]), "loop": done - float(marks["first_step"]),
            "exit": wall - lines[-1][0]}  # fmt: skip


TABLES = {"linear_regression": ([[1], [2], [3]], [[2], [4], [6]]),
          "multivariable_regression": ([[73, 80, 75], [93, 88, 93], [89, 91, 90], [96, 98, 100],
                                        [73, 66, 70]], [[152], [185], [180], [196], [142]]),
          "logistic_regression": ([[1, 2], [2, 3], [3, 1], [4, 3], [5, 3], [6, 2]],
                                  [[0], [0], [0], [1], [1], [1]]),
          "softmax_classification": ([[1, 2, 1, 1], [2, 1, 3, 2], [3, 1, 3, 4], [4, 1, 5, 5],
                                      [1, 7, 5, 5], [1, 2, 5, 6], [1, 6, 6, 6], [1, 7, 7, 7]],
                                     [2, 2, 2, 1, 1, 1, 0, 0])}  # fmt: skip


def _hand(lab: str, epochs: int) -> None:
    """What a learner writes: import torch, the lab's data and model, the steps, a save. Marks
    (seconds since the process started) on stdout."""
    import os

    started = time.time() - _since_start()
    import torch

    print(f"imported={time.time() - started:.4f}", flush=True)
    torch.manual_seed(42)
    if lab == "digits":
        model, opt, steps = _digits(torch, epochs)
    else:
        x, y = (torch.tensor(v, dtype=torch.float32) for v in TABLES[lab])
        out = 3 if lab == "softmax_classification" else y.shape[1]
        y = y.long() if lab == "softmax_classification" else y
        model = torch.nn.Linear(x.shape[1], out)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loss = {"linear_regression": torch.nn.functional.mse_loss,
                "multivariable_regression": torch.nn.functional.mse_loss,
                "logistic_regression": torch.nn.functional.binary_cross_entropy_with_logits,
                "softmax_classification": torch.nn.functional.cross_entropy}[lab]  # fmt: skip
        steps = ((x, y, loss) for _ in range(epochs))
    for i, (x, y, loss) in enumerate(steps):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
        if i == 0:
            print(f"first_step={time.time() - started:.4f}", flush=True)
    torch.save(model.state_dict(), os.devnull)
    print(f"saved={time.time() - started:.4f}", flush=True)


def _digits(torch, epochs: int):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).reshape(-1, 64) / 16
    y = torch.tensor(bunch.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order[:1258]], y[order[:1258]]
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.cross_entropy

    def steps():
        for _ in range(epochs):
            for i in range(0, len(y), 32):
                yield x[i : i + 32], y[i : i + 32], loss

    return model, opt, steps()


def _since_start() -> float:
    """Seconds since this process started (Linux)."""
    import os

    stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(stat[19]) / os.sysconf("SC_CLK_TCK")


def imports_by_package(args: list[str]) -> dict[str, float]:
    """Seconds each top-level package's import took (python -X importtime), largest first."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "train", *args],
                         capture_output=True, text=True)  # fmt: skip
    found: dict[str, float] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # (depth 0: a top-level import)
            top = name.strip().split(".")[0]
            try:
                found[top] = found.get(top, 0.0) + int(parts[1]) / 1e6
            except ValueError:
                continue
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--labs", nargs="*", default=list(LABS))
    p.add_argument("--out", type=Path, default=Path("bench-startup.json"))
    p.add_argument("--hand", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.hand:
        _hand(a.hand, a.epochs)
        return
    result = measure(a.labs, a.repeats)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def measure(labs: list[str], repeats: int) -> dict:
    rows = {lab: {"ours": [], "hand": []} for lab in labs}
    cli = {"--help": [], "--cfg job": []}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        for r in range(repeats):
            for lab in labs:
                pair = ("ours", "hand") if r % 2 == 0 else ("hand", "ours")
                epochs = rows[lab]["ours"][-1]["epochs"] if rows[lab]["ours"] else None
                for v in pair:
                    if v == "ours":
                        rows[lab]["ours"].append(ours(lab, Path(tmp)))
                        epochs = rows[lab]["ours"][-1]["epochs"]
                    else:
                        rows[lab]["hand"].append(hand(lab, epochs or 300))
            for flag in cli:
                cli[flag].append(timed_lines([sys.executable, "-m", "train", *flag.split()])[0])
    medians = {lab: {v: {k: statistics.median(run[k] for run in runs[v]) for k in runs[v][0]}
                     for v in runs} for lab, runs in rows.items()}  # fmt: skip
    return {"repeats": repeats, "rows": medians, "cli": {k: statistics.median(v)
            for k, v in cli.items()}, "imports": imports_by_package(LABS[labs[0]])}  # fmt: skip


def table(result: dict) -> str:
    lines = [f"medians of {result['repeats']}, ours and the hand script interleaved", "",
             "| lab | ours, s | by hand, s | ours/hand | first step, s (target: import torch "
             "+ 1.0) | imports+compose | loop | end of run | exit, s (target 0.3) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for lab, row in result["rows"].items():
        o, h = row["ours"], row["hand"]
        lines.append(f"| {lab} | {o['wall']:.2f} | {h['wall']:.2f} | {o['wall'] / h['wall']:.2f} "
                     f"| {o['first_step']:.2f} ({h['import_torch'] + 1:.2f}) "
                     f"| {o['imports_compose']:.2f} | {o['loop']:.2f} | {o['end']:.2f} "
                     f"| {o['exit']:.2f} |")  # fmt: skip
    lines += ["", "| command | s (target 1.5) |", "|---|---|"]
    lines += [f"| python -m train {k} | {v:.2f} |" for k, v in result["cli"].items()]
    top = list(result["imports"].items())[:8]
    lines += ["", "imports by package (python -X importtime, first lab): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in top)]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
