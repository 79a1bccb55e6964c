"""`python -m train.reproduce <run dir> [code=<your file> ...]`: train a finished run again from
its records and say whether the final weights and metrics match, bit for bit (a run of your own
model or data file replays only with that file named again in code=, unchanged). Exit 0 on a
match; 1 with a short diff, which says first when the data the run trained on has changed since.

Every invocation is replayed in order: run.json's overrides (with the seed the run used), then
each resume's (run-1.json, ...) as a resume of the new run, in a temporary runs dir. The
records are untrusted input: only plain key=value overrides are replayed (`train.resume`), and
the re-run is this installation's `train` package, never code found in the run's directory.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from train.errors import UserError, run_entrypoint
from train.run.resume import checked_overrides
from train.run.rundir import RunDir

SKIP = ("resume=", "seed=", "paths.runs_dir=", "trainer.progress=", "model.code=", "data.code=")


def replay(run: Path, scratch: Path, code=()) -> Path:
    """Train again from `run`'s records into `scratch`; the new run dir. A run of a user's
    code replays only with the file named again in `code`, unchanged (train.usercode)."""
    recs = RunDir(run).records()
    first = recs[0]
    data_dir = Path(first.cwd or ".") / first.config["paths"]["data_dir"]
    fixed = [f"paths.runs_dir={scratch}", f"paths.data_dir={data_dir}", "trainer.progress=lines",
             *_user_code(first, code)]  # fmt: skip
    new = None
    for n, rec in enumerate(recs):
        args = [o for o in checked_overrides(rec.overrides, f"run record {n}")
                if not o.startswith(SKIP)]  # fmt: skip
        start = [f"seed={rec.seed}"] if new is None else [f"resume={new}"]
        _train([*args, *start, *fixed], rec.cwd)
        new = new or _the_run(scratch)
    return new


def _user_code(first, code) -> list[str]:
    """model.code=... / data.code=... for the files `code` names that are the run's own."""
    from train.models import usercode

    consent, out = usercode.Consent(code), []
    for group in ("model", "data"):
        if (first.config.get(group) or {}).get("_target_") in (usercode.MODEL, usercode.DATA):
            file = consent.file_for(f"{group} code", (first.origin or {}).get(group))
            out.append(f"{group}.code={Path(file).resolve()}")
    return out


def _train(args: list[str], cwd: str | None) -> None:
    """`python -P -m train args...`: -P keeps the working directory off sys.path, so the run
    dir's recorded cwd (relative paths in the overrides) can hold no `train` package of its own
    that would be imported instead of this one."""
    where = cwd if cwd is not None and Path(cwd).is_dir() else None
    out = subprocess.run([sys.executable, "-P", "-m", "train", *args], cwd=where,
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise UserError(f"the re-run failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")


def _the_run(scratch: Path) -> Path:
    (new,) = {p.parent.parent for p in scratch.rglob("checkpoints/last.pt")}
    return new


# What made a result, as run.json records it: where the re-run's differs, reproduce says so
# before it compares numbers (a different torch or CPU may round differently).
PROVENANCE = {
    "python": ("versions", "python"), "torch": ("versions", "torch"),
    "torchvision": ("versions", "torchvision"), "CUDA": ("versions", "cuda"),
    "cuDNN": ("versions", "cudnn"), "uv.lock": ("lock", "sha256"), "image": ("image", "name"),
    "image commit": ("image", "git_commit"), "image built": ("image", "created"),
    "CPU": ("host", "cpu"), "GPUs": ("host", "gpus"),
    "deterministic algorithms": ("deterministic", "algorithms"),
    "cuDNN benchmark": ("deterministic", "cudnn_benchmark"),
    "MKL_CBWR": ("deterministic", "mkl_cbwr"),
}  # fmt: skip


def environment_changes(a: Path, b: Path) -> str | None:
    """One line naming what of PROVENANCE differs between run `a`'s first record and run `b`'s
    (the original and its re-run); None when nothing does."""
    ra, rb = (RunDir(r).records()[0].to_dict() for r in (a, b))
    changed = []
    for name, (part, key) in PROVENANCE.items():
        was, now = (ra.get(part) or {}).get(key), (rb.get(part) or {}).get(key)
        if was != now:
            short = [v[:12] if name == "uv.lock" and v else v for v in (was, now)]
            changed.append(f"{name} {short[0]} -> {short[1]}")
    if not changed:
        return None
    return f"the environment differs from the original run's: {'; '.join(changed)}"


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two runs: the data first, then the final weights (last.pt) and
    metrics.json; [] if nothing."""
    import torch

    diffs = []
    fa, fb = (RunDir(r).records()[-1].data_fingerprint for r in (a, b))
    if fa != fb:
        diffs.append(f"the data changed: the run trained on data with fingerprint {fa}, the "
                     f"re-run found {fb}")  # fmt: skip
    wa, wb = (RunDir(r).read_checkpoint("last").model for r in (a, b))
    for key in sorted(set(wa) | set(wb)):
        if key not in wa or key not in wb:
            diffs.append(f"weight {key}: only in one run")
        elif wa[key].shape != wb[key].shape:
            diffs.append(f"weight {key}: shape {tuple(wa[key].shape)} vs {tuple(wb[key].shape)}")
        elif not torch.equal(wa[key], wb[key]):
            gap = (wa[key].double() - wb[key].double()).abs().max().item()
            diffs.append(f"weight {key}: differs (max abs difference {gap:.3g})")
    ma, mb = (_flat(_results(r)) for r in (a, b))
    for key in sorted(set(ma) | set(mb)):
        if ma.get(key) != mb.get(key):
            diffs.append(f"metric {key}: {ma.get(key)} vs {mb.get(key)}")
    return diffs


def _results(run: Path) -> dict:
    """The run's metrics.json without "timing": how long things took is not part of the
    result."""
    return {k: v for k, v in RunDir(run).metrics().to_dict().items() if k != "timing"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main(argv: list[str]) -> int:
    code = [a.split("=", 1)[1] for a in argv if a.startswith("code=")]
    argv = [a for a in argv if not a.startswith("code=")]
    if len(argv) != 1:
        raise UserError("usage: python -m train.reproduce <run dir> [code=<your file> ...]")
    run = Path(argv[0])
    if not RunDir(run).finished():
        raise UserError(f"{run} is not a finished run (no metrics.json).")
    with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
        print(f"re-running {run} ({len(RunDir(run).records())} invocation(s)) ...", flush=True)
        rerun = replay(run, Path(scratch), code)
        if changed := environment_changes(run, rerun):
            print(changed, flush=True)
        diffs = differences(run, rerun)
    if not diffs:
        print("match: final weights and metrics are identical")
        return 0
    print(f"MISMATCH: {len(diffs)} difference(s)")
    for line in diffs[:20]:
        print(f"  {line}")
    return 1


def cli() -> None:
    """The console script (pyproject's [project.scripts]) and `python -m train.reproduce`."""
    run_entrypoint(lambda: main(sys.argv[1:]), usage=__doc__)


if __name__ == "__main__":
    cli()
