"""Checkpoints: a dict whose "model" entry is a plain `state_dict`, plus what resume needs;
read back as a typed `Checkpoint` (one reader, `Checkpoint.read`, that knows each format).

Saved atomically (a temporary file in the same directory, fsynced, then renamed over the old
one), so a crash mid-save leaves the previous checkpoint intact. Loaded only with
`weights_only=True`: a checkpoint can hold tensors and plain values, never code.
"""

import hashlib
import os
import pickle
import random
import re
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from train.errors import UserError, plain
from train.run.formats import Typed, targets_moved


@dataclass
class Checkpoint(Typed):
    """A checkpoint's contents, typed. `state` is the loop's State as a dict, `callbacks` the
    callbacks' resume state by name; `config` the run's resolved config (untrusted: rebuilt
    only through train.targets); `data` its DataMeta as a dict; `choices` the config groups'
    options."""

    # 1: the callbacks' state inside "state"; 2: train's callables named before the regrouping
    WHAT, FORMAT = "checkpoint", 3
    UPGRADES = {1: lambda blob: _from_format_1(blob),
                2: lambda blob: {**blob, "config": targets_moved(blob.get("config"))}}  # fmt: skip

    model: dict
    optimizer: dict
    scheduler: dict | None
    scaler: dict
    state: dict
    rng: dict
    config: dict
    data: dict
    callbacks: dict
    choices: dict | None = None  # (not in the first checkpoints written)
    torch: str | None = None
    # Where the model and data came from, when not from this package: a pretrained file, a
    # user's code ({"model": {"file", "name", "sha256"}, "data": ...}); None for ours.
    origin: dict | None = None
    format: int = FORMAT

    @classmethod
    def read(cls, path: Path) -> "Checkpoint":
        """The checkpoint at `path`, verified (see `load`); one of another format refused."""
        blob = cls.current(load(path), f"checkpoint {path}")
        names = {f.name for f in fields(cls)}
        if missing := sorted(names - {"format", "choices", "torch", "origin"} - set(blob)):
            raise UserError(f"checkpoint {path} is incomplete: it has no {', '.join(missing)}.")
        kinds = {"state": dict, "config": dict, "data": dict, "callbacks": dict}
        if wrong := [k for k, kind in kinds.items() if not isinstance(blob[k], kind)] + [
            "origin" for o in [blob.get("origin")] if o is not None and not _origin(o)
        ]:
            raise UserError(f"checkpoint {path} is malformed: {', '.join(wrong)} not a mapping.")
        if wrong := [k for k, v in blob["callbacks"].items() if not _plain(v)]:
            raise UserError(f"checkpoint {path} is malformed: its callbacks entries "
                            f"{', '.join(map(repr, wrong))} are not names to numbers.")  # fmt: skip
        return cls(**{k: blob[k] for k in names if k in blob})


def _origin(entry) -> bool:
    """An origin as train writes it: per group (model, data) None or names to plain strings."""
    return isinstance(entry, dict) and all(
        v is None or isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
        for v in entry.values()
    )


def _plain(entry) -> bool:
    """A callback's saved state: names to plain numbers (what train.callbacks save)."""
    return isinstance(entry, dict) and all(
        isinstance(k, str) and isinstance(v, int | float) for k, v in entry.items()
    )


def _from_format_1(blob: dict) -> dict:
    """A format-1 checkpoint as format 2: early stopping's count and the skipped batches move
    from the loop's state to their callbacks' (train.fit.callbacks), named as they save them."""
    if not isinstance(blob.get("state"), dict):
        return blob  # (refused by `read`, naming it)
    state = dict(blob["state"])
    early = {"bad_epochs": state.pop("bad_epochs", 0)}  # (stopped_early: from it and patience)
    state.pop("stopped_early", None)
    guard = {"skipped": state.pop("skipped", 0), "epoch_skipped": 0, "epoch_seen": 0}
    return {**blob, "state": state, "callbacks": {"early_stopping": early, "nonfinite": guard}}


def save(path: Path, payload: dict) -> None:
    """Write `payload` to `path` so that `path` is always either the old or the new file."""
    from train.run import files

    payload = {**payload, "sha256": digest(payload)}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with files.replacing(path, "its checkpoints") as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        why = e.strerror if isinstance(e, OSError) and e.strerror else "the write failed"
        raise UserError(
            f"could not write checkpoint {path}: {why} ({_free(path.parent)} free there). The "
            "previous checkpoint, if any, is untouched and the partial file was removed; free "
            "some space or fix the permissions, then resume."
        ) from None


