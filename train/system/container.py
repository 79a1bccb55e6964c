"""The Docker image we may be running in: its build variables (baked in as TRAIN_IMAGE*, read
by the run record), what the container sees of the host (compose.yaml's volumes), and the
paragraph for a path that is on the host but not in the container."""

import os
from pathlib import Path

IMAGE_VARS = {"name": "TRAIN_IMAGE", "torch_index": "TRAIN_TORCH_INDEX",
              "base_image": "TRAIN_BASE_IMAGE", "git_commit": "TRAIN_GIT_COMMIT",
              "created": "TRAIN_IMAGE_CREATED"}  # fmt: skip
SEES = ("./data on the host as /data, ./runs as /runs, ./code as /code (read-only) and "
        "./notebooks as /notebooks")  # fmt: skip


def image() -> dict | None:
    """The image's name and build arguments, when running in one of ours."""
    if IMAGE_VARS["name"] not in os.environ:
        return None
    return {key: os.environ.get(var) or None for key, var in IMAGE_VARS.items()}


def not_found(key: str, path) -> str:
    """The paragraph for a path that names nothing (`key=path`), saying, in one of our
    images, which host folders the container sees and how to put the file there."""
    where = Path(path).expanduser().absolute()
    text = f"{key}={path}: there is no such file or folder ({where})."
    if image() is not None:
        text += (f" This runs in a container, which sees only {SEES}: a file elsewhere on the "
                 f"host is not there. Put it in ./data on the host and give "
                 f"{key}=/data/{Path(path).name}.")  # fmt: skip
    return text
