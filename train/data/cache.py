"""Decoded data kept on disk between runs: tensors written atomically with a SHA-256, and
read back only when they verify (a damaged cache is rebuilt, never trusted)."""

import logging
from pathlib import Path

import torch

log = logging.getLogger("train")


def load_cache(path: Path) -> dict | None:
    """A decoded data cache, or None when there is none or it does not verify against its
    checksum (a flipped bit, a truncated file): then it is rebuilt, and the log says so."""
    from train.run import checkpoint

    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        stored = blob.pop("sha256")
        ok = checkpoint.oversized(blob) is None and stored == checkpoint.digest(blob)
    except Exception:  # noqa: BLE001 - any damage at all: decode the data again
        ok = False
    if not ok:
        log.warning("the data cache %s is damaged (it does not verify); rebuilding it", path)
        return None
    return {**blob, "sha256": stored}


def save_cache(path: Path, blob: dict) -> str:
    """Written atomically, with a checksum, which is returned. Best effort: a read-only data
    volume just means decoding again next time."""
    from train.run import checkpoint, files

    digest = checkpoint.digest(blob)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.clean_stale(path.parent, locked=False)
        with files.replacing(path, "its data cache", sync=False) as f:
            torch.save({**blob, "sha256": digest}, f)
    except (OSError, RuntimeError):  # (torch.save reports a full disk as a RuntimeError)
        pass
    return digest