def _free(directory: Path) -> str:
    import shutil

    try:
        return f"{shutil.disk_usage(directory).free / 2**20:,.0f} MB"
    except OSError:
        return "unknown space"


def clean_stale(directory: Path, locked: bool = True) -> None:
    """Remove temporary files that writers killed mid-save left in `directory`: every
    `.*.tmp-<pid>` but this process's where the caller holds the directory's lock (a run dir),
    else only those whose writer no longer runs (a shared data dir)."""
    import logging

    mine = f".tmp-{os.getpid()}"
    stale = [p for p in directory.glob(".*.tmp-*") if not p.name.endswith(mine)
             and (locked or not _alive(p.name.rsplit("-", 1)[1]))]  # fmt: skip
    freed = 0
    for p in stale:
        try:
            freed += p.stat().st_size
            p.unlink()
        except OSError:
            continue
    if stale:
        logging.getLogger("train").info("removed %d temporary file(s) of interrupted saves "
                                        "(%.1f MB) from %s", len(stale), freed / 2**20,
                                        directory)  # fmt: skip


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def load(path: Path) -> dict:
    """Read a checkpoint safely onto the CPU; a damaged file is a one-line error naming it.
    The archive's CRCs are checked before anything is unpickled: a flipped byte anywhere is
    "corrupt", never an unpickling error."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist.") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({plain(e)}).") from None
    if bad is not None:
        raise UserError(f"checkpoint {path} is corrupt: its part {bad} fails its CRC check.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist.") from None
    except pickle.UnpicklingError as e:  # (torch's text advises weights_only=False: not ours)
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it names the callable {named[1]}" if named else "it holds an object"
        raise UserError(
            f"checkpoint {path} was refused: {what}, and a checkpoint of ours holds only tensors "
            "and plain values; unpickling it could run code, so it was not. Only load files you "
            "trust, and never with weights_only=False."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({plain(e)}).") from None
    if not isinstance(blob, dict) or "model" not in blob:
        raise UserError(f"checkpoint {path} is not one of ours: it has no 'model' state_dict.")
    if (bad := oversized(blob)) is not None:
        raise UserError(f"checkpoint {path} is malformed: {bad}; refusing it before anything "
                        "reads that tensor.")  # fmt: skip
    stored = blob.pop("sha256", None)
    if stored is not None and stored != digest(blob):
        raise UserError(f"checkpoint {path} is corrupt: its contents do not match its checksum.")
    return blob


def oversized(obj, where: str = "") -> str | None:
    """The first tensor in `obj` that declares more elements than its storage holds (a crafted
    file's (100000, 100000) view of one number, stride 0: reading it whole would allocate
    gigabytes), said in a few words; None when every tensor is backed by its own bytes."""
    if isinstance(obj, torch.Tensor):
        need, have = obj.numel() * obj.element_size(), obj.untyped_storage().nbytes()
        if need > have:
            return (f"the tensor {where or 'in it'} declares shape {tuple(obj.shape)} "
                    f"({need:,} bytes) over {have:,} bytes of data")  # fmt: skip
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, list | tuple) else ()  # fmt: skip
    for k, v in items:
        if (bad := oversized(v, f"{where}.{k}" if where else str(k))) is not None:
            return bad
    return None


def digest(obj) -> str:
    """SHA-256 of every tensor's bytes and every plain value, in a fixed order: torch's zip
    reader does not notice a flipped bit in tensor data, this does."""
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=str):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, list | tuple):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()


def load_model(model: nn.Module, state: dict, source: Path) -> None:
    """Load `state` into `model`, naming every missing, unexpected or mis-shaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"missing keys {missing}" if missing else "",
            f"unexpected keys {unexpected}" if unexpected else "",
            f"shape mismatches (checkpoint vs model) {shapes}" if shapes else "",
        ]
        raise UserError(
            f"checkpoint {source} does not fit this model: "
            + "; ".join(p for p in parts if p)
            + ". It was saved from a different model or data config; resume with the run's own "
            "config (or start a new run)."
        )
    model.load_state_dict(state)


