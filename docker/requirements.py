"""Split the lock's export into the requirement files each image stage installs, hashes kept.

    python3 docker/requirements.py uv.lock export.txt test-export.txt notebook-export.txt \
        OUT_DIR FLAVOR

export.txt is `uv export --frozen --no-emit-project --no-dev` (hashed), test-export.txt and
notebook-export.txt the same with `--group test` and `--group notebook`. Written to OUT_DIR:
  torch.txt        torch, torchvision and their CUDA wheels (nvidia-*, cuda-*; triton for
                   FLAVOR=cuda only: the CPU image cannot use it, 0.7 GB)
  rest.txt         every other runtime package
  test.txt         what the tests add (pytest, hypothesis and theirs)
  notebook.txt     what JupyterLab and the notebooks add (the jupyter image)
  tensorboard.txt  TensorBoard and its dependencies alone (the TensorBoard image)
  mlflow.txt       MLflow and its dependencies alone (the MLflow image: no torch)
  torch-pins.txt   `torch==X` and `torchvision==Y`, for installing from another index
"""

import sys
import tomllib
from pathlib import Path

TORCH = ("torch", "torchvision", "triton")
TORCH_PREFIXES = ("nvidia-", "cuda-")


def entries(export: str) -> dict[str, list[str]]:
    """name -> its requirement entries (a `name==version ; marker` line and its `--hash`
    lines; a package locked at two versions for two Pythons has two)."""
    out: dict[str, list[str]] = {}
    name = None
    for line in export.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith((" ", "\t")):
            name = line.split("==")[0].split("[")[0].strip().lower()
            out.setdefault(name, []).append(line)
        elif name is not None:
            out[name][-1] += "\n" + line
    return out


def closure(lock: dict, root: str) -> set[str]:
    """`root` and everything it depends on, by the lock's dependency lists."""
    deps = {p["name"]: [d["name"] for d in p.get("dependencies", [])] for p in lock["package"]}
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += deps.get(name, [])
    return seen


def main(lock_path, export_path, test_path, notebook_path, out_dir, flavor) -> None:
    lock = tomllib.loads(Path(lock_path).read_text())
    runtime = entries(Path(export_path).read_text())
    with_test = entries(Path(test_path).read_text())
    with_notebook = entries(Path(notebook_path).read_text())
    is_torch = [n for n in runtime if n in TORCH or n.startswith(TORCH_PREFIXES)]
    torch = [n for n in is_torch if flavor == "cuda" or n != "triton"]
    tensorboard = [n for n in sorted(closure(lock, "tensorboard")) if n in runtime]
    mlflow = [n for n in sorted(closure(lock, "mlflow")) if n in runtime]
    files = {
        "torch.txt": [e for n in torch for e in runtime[n]],
        "rest.txt": [e for n, es in runtime.items() if n not in is_torch for e in es],
        "test.txt": [e for n, es in with_test.items() if n not in runtime for e in es],
        "notebook.txt": [e for n, es in with_notebook.items() if n not in runtime for e in es],
        "tensorboard.txt": [e for n in tensorboard for e in runtime[n]],
        "mlflow.txt": [e for n in mlflow for e in runtime[n]],
        "torch-pins.txt": [runtime[n][0].splitlines()[0].split(" ;")[0].rstrip(" \\")
                           for n in ("torch", "torchvision")],  # fmt: skip
    }
    for name, lines in files.items():
        (Path(out_dir) / name).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
