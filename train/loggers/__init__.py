"""Where a run's numbers, pictures and files go besides metrics.json: the loggers `logger=` picks,
any combination of TensorBoard (`board`, the default), MLflow (`tracking`) and a CSV file
(`csvfile`). Each is a `Logger`; a run talks to them all at once through `Loggers`.

A logger that keeps the run's own files (TensorBoard's events, metrics.csv) fails the run as any
write in the run dir does. One that reports elsewhere (an MLflow tracking store) never loses
the run: its failure is said once, it is turned off, and the run and its local files go on."""

import logging

log = logging.getLogger("train")

FINISHED, STOPPED, FAILED = "FINISHED", "KILLED", "FAILED"  # how a run ended (MLflow's words)


class Logger:
    """One place a run reports to; every method is optional. `remote`: it reports outside the
    run dir, and its failure must not stop the run."""

    name = ""
    remote = False

    def ids(self) -> dict | None:
        """What run.json keeps to find this logger's record of the run again (MLflow's run
        id), or None."""
        return None

    def start(self, record, resume_step: int | None) -> None:
        """The run starts (`record`: its train.run.record.RunRecord; `resume_step`: the step
        a resumed run continues from, whose later points an interrupted run left are dropped)."""

    def scalars(self, values: dict[str, float], step: int, epoch: int | None = None) -> None:
        """Numbers at an optimizer step: an `epoch`'s train/, val/ and vitals/ values, or the
        step loss (vitals/loss_step; `epoch` None)."""

    def scores(self, results: dict[str, dict[str, float]], step: int) -> None:
        """The best weights' scores per split, as metrics.json holds them (the run's end)."""

    def text(self, tag: str, text: str) -> None:
        """Text to keep with the run (the model's summary)."""

    def image(self, tag: str, image, step: int) -> None:
        """A picture (a CHW uint8 tensor: the confusion matrix, sample grids)."""

    def hparams(self, params: dict, metrics: list[str], step: int) -> None:
        """The knobs that tell runs of a sweep apart, and the tags of the metrics to compare."""

    def graph(self, model, example) -> None:
        """The model's graph, traced on `example`."""

    def flush(self) -> None:
        """Everything so far on disk (or sent): called before each checkpoint is written."""

    def finish(self, status: str, files=None) -> None:
        """The run ended (FINISHED, STOPPED by a signal, FAILED); `files()`, if given: what to
        keep with it, name -> bytes (best.pt, summary.txt, metrics.json). Closes the logger."""


class Loggers:
    """The run's loggers, called together (rank 0's; the other ranks have none)."""

    def __init__(self, chosen: list[Logger]):
        self.active = list(chosen)

    @property
    def names(self) -> list[str]:
        return [lg.name for lg in self.active]

    def ids(self) -> dict | None:
        """run.json's `tracking`: each logger's ids of the run, by name (None: none)."""
        return {lg.name: ids for lg in self.active if (ids := lg.ids()) is not None} or None

    def start(self, record, resume_step: int | None) -> None:
        self._each("start", record, resume_step)

    def scalars(self, values: dict[str, float], step: int, epoch: int | None = None) -> None:
        self._each("scalars", values, step, epoch)

    def scores(self, results: dict[str, dict[str, float]], step: int) -> None:
        self._each("scores", results, step)

    def text(self, tag: str, text: str) -> None:
        self._each("text", tag, text)

    def image(self, tag: str, image, step: int) -> None:
        self._each("image", tag, image, step)

    def hparams(self, params: dict, metrics: list[str], step: int) -> None:
        self._each("hparams", params, metrics, step)

    def graph(self, model, example) -> None:
        self._each("graph", model, example)

    def flush(self) -> None:
        self._each("flush")

    def finish(self, status: str, files=None) -> None:
        self._each("finish", status, files)

    def _each(self, method: str, *args) -> None:
        for lg in list(self.active):
            self._call(lg, method, args)

    def _call(self, lg: Logger, method: str, args) -> None:
        if not lg.remote:
            getattr(lg, method)(*args)
            return
        try:
            getattr(lg, method)(*args)
        except Exception as e:  # noqa: BLE001 - a tracking store's failure never ends the run
            self.active.remove(lg)
            log.warning("%s stopped working (%s: %s); the run goes on without it, and its "
                        "own files (checkpoints, metrics.json%s) are complete", lg.name,
                        type(e).__name__, " ".join(str(e).split())[:300],
                        "".join(f", {n}" for n in self._local()))  # fmt: skip
            if method != "finish":
                try:
                    lg.finish(FAILED)
                except Exception:  # noqa: BLE001, S110 - it already failed once, said
                    pass

    def _local(self) -> list[str]:
        return [{"tensorboard": "TensorBoard's events", "csv": "metrics.csv"}.get(lg.name,
                lg.name) for lg in self.active if not lg.remote]  # fmt: skip
