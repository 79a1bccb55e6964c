"""`python -m train.predict run=<run dir> inputs=<file, folder or glob>`: a trained model on your
own files. Image models read PNG/JPEG/BMP/... files as training read its images (any bit depth's
full range onto the data set's, transparency composited, grayscale or RGB, resized only where
training resized, i.e. image_folder runs); tabular models read a CSV with the training feature
columns (any order, no target), prepared by the run's own TablePrep. One line per input: where
it came from, the predicted class (or value) and its probability; `out=<file.csv>` also writes
them as a CSV.
"""

import csv
import glob
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from train import config
from train.config import cmdline, schema
from train.errors import UserError, run_entrypoint

log = logging.getLogger("train")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def main() -> None:
    config.register()
    run_entrypoint(
        lambda: cmdline.check_argv(schema.PredictConfig) or _hydra_main(),
        usage=cmdline.usage(__doc__, schema.PredictConfig),
    )


@hydra.main(config_path=config.CONF_DIR, config_name="predict", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    out = Path(cfg.out) if cfg.out is not None else None
    predict_run(Path(cfg.run), str(cfg.inputs), cfg.checkpoint, out, cmdline.paths(cfg.code))


def predict_run(run: Path, inputs: str, which: str = "best", out: Path | None = None, code=(),
                model=None) -> list:  # fmt: skip
    """Predict on `inputs` with `run`'s model; the (source, prediction, probability) rows.
    `code`, `model`: a user's model or data code (see train.evaluate)."""
    from train.run import files as written
    from train.trained import load

    if out is not None and out.exists():
        raise UserError(f"out={out} already exists; give a new file name (nothing is overwritten).")
    if out is not None:
        written.writable(out.parent, f"out={out}", "give out= a file somewhere writable.")
    trained = load(run, which, code, model)
    reader = _user_reader(trained)
    wanted = "any" if reader else "csv" if not trained.is_image else "image"
    files = _expand(inputs, wanted)
    if reader is not None:
        sources, x, skipped = _read_with(reader, files, trained)
    elif trained.is_image:
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
    if task.kind == "regression":  # in the target's own units
        for src, values in zip(sources, task.predict(result).tolist(), strict=True):
            rows.append((src, " ".join(f"{v:.6g}" for v in values), None))
    else:
        names = trained.meta.class_names
        for src, c, p in zip(sources, task.predict(result).tolist(),
                             task.probability(result).tolist(), strict=True):  # fmt: skip
            rows.append((src, names[c], p))
    for src, pred, p in rows:
        print(f"{src}\t{pred}" + (f"\t{p:.4f}" if p is not None else ""))
    if out is not None:
        written.write(out, table(rows), "the predictions")
        log.info("wrote %s", out)
    if skipped:
        log.warning("%d of %d input file(s) skipped", len(skipped), len(files))
    return rows


def table(rows: list) -> str:
    """The predictions as CSV text. A cell a spreadsheet would take for a formula (a file
    named =HYPERLINK(...).png, a class named +cmd|...) is written as text, with a leading
    apostrophe, as OWASP advises; numbers stay numbers."""
    import io

    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["input", "prediction", "probability"])
    w.writerows((inert(s), inert(c), "" if p is None else f"{p:.6f}") for s, c, p in rows)
    return text.getvalue()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(cell: str) -> str:
    """`cell`, or `'cell` when a spreadsheet would run it as a formula (not for numbers)."""
    if not cell.startswith(FORMULA_STARTS):
        return cell
    try:
        [float(v) for v in cell.split()]  # (regression values: "-1.5" or "-1.5 2")
        return cell
    except ValueError:
        return "'" + cell


def _expand(inputs: str, wanted: str) -> list[Path]:
    """A file, every matching file in a folder, or a glob's matches; sorted, never empty."""
    path = Path(inputs)
    suffixes = IMAGE_SUFFIXES if wanted == "image" else {".csv"}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and (wanted == "any" or p.suffix.lower() in suffixes))  # fmt: skip
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


def _user_reader(trained):
    """The read(path) function of a run's own data code (train.usercode), or None: the file
    runs only if the caller named it (code=...) and it is unchanged."""
    from train.models import usercode

    stored = trained.config["data"]
    if stored.get("_target_") != usercode.DATA:
        return None
    if stored.get("reader") is None:
        raise UserError("this run's data is your code, and it names no reader (data.reader): "
                        "predict needs a function read(path) -> one input tensor in "
                        "it.")  # fmt: skip
    file = trained.consent.file_for("data", (trained.origin or {}).get("data"))
    return usercode.attribute(file, stored["reader"], "data.code"), Path(file)