def _non_finite(weights: dict) -> list[str]:
    """The state entries (weights, buffers) holding NaN or inf: one check each, at save time."""
    return [k for k, v in weights.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]  # fmt: skip


def _detached(x):
    """A copy of a state_dict's nesting of dicts, lists and tuples: tensors cloned, numbers and
    strings shared, anything else deep-copied (copy.deepcopy of it all took 3x as long)."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _detached(v) for k, v in x.items()}
    if type(x) in (list, tuple):
        return type(x)(_detached(v) for v in x)
    if x is None or isinstance(x, int | float | str | bool):
        return x
    import copy

    return copy.deepcopy(x)


def rng_state() -> dict:
    """Every random generator training touches, in a form `weights_only` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **_accelerator_rng(),
    }


def _accelerator_rng() -> dict:
    """Apple's MPS or Intel's XPU generators, where the run has one (no key otherwise: a CPU
    or CUDA checkpoint is as before)."""
    from train.system.device import accelerator

    kind = accelerator()
    if kind == "mps":
        return {"mps": torch.mps.get_rng_state()}
    if kind == "xpu":
        return {"xpu": torch.xpu.get_rng_state_all()}
    return {}


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
    if "xpu" in state and torch.xpu.is_available():
        torch.xpu.set_rng_state_all(state["xpu"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


class Saver:
    """Writes `last.pt` / `best.pt` with everything resume needs, and restores from one."""

    def __init__(self, run, config: dict, data_meta: dict, choices: dict,
                 origin: dict | None = None):  # fmt: skip
        """`run`: the train.run.rundir.RunDir whose checkpoints/ these are."""
        self.run, self.config, self.data_meta, self.choices = run, config, data_meta, choices
        self.origin = origin

    def path(self, name: str) -> Path:
        return self.run.checkpoint(name)

    def write(self, name: str, payload: dict) -> None:
        """Save `payload` as `name`.pt. Refused (exit 3) when its weights are not all finite:
        no checkpoint ever holds them, and the last good one stays the last good one."""
        if bad := _non_finite(payload["model"]):
            state = payload["state"]
            raise UserError(
                f"the weights became non-finite by step {state['step']} (epoch {state['epoch']}): "
                f"{', '.join(bad[:5])} hold NaN or inf, though every loss was finite, so an "
                "update itself overflowed. No checkpoint was written with them: last.pt keeps "
                "the last good weights. Lower optim.lr, or set trainer.grad_clip.",
                code=3,
            )
        self.run.save_checkpoint(name, payload)

    def payload(self, model, optimizer, scheduler, scaler, state, callbacks: dict,
                copy: bool = False) -> dict:  # fmt: skip
        """Everything a checkpoint holds, as of now (`callbacks`: their resume state by name;
        `copy`: detached from the live objects, to be written later: its weights are checked
        when written, as every payload's are)."""
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict(),
            "state": state.to_dict(),
            "callbacks": callbacks,
            "rng": rng_state(),
            "config": self.config,  # resolved, with the seed actually used
            "data": self.data_meta,  # shapes, classes, normalisation: rebuild without the data
            "choices": self.choices,
            "origin": self.origin,
            "torch": str(torch.__version__),
            "format": Checkpoint.FORMAT,
        }
        if copy:  # what changes as training goes on; config, data and choices do not
            for key in ("model", "optimizer", "scheduler", "scaler"):
                payload[key] = _detached(payload[key])
        return payload

    @staticmethod
    def restore(blob: "Checkpoint", source: Path, model, optimizer, scheduler, scaler) -> dict:
        """Put back weights, optimizer, scheduler, scaler and RNGs; return the loop state (the
        callbacks' is `blob.callbacks`)."""
        load_model(model, blob.model, source)
        try:
            optimizer.load_state_dict(blob.optimizer)
        except (ValueError, KeyError) as e:
            raise UserError(
                f"checkpoint {source}: its optimizer state does not fit optim ({e}); "
                "resume with the run's own optim config."
            ) from None
        if scheduler is not None and blob.scheduler is not None:
            scheduler.load_state_dict(blob.scheduler)
        if blob.scaler:
            scaler.load_state_dict(blob.scaler)
        set_rng_state(blob.rng)
        return blob.state
