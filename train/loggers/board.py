"""TensorBoard output: scalars, the hparams entry, and the two pictures (samples, confusion)."""

import math
import sys
import threading
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from train.errors import UserError


def open_writer(run_dir: Path, resume_step: int | None) -> SummaryWriter:
    """A writer for the run dir; on resume, events logged after the checkpoint's step (by the
    interrupted run) are purged, so curves continue without duplicated steps. A disk too full
    to take the event file is one paragraph (exit 2), not two threads' tracebacks."""
    purge = {}
    if resume_step is not None:
        # TensorBoard reads a run's files in name order, and names start with the second they
        # were opened: a resume within the same second as an earlier file could sort before it.
        seconds = [int(p.name.split(".")[3]) for p in run_dir.glob("events.out.tfevents.*")]
        wait = max(seconds, default=0) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)
        purge = {"purge_step": resume_step + 1}
    quiet = threading.excepthook
    threading.excepthook = _writer_errors_said_once
    try:
        return SummaryWriter(str(run_dir), flush_secs=10, **purge)  # (and before checkpoints)
    except OSError as e:
        import shutil

        free = shutil.disk_usage(run_dir).free / 2**20
        raise UserError(
            f"cannot write TensorBoard's event file in {run_dir}: {e.strerror or e} ({free:,.0f} "
            "MB free there). Free some space (or choose paths.runs_dir on another disk) and run "
            "again."
        ) from None
    finally:
        threading.excepthook = quiet


def _writer_errors_said_once(args) -> None:
    """The event writer's thread hits the same OSError the constructor reports: not twice."""
    if not isinstance(args.exc_value, OSError):
        sys.__excepthook__(args.exc_type, args.exc_value, args.exc_traceback)


def scalars(writer: SummaryWriter, values: dict[str, float], step: int) -> None:
    """Every tag's value at `step` in one event (TensorBoard reads each as its own curve):
    one write instead of one per tag, which cost ~12 us each at every epoch's end."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v))
                             for tag, v in values.items()])  # fmt: skip
    writer._get_file_writer().add_summary(summary, step)


def hparams(writer: SummaryWriter, params: dict, metrics: list[str], step: int) -> None:
    """One HPARAMS entry for the run, so sweeps compare side by side: the params in the order
    given (booleans as booleans, not 1.0), and as metrics the tags of the run's own curves
    (val/accuracy, ...), so no single-point "hparam/..." card crowds the scalars page."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start, infos = plugin_data_pb2.SessionStartInfo(), []
    for key, value in params.items():
        if isinstance(value, bool):
            start.hparams[key].bool_value, kind = value, "DATA_TYPE_BOOL"
        elif isinstance(value, int | float):
            start.hparams[key].number_value, kind = value, "DATA_TYPE_FLOAT64"
        else:
            start.hparams[key].string_value, kind = str(value), "DATA_TYPE_STRING"
        infos.append(api_pb2.HParamInfo(name=key, type=api_pb2.DataType.Value(kind)))
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=[
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metrics])  # fmt: skip
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value("STATUS_SUCCESS"))
    for tag, data in ((metadata.EXPERIMENT_TAG, {"experiment": experiment}),
                      (metadata.SESSION_START_INFO_TAG, {"session_start_info": start}),
                      (metadata.SESSION_END_INFO_TAG, {"session_end_info": end})):  # fmt: skip
        content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **data)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()))  # fmt: skip
        writer._get_file_writer().add_summary(
            Summary(value=[Summary.Value(tag=tag, metadata=meta)]), step
        )


def sample_grid(images: Tensor, pred: list[str], true: list[str], scale: int = 4) -> Tensor:
    """Images (N, C, H, W in [0, 1]) with 'pred/true' under each: green right, red wrong."""
    tiles = []
    for img, p, t in zip(images, pred, true, strict=True):
        img = (img.clamp(0, 1) * 255).to(torch.uint8)
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
        tile = Image.new("RGB", (max(pil.width, 48), pil.height + 14), "white")
        tile.paste(pil, (0, 0))
        ImageDraw.Draw(tile).text(
            (1, pil.height + 1),
            f"{p}/{t}"[:12],
            font=_font(),
            fill=(0, 128, 0) if p == t else (200, 0, 0),
        )
        tiles.append(torch.from_numpy(_array(tile)).permute(2, 0, 1))
    from torchvision.utils import make_grid  # lazily: importing torchvision costs seconds

    return make_grid(tiles, nrow=int(math.ceil(math.sqrt(len(tiles)))), pad_value=255)


MAX_DRAWN = 30  # classes in the confusion picture; metrics.json keeps the whole matrix


def confusion_image(cm: Tensor, names: list[str], cell: int = 28) -> Tensor:
    """The confusion matrix (rows true, columns predicted) as a CHW uint8 heat map with counts;
    beyond MAX_DRAWN classes, the MAX_DRAWN with the most examples (its size stays bounded)."""
    title = "predicted ->"
    if len(names) > MAX_DRAWN:
        keep = cm.sum(1).topk(MAX_DRAWN).indices.sort().values
        title = f"the {MAX_DRAWN} most frequent of {len(names)} classes; predicted ->"
        cm, names = cm[keep][:, keep], [names[i] for i in keep.tolist()]
    k = len(names)
    margin = 40
    img = Image.new("RGB", (margin + k * cell, margin + k * cell), "white")
    draw = ImageDraw.Draw(img)
    rows = cm.double() / cm.sum(1, keepdim=True).clamp_min(1)
    for i in range(k):
        draw.text((2, margin + i * cell + 8), names[i][:5], font=_font(), fill="black")
        draw.text((margin + i * cell + 2, 2), names[i][:5], font=_font(), fill="black")
        for j in range(k):
            shade = int(255 * (1 - rows[i, j].item()))
            x, y = margin + j * cell, margin + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(shade, shade, 255))
            draw.text(
                (x + 2, y + 8),
                str(int(cm[i, j])),
                font=_font(),
                fill="white" if shade < 128 else "black",
            )
    draw.text((margin, margin - 14), title, font=_font(), fill="gray")
    return torch.from_numpy(_array(img)).permute(2, 0, 1)


def _font():
    return ImageFont.load_default()


def _array(img: Image.Image):
    import numpy as np

    return np.asarray(img).copy()
