"""TensorBoard (logger=[tensorboard], the default): scalars, pictures, the model's summary and
graph, and the hparams entry, in the run dir's event files."""

import sys
import threading
import time
import warnings
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from train.errors import UserError
from train.loggers import Logger


class TensorBoard(Logger):
    """The run's TensorBoard event files (`flush_secs`: written at least this often)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, flush_secs: int = 10):
        self.dir, self.flush_secs, self.writer = run_dir, flush_secs, None

    def start(self, record, resume_step: int | None) -> None:
        self.writer = open_writer(self.dir, resume_step, self.flush_secs)

    def scalars(self, values: dict[str, float], step: int, epoch: int | None = None) -> None:
        scalars(self.writer, values, step)

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, "    " + text.replace("\n", "\n    "), 0)  # preformatted

    def image(self, tag: str, image, step: int) -> None:
        self.writer.add_image(tag, image, step)

    def hparams(self, params: dict, metrics: list[str], step: int) -> None:
        hparams(self.writer, params, metrics, step)

    def graph(self, model, example) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.writer.add_graph(model, example)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, status: str, files=None) -> None:
        if self.writer is not None:
            self.writer.close()


def open_writer(run_dir: Path, resume_step: int | None, flush_secs: int = 10) -> SummaryWriter:
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
        return SummaryWriter(str(run_dir), flush_secs=flush_secs, **purge)  # (and at flush())
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