def _read_with(reader, files: list[Path], trained):
    """Inputs read by the run's own read(path), each checked against the model's input shape."""
    import torch

    from train.models import usercode

    read, file = reader
    sources, tensors, skipped = [], [], []
    for f in files:
        with usercode.said(file, f"in {read.__name__}({f.name!r})"):
            x = torch.as_tensor(read(f))
        if tuple(x.shape) != tuple(trained.meta.in_shape):
            skipped.append(f"{f}: read as {tuple(x.shape)}; the model takes "
                           f"{tuple(trained.meta.in_shape)}")  # fmt: skip
            continue
        sources.append(str(f))
        tensors.append(x)
    shape = (0, *trained.meta.in_shape)
    return sources, torch.stack(tensors) if tensors else torch.empty(shape), skipped


def _takes(trained) -> str:
    if trained.is_image:
        c, h, w = trained.meta.in_shape
        return f"{'grayscale' if c == 1 else 'RGB'} images of {w}x{h} pixels"
    return f"CSV rows with the columns {_prep(trained).columns}"


def _read_images(files: list[Path], trained):
    """Pixels as training saw them: read as training read its images, on the data set's own
    scale (an 8- or 16-bit file's full range onto the set's: 0..16 for digits), resized to the
    model's size only where training resized (image_folder), else the size must match."""
    import torch

    from train.data import folder, images

    meta = trained.meta
    c, h, w = meta.in_shape
    lay = meta.layout or {"background": "white", "resize": False}
    shape = folder.Layout(c, h, w, resize=lay["resize"], background=lay["background"])
    sources, tensors, skipped = [], [], []
    for f in files:
        try:
            pixels = images.read(f, c, shape.background)
        except images.UNREADABLE as e:
            skipped.append(f"{f}: not a readable image ({images.why_unreadable(e)})")
            continue
        if not shape.resize and pixels.shape[:2] != (h, w):
            skipped.append(f"{f}: {pixels.shape[1]}x{pixels.shape[0]} pixels; the model takes "
                           f"{w}x{h}")  # fmt: skip
            continue
        sources.append(str(f))
        tensors.append(folder.to_tensor(pixels, shape))
    if not tensors:
        return sources, torch.empty(0, c, h, w), skipped
    return sources, torch.stack(tensors).float() * (meta.scale / 255.0), skipped


def _prep(trained):
    """The run's TablePrep; for runs before it was saved, their numeric feature columns."""
    from train.data.tables import TablePrep

    meta = trained.meta
    if meta.table is not None:
        return TablePrep.from_dict(meta.table)
    return TablePrep(columns=list(meta.feature_names or []))


def _read_tables(files: list[Path], trained):
    """Rows with the training feature columns (any order, extra target column refused), made
    into features by the run's own TablePrep."""
    import numpy as np
    import torch

    from train.data import tables

    prep = _prep(trained)
    sources, parts = [], []
    for f in files:
        frame, dec = tables.read(f, prep.delimiter, prep.decimal, prep.encoding)
        if not prep.columns:  # the course's built-in tables: columns by position
            expected = len(trained.meta.mean)
            if len(frame.columns) != expected:
                raise UserError(
                    f"{f} has {len(frame.columns)} columns; the model reads {expected}."
                )
            frame.columns = [str(i) for i in range(expected)]
            fitted = tables.TablePrep(columns=list(frame.columns))
        else:
            header = [c for c in frame.columns if c not in prep.ignored]
            _same_columns(f, header, prep.columns)
            fitted = prep
        frame = tables.handle_missing(frame, fitted.columns, fitted.missing, f, "features")
        parts.append(fitted.transform(frame, f, dec))
        sources += [f"{f}:{tables.line_of(r)}" for r in frame.index]
    x = np.concatenate(parts) if parts else np.zeros((0, len(trained.meta.mean)), np.float32)
    return sources, torch.from_numpy(x)


def _same_columns(f: Path, header: list[str], features: list[str]) -> None:
    missing = [c for c in features if c not in header]
    extra = [c for c in header if c not in features]
    if missing or extra:
        parts = [f"missing {missing}" if missing else "",
                 f"extra {extra} (drop them, and the target column)" if extra else ""]  # fmt: skip
        raise UserError(f"{f}: the columns do not match training's {features}: "
                        + "; ".join(p for p in parts if p) + ".")  # fmt: skip


if __name__ == "__main__":
    main()
