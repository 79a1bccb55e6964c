"""Finding what a run continues: `resume=<run dir or checkpoint>` names it; `resume=auto` finds
the newest run of the same config. A run's records are untrusted: the overrides they hold are
checked before anything composes them.

What a continuation may change: how long to train, how often to log, checkpoint or print, where
it reports (logger), the device and the paths (`LOOSE`); anything else is a new run
(train.config.rebuild refuses it).
"""

import re
from pathlib import Path

from train.errors import UserError
from train.run.rundir import RunDir

# Top-level keys, and trainer keys, a continuation may change.
LOOSE = {"resume", "paths", "name", "expect", "logger"}
LOOSE_TRAINER = {"max_epochs", "max_steps", "progress", "device", "log_every_n_steps",
                 "patience", "num_sample_images", "score_train", "checkpoint_every_s",
                 "print_every_s"}  # fmt: skip
# An override a record may hold: a plain key (no Hydra keys, no +/~, no _target_) and a value
# with no interpolation. Anything else in a run dir is refused, not composed.
SAFE_OVERRIDE = re.compile(r"(?!hydra[./])[A-Za-z][\w\-]*(\.[\w\-]+)*=(?!.*\$\{).*", re.S)
BUILD_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def recorded_overrides(run: Path) -> list[str]:
    """The overrides of every invocation of `run`, oldest first (run.json, run-1.json, ...),
    checked: a record that holds anything but plain key=value overrides is refused."""
    if not any(run.glob("run*.json")):
        raise UserError(
            f"{run} has no run.json, so its config cannot be rebuilt; give a run directory made "
            "by python -m train (or resume=auto with the run's own overrides)."
        )
    return [o for n, rec in enumerate(RunDir(run).records())
            for o in checked_overrides(rec.overrides, f"{run} run record {n}")]  # fmt: skip


def checked_overrides(overrides, where) -> list[str]:
    """A record's overrides, each a plain key=value; anything else refused, naming it."""
    if not isinstance(overrides, list):
        raise UserError(f"{where}: its overrides are not a list; refusing to rebuild from it.")
    for o in overrides:
        if not isinstance(o, str) or not SAFE_OVERRIDE.fullmatch(o) or \
                any(k in o.split("=", 1)[0] for k in BUILD_KEYS):  # fmt: skip
            raise UserError(
                f"{where} holds the override {o!r}, which is not a plain key=value (Hydra keys, "
                "+/~, _target_ and ${...} interpolations are refused in a record): the run dir "
                "may have been tampered with; refusing to rebuild from it."
            )
    return list(overrides)


def resumed_run_dir(resume: str) -> Path:
    """The run directory that `resume=` (a run dir or a checkpoint inside one) refers to."""
    path = Path(resume)
    if path.is_file():
        return path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if path.is_dir():
        return path
    raise UserError(
        f"resume={resume} points at nothing: no such run directory or checkpoint file. Give a "
        "run directory (e.g. runs/digits_mlp/2026-01-31_12-00-00) or a checkpoint inside one "
        "(.../checkpoints/last.pt)."
    )


def resume_checkpoint(resume: str) -> Path:
    """The checkpoint file that `resume=` refers to (a run dir means its `checkpoints/last.pt`)."""
    resumed_run_dir(resume)  # names a resume= that points at nothing
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(
            f"resume={resume} has no checkpoint to continue from: {path} does not exist. A run "
            "writes checkpoints/last.pt at the end of every epoch; give a run that finished one."
        )
    return path


def source(runs_dir: str, name: str, resume: str | None, root, notes: list[str]) -> Path | None:
    """The checkpoint a run continues from, or None for a new run (`root`: the composed
    config, for resume=auto; what auto looked at is appended to `notes`).

    `resume=auto` picks the newest run under `<runs_dir>/<name>` whose checkpoint holds the same
    config (ignoring how long to train and where), from its newest checkpoint that loads:
    last.pt, or best.pt when last.pt is damaged. A run that already trained `max_epochs` is
    not continued: a new one starts.
    """
    if resume is None:
        return None
    if resume != "auto":
        return resume_checkpoint(resume)
    any_seed = root.seed is None  # seed=null: a run's drawn seed still matches
    return _newest_of(Path(runs_dir) / name, fingerprint_of(root), root.trainer.max_epochs,
                      any_seed, notes)  # fmt: skip


def fingerprint_of(root) -> dict:
    """What a run of the composed config `root` is, for resume=auto (not how long or where)."""
    from omegaconf import OmegaConf

    keys = [k for k in root if k not in LOOSE and k != "hydra"]
    plain = {k: OmegaConf.to_container(root[k], resolve=True, enum_to_str=True)
             if OmegaConf.is_config(root[k]) else root[k] for k in keys}  # fmt: skip
    return fingerprint(plain)


def fingerprint(config: dict) -> dict:
    """A resolved config without what a continuation may change (`LOOSE`, `LOOSE_TRAINER`)."""
    out = {k: v for k, v in config.items() if k not in LOOSE}
    out["trainer"] = {k: v for k, v in out["trainer"].items() if k not in LOOSE_TRAINER}
    return out


def _newest_of(parent: Path, wanted: dict, max_epochs: int, any_seed: bool,
               notes: list[str]) -> Path | None:  # fmt: skip
    runs = sorted((RunDir(p) for p in parent.glob("*") if RunDir(p).has_checkpoints()),
                  key=lambda r: r.path, reverse=True)  # fmt: skip
    skipped = False
    for run in runs:
        for name in ("last", "best"):
            if not run.checkpoint(name).is_file():
                continue
            try:
                blob = run.read_checkpoint(name)
            except UserError as e:
                notes.append(f"resume=auto: skipped a checkpoint it cannot use: {e.message}")
                skipped = True
                continue
            have = fingerprint(blob.config)
            if any_seed:
                have["seed"] = None
            if have != wanted:
                break  # another config: look at the next run
            if run.finished() and blob.state["epoch"] >= max_epochs:
                notes.append(f"resume=auto: the newest run of this config, {run.path}, has "
                             f"trained {max_epochs} epoch(s) already; starting anew")  # fmt: skip
                return None
            notes.append(f"resume=auto: continuing {run.path} from {run.checkpoint(name)}")
            return run.checkpoint(name)
    usable = " that this version can use" if skipped else ""
    notes.append(f"resume=auto: no run of this config under {parent}{usable} to continue; "
                 "starting anew")  # fmt: skip
    return None
