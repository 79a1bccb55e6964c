"""`python -m train.export run=<run dir> format=onnx|torchscript`: the run's model as a file other
runtimes load, beside its checkpoint (`model.onnx` or `model.ts`; numbered, never over an
earlier one). It is kept only if it agrees with PyTorch on a batch of held-out inputs: outputs
within RTOL/ATOL, predicted classes identical. The ONNX model takes normalised float32 inputs
with a dynamic batch dimension; its metadata holds the preprocessing constants and class names.
"""

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from train import config
from train.config import cmdline, schema
from train.errors import UserError, run_entrypoint

log = logging.getLogger("train")
FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts"}
# float32 through other kernels (ONNX Runtime's, TorchScript's fusions): sums in another order
RTOL, ATOL = 1e-3, 1e-4
HELD_OUT = 256


def main() -> None:
    config.register()
    run_entrypoint(
        lambda: cmdline.check_argv(schema.ExportConfig) or _hydra_main(),
        usage=cmdline.usage(__doc__, schema.ExportConfig),
    )


@hydra.main(config_path=config.CONF_DIR, config_name="export", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    out = Path(cfg.out) if cfg.out is not None else None
    export_run(Path(cfg.run), cfg.format, cfg.checkpoint, out, cmdline.paths(cfg.code))


def export_run(run: Path, fmt: str, which: str = "best", out: Path | None = None, code=(),
               model=None) -> Path:  # fmt: skip
    """Export `run`'s model as `fmt` (to `out`, or beside its checkpoint), check parity, and
    return the file written. `code`, `model`: a user's model (see train.evaluate)."""
    from train.run import files
    from train.run.rundir import RunDir
    from train.trained import load

    if fmt not in FORMATS:
        raise UserError(f"format={fmt} is not supported; use one of {list(FORMATS)}.")
    if out is not None and out.exists():
        raise UserError(f"out={out} already exists; give a new file name (nothing is overwritten).")
    files.writable(out.parent if out is not None else run / "checkpoints", "the exported model",
                    f"give out=<file{Path(FORMATS[fmt]).suffix}> somewhere writable.")  # fmt: skip
    if out is None:  # (it writes into the run dir: one holding a planted link is refused)
        RunDir(run).refuse_links()
    trained = load(run, which, code, model)
    x = _held_out(trained)
    blob = (_onnx if fmt == "onnx" else _torchscript)(trained, x)
    got = (_run_onnx if fmt == "onnx" else _run_torchscript)(blob, x)
    _check_parity(trained, x, got, out if out is not None else f"checkpoints/{FORMATS[fmt]}")
    if out is None:
        target = RunDir(run).write(f"checkpoints/{FORMATS[fmt]}", blob, "the exported model",
                                   numbered=True)  # fmt: skip
    else:  # (a file of the user's own, outside the run dir)
        target = out
        files.write(out, blob, "the exported model")
    log.info("wrote %s (%s; agrees with PyTorch on %d held-out inputs)", target, fmt, len(x))
    return target


def metadata(trained) -> dict[str, str]:
    """What a user of the exported file needs to prepare inputs and read outputs."""
    m = trained.meta
    shape = "N x " + " x ".join(map(str, m.in_shape))
    table = m.table or {}
    output = "logits" if m.task == "classification" else "values in the target's own units"
    return {
        "train.input": f"float32 {shape}: (raw / scale - mean) / std, per channel or feature",
        "train.output": output,
        **{
            f"train.{k}": json.dumps(getattr(m, k))
            for k in (
                "task",
                "in_shape",
                "scale",
                "mean",
                "std",
                "class_names",
                "feature_names",
                "target_mean",
                "target_std",
            )
        },  # fmt: skip
        # CSV models: the raw columns, and each text column's one-hot values in feature order
        "train.columns": json.dumps(table.get("columns")),
        "train.categories": json.dumps(table.get("categories")),
        "train.checkpoint": str(trained.path),
    }


def _held_out(trained):
    """Normalised inputs from the run's test split (else val, else train): the data is rebuilt
    from the recorded config; where it cannot be (moved, not downloaded), random inputs."""
    import torch

    from train.data import TensorSplit

    try:
        data = trained.data()
        split = next(s for s in (data.test, data.val, data.train) if s is not None)
        raw = split.x[:HELD_OUT] if isinstance(split, TensorSplit) else torch.stack(
            [split.dataset[i][0] for i in range(min(HELD_OUT, len(split)))])  # fmt: skip
    except (UserError, OSError) as e:
        log.warning("the run's data cannot be rebuilt (%s); checking on random inputs", e)
        g = torch.Generator().manual_seed(0)
        raw = torch.rand(HELD_OUT, *trained.meta.in_shape, generator=g) * trained.meta.scale
    with torch.no_grad():  # (not inference_mode: tracing refuses inference tensors)
        return trained.normalize(raw)


def _onnx(trained, x) -> bytes:
    import warnings

    import onnx_ir
    import torch

    with warnings.catch_warnings():  # (torch's own FutureWarnings about its internals)
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            trained.deployable(), (x[:2],), dynamo=True, verbose=False, input_names=["input"],
            output_names=["output"], dynamic_shapes=({0: torch.export.Dim("batch")},),
        )  # fmt: skip
    program.model.metadata_props.update(metadata(trained))
    return onnx_ir.to_proto(program.model).SerializeToString()


def _run_onnx(blob: bytes, x):
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _torchscript(trained, x) -> bytes:
    import io

    import torch

    traced = torch.jit.trace(trained.deployable(), x[:2])
    extra = {"train.json": json.dumps(metadata(trained))}
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files=extra)
    return buffer.getvalue()


def _run_torchscript(blob: bytes, x):
    import io

    import torch

    with torch.inference_mode():
        return torch.jit.load(io.BytesIO(blob)).eval()(x)


def _check_parity(trained, x, got, target) -> None:
    import torch

    with torch.inference_mode():
        want = trained.deployable()(x)
    diff = (got.float() - want.float()).abs()
    worst = diff.max().item()
    bad = (diff > ATOL + RTOL * want.abs()).sum().item()
    task = trained.task
    classes = 0
    if task.kind == "classification":
        classes = (task.predict(got) != task.predict(want)).sum().item()
    if bad or classes:
        raise UserError(
            f"parity check failed: on {len(x)} held-out inputs the exported model differs from "
            f"PyTorch by up to {worst:.3g} ({bad} output(s) beyond rtol {RTOL} + atol {ATOL}; "
            f"{classes} predicted class(es) differ), so {target} was not written."
        )
    log.info("parity: max |difference| %.3g over %d held-out inputs; classes identical", worst,
             len(x))  # fmt: skip


if __name__ == "__main__":
    main()
