"""`python -m train.predict run=<run dir> inputs=<file, folder or glob>`: a trained model on your
own files. Image models read PNG/JPEG/BMP files (made grayscale or RGB as in training, resized
only where training resized, i.e. image_folder runs); tabular models read a CSV with the
training feature columns (any order, no target). One line per input: where it came from, the
predicted class (or value) and its probability; `out=<file.csv>` also writes them as a CSV.
"""

import csv
import glob
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from train import config
from train.app import CONF_DIR
from train.errors import UserError, run_entrypoint

log = logging.getLogger("train")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def main() -> None:
    config.register_predict()
    run_entrypoint(_hydra_main)


@hydra.main(config_path=CONF_DIR, config_name="predict", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    out = Path(cfg.out) if cfg.out is not None else None
    predict_run(Path(cfg.run), str(cfg.inputs), cfg.checkpoint, out)


def predict_run(run: Path, inputs: str, which: str = "best", out: Path | None = None) -> list:
    """Predict on `inputs` with `run`'s model; the (source, prediction, probability) rows."""
    from train.trained import load

    if out is not None and out.exists():
        raise UserError(f"out={out} already exists; give a new file name (nothing is overwritten).")
    trained = load(run, which)
    wanted = "csv" if not trained.is_image else "image"
    files = _expand(inputs, wanted)
    if trained.is_image:
        sources, x, skipped = _read_images(files, trained)
    else:
        sources, x = _read_tables(files, trained)
        skipped = []
    for reason in skipped:
        log.warning("skipped %s", reason)
    if not sources:
        raise UserError(f"none of the {len(files)} input file(s) could be used ({len(skipped)} "
                        f"skipped, named above); the model takes {_takes(trained)}.")  # fmt: skip
    result = trained.outputs(x)
    task = trained.task
    rows = []
    if task.kind == "regression":
        for src, values in zip(sources, result.tolist(), strict=True):
            rows.append((src, " ".join(f"{v:.6g}" for v in values), None))
    else:
        names = trained.meta["class_names"]
        for src, c, p in zip(sources, task.predict(result).tolist(),
                             task.probability(result).tolist(), strict=True):  # fmt: skip
            rows.append((src, names[c], p))
    for src, pred, p in rows:
        print(f"{src}\t{pred}" + (f"\t{p:.4f}" if p is not None else ""))
    if out is not None:
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["input", "prediction", "probability"])
            w.writerows((s, c, "" if p is None else f"{p:.6f}") for s, c, p in rows)
        tmp.replace(out)
        log.info("wrote %s", out)
    if skipped:
        log.warning("%d of %d input file(s) skipped", len(skipped), len(files))
    return rows


def _expand(inputs: str, wanted: str) -> list[Path]:
    """A file, every matching file in a folder, or a glob's matches; sorted, never empty."""
    path = Path(inputs)
    suffixes = IMAGE_SUFFIXES if wanted == "image" else {".csv"}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(inputs, recursive=True) if Path(p).is_file())
    if not files:
        kinds = ", ".join(sorted(suffixes))
        raise UserError(
            f"inputs={inputs} matches no {wanted} file ({kinds}); give a file, a folder "
            "holding such files, or a quoted glob like 'pics/*.png'."
        )
    return files


def _takes(trained) -> str:
    if trained.is_image:
        c, h, w = trained.meta["in_shape"]
        return f"{'grayscale' if c == 1 else 'RGB'} images of {w}x{h} pixels"
    return f"CSV rows with the columns {trained.meta['feature_names']}"


def _read_images(files: list[Path], trained):
    """Pixels as training stored them: RGB, then grayscale for one-channel models; resized to
    the model's size only where training resized (image_folder), else the size must match."""
    import numpy as np
    import torch
    from PIL import Image

    c, h, w = trained.meta["in_shape"]
    resize = trained.config["data"].get("image_size") is not None
    sources, tensors, skipped = [], [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            skipped.append(f"{f}: not a readable image ({type(e).__name__}: {e})")
            continue
        if c == 1:
            im = im.convert("L")
        x = torch.from_numpy(np.asarray(im).copy())
        x = x[None] if c == 1 else x.permute(2, 0, 1)
        if resize:
            from torchvision.transforms.v2 import functional as TF

            x = TF.resize(x, [h, w], antialias=True)
        elif tuple(x.shape[1:]) != (h, w):
            skipped.append(f"{f}: {x.shape[2]}x{x.shape[1]} pixels; the model takes {w}x{h}")
            continue
        sources.append(str(f))
        tensors.append(x)
    x = torch.stack(tensors) if tensors else torch.empty(0, c, h, w, dtype=torch.uint8)
    return sources, x, skipped


def _read_tables(files: list[Path], trained):
    """Rows of the training feature columns, put in training order, as float features."""
    import torch

    from train.data import parse_number, read_csv

    features = trained.meta["feature_names"]
    sources, rows = [], []
    for f in files:
        header, lines = read_csv(f)
        if features is None:  # the course's built-in tables: columns by position
            expected = len(trained.meta["mean"])
            if len(header) != expected:
                raise UserError(f"{f} has {len(header)} columns; the model reads {expected}.")
            order = list(range(expected))
        else:
            missing = [c for c in features if c not in header]
            extra = [c for c in header if c not in features]
            if missing or extra:
                raise UserError(
                    f"{f}: the columns do not match training's {features}: "
                    + "; ".join(
                        part
                        for part in (
                            f"missing {missing}" if missing else "",
                            f"extra {extra} (drop them, and the target column)" if extra else "",
                        )
                        if part
                    )  # fmt: skip
                    + "."
                )
            order = [header.index(c) for c in features]
        for n, line in enumerate(lines, 2):
            rows.append([parse_number(f, line[i], n, header[i]) for i in order])
            sources.append(f"{f}:{n}")
    return sources, torch.tensor(rows, dtype=torch.float32)


if __name__ == "__main__":
    main()
