"""`python -m train.reproduce <run dir>`: re-run a finished run from its record and say whether
the final weights and metrics match, bit for bit. Exit 0 on a match; 1 with a short diff.

The re-run uses the newest record's overrides (a resumed run is re-run uninterrupted, which
exact resume makes equivalent) with the seed the run actually used, in a temporary runs dir.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from train.errors import UserError, run_entrypoint

SKIP = ("resume=", "seed=", "paths.runs_dir=", "trainer.progress=", "hydra.")


def newest_record(run: Path) -> dict:
    records = sorted(run.glob("run*.json"), key=lambda p: (len(p.name), p.name))
    if not records:
        raise UserError(f"{run} has no run.json: give a run directory made by python -m train.")
    return json.loads(records[-1].read_text())


def replay(run: Path, scratch: Path) -> Path:
    """Train again from `run`'s record into `scratch`; the new run dir."""
    rec = newest_record(run)
    data_dir = Path(rec["cwd"]) / rec["config"]["paths"]["data_dir"]
    args = [o for o in rec["overrides"] if not o.startswith(SKIP)]
    args += [f"seed={rec['seed']}", f"paths.runs_dir={scratch}", f"paths.data_dir={data_dir}",
             "trainer.progress=lines"]  # fmt: skip
    cwd = rec["cwd"] if Path(rec["cwd"]).is_dir() else None
    out = subprocess.run([sys.executable, "-m", "train", *args], cwd=cwd, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode != 0:
        raise UserError(f"the re-run failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
    (new,) = {p.parent for p in scratch.rglob("metrics.json")}
    return new


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two runs' final weights (last.pt) and metrics.json; [] if nothing."""
    import torch

    from train import checkpoint

    diffs = []
    wa = checkpoint.load(a / "checkpoints" / "last.pt")["model"]
    wb = checkpoint.load(b / "checkpoints" / "last.pt")["model"]
    for key in sorted(set(wa) | set(wb)):
        if key not in wa or key not in wb:
            diffs.append(f"weight {key}: only in one run")
        elif wa[key].shape != wb[key].shape:
            diffs.append(f"weight {key}: shape {tuple(wa[key].shape)} vs {tuple(wb[key].shape)}")
        elif not torch.equal(wa[key], wb[key]):
            gap = (wa[key].double() - wb[key].double()).abs().max().item()
            diffs.append(f"weight {key}: differs (max abs difference {gap:.3g})")
    ma = _flat(_results(a / "metrics.json"))
    mb = _flat(_results(b / "metrics.json"))
    for key in sorted(set(ma) | set(mb)):
        if ma.get(key) != mb.get(key):
            diffs.append(f"metric {key}: {ma.get(key)} vs {mb.get(key)}")
    return diffs


def _results(path: Path) -> dict:
    """metrics.json without "timing": how long things took is not part of the result."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "timing"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise UserError("usage: python -m train.reproduce <run dir>")
    run = Path(argv[0])
    if not (run / "metrics.json").is_file():
        raise UserError(f"{run} is not a finished run (no metrics.json).")
    with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
        print(f"re-running {run} ...", flush=True)
        diffs = differences(run, replay(run, Path(scratch)))
    if not diffs:
        print("match: final weights and metrics are identical")
        return 0
    print(f"MISMATCH: {len(diffs)} difference(s)")
    for line in diffs[:20]:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    run_entrypoint(lambda: main(sys.argv[1:]))
