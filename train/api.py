"""The Python API, for notebooks and scripts: the same runs as `python -m train`, in this
process.

    from train import api
    result = api.train("data=digits", "model=cnn")        # overrides, as on the command line
    result.metrics.splits["test"]["accuracy"], result.run_dir, result.best
    net = result.model()                                   # the best weights, in eval mode
    result.scalars("val/loss")                             # a curve: [(step, value), ...]
    api.train("data=digits", model=MyNet)                  # your nn.Module class (or object)
    api.predict(result.run_dir, "pics/"), api.evaluate(result.run_dir), api.export(...)

A run made here is a run like any other: a run dir, TensorBoard events, checkpoints, the
same weights as the command line for the same config and seed. Interrupting it (Ctrl-C, a
notebook's "interrupt kernel") stops at a step and saves a checkpoint `resume=` continues,
then raises KeyboardInterrupt. Bad input raises TrainError with the command line's paragraph.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from train.errors import UserError
from train.run.rundir import RunDir

log = logging.getLogger("train")


class TrainError(Exception):
    """Bad input or environment, in the command line's one paragraph (`code`: its exit status)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


@dataclass
class Result:
    """A finished run: where it is and what it reached."""

    run_dir: Path
    metrics: object  # train.run.metrics.Metrics: .splits["test"]["accuracy"], .best_step, ...
    given: object = None  # the model class or object train() was handed, if any

    @property
    def best(self) -> Path:
        return RunDir(self.run_dir).checkpoint("best")

    @property
    def last(self) -> Path:
        return RunDir(self.run_dir).checkpoint("last")

    def model(self, which: str = "best", model=None, code=()):
        """The trained nn.Module (eval mode, on the CPU), in the class train() was given, if
        it was given one (or `model`)."""
        given = model if model is not None else self.given
        if given is not None and not isinstance(given, type):
            given = type(given)  # (a fresh object of its class: the weights are the run's)
        return load(self.run_dir, which, given, code).model

    def scalars(self, tag: str = "val/loss") -> list[tuple[int, float]]:
        """A logged curve, as TensorBoard reads it: (optimizer step, value) per point. Tags:
        train/<metric>, val/<metric> (per epoch), vitals/loss_step, vitals/lr, ..."""
        return scalars(self.run_dir, tag)


def scalars(run, tag: str = "val/loss") -> list[tuple[int, float]]:
    """A run's logged curve `tag`, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        raise TrainError(f"{run} logged no {tag!r}; it has {sorted(events.Tags()['scalars'])}.")
    return [(e.step, e.value) for e in events.Scalars(tag)]


def train(*overrides: str, model=None, callbacks=()) -> Result:
    """Train what `overrides` describe (`"data=digits"`, `"trainer.max_epochs=5"`, ...);
    `model`: an nn.Module class (built with in_shape and num_outputs, as ours are) or object,
    trained in place of the configured model; `callbacks`: train.fit.loop.Callbacks."""
    from train.run.claims import Claims

    claims = Claims()  # (bad input leaves nothing behind, as on the command line)
    return _answered(lambda: _train(list(overrides), model, list(callbacks), claims),
                     claims.discard_unstarted)  # fmt: skip


def load(run, which: str = "best", model=None, code=()):
    """A run's model and preprocessing (train.trained.Trained); `model`: the class of the
    object it was trained from; `code`: its own files, if it trained yours."""
    from train.trained import load as load_run

    return _answered(lambda: load_run(Path(run), which, code, model))


def predict(run, inputs, which: str = "best", model=None, code=()) -> list[tuple]:
    """(input, prediction, probability) for files, a folder or a glob (see train.predict)."""
    from train.predict import predict_run

    return _said(lambda: predict_run(Path(run), str(inputs), which, None, code, model))


def evaluate(run, split: str = "test", which: str = "best", model=None, code=(),
             device: str = "auto") -> dict:  # fmt: skip
    """A run's scores on a split, saved as <run>/evaluation-<split>.json (see train.evaluate)."""
    from train.evaluate import evaluate_run

    return _said(lambda: evaluate_run(Path(run), which, split, device, None, None, code,
                                      model))  # fmt: skip


def export(run, fmt: str = "onnx", which: str = "best", model=None, code=()) -> Path:
    """The run's model as an ONNX (or TorchScript) file beside its checkpoint, kept only if it
    agrees with PyTorch (see train.export); its path."""
    from train.export import export_run

    return _said(lambda: export_run(Path(run), fmt, which, None, code, model))


def _said(call):
    """`_answered(call)` with its log lines (scores, what was written) on this process's stdout,
    as the command line prints them."""
    with _logging():
        return _answered(call)


def _answered(call, on_error=lambda: None):
    """`call()`, its UserError a TrainError (after `on_error`; a notebook shows the paragraph,
    not SystemExit), and a stop by a signal a KeyboardInterrupt once the checkpoint is saved."""
    from hydra.errors import HydraException

    try:
        return call()
    except UserError as e:
        on_error()
        raise TrainError(e.message, e.code) from None
    except HydraException as e:
        raise TrainError(" ".join(str(e).split())) from None
    except SystemExit as e:
        if e.code in (130, 143):  # (stopped at a step: last.pt is saved, said above)
            raise KeyboardInterrupt("stopped; checkpoints/last.pt is saved and resume= continues "
                                    "the run") from None  # fmt: skip
        raise


def _train(overrides: list[str], model, callbacks: list, claims) -> Result:
    import time

    from train import app, config
    from train.config import cmdline, rebuild, schema

    started = time.perf_counter()
    cmdline.check(overrides, schema.Config, Path(config.CONF_DIR) / "config.yaml")
    where = cmdline.resume_value(overrides)
    if where not in (None, "auto", "null"):  # the run's own config, as the command line's
        overrides = rebuild.rebuild([], overrides, where, config.compose, model is not None)
    elif model is not None:
        if chosen := [o for o in overrides if o.split("=", 1)[0] in ("model", "+model")]:
            raise TrainError(f"train(model={_qualname(model)}) and the override {chosen[0]} both "
                             "say which model to train: give one of them (your class's own "
                             "arguments go in model.args={...}).")  # fmt: skip
        overrides = ["model=object", f"model.name={_qualname(model)}", *overrides]
    from hydra.core.hydra_config import HydraConfig

    claims.register()  # (this call's run dirs: it resolves hydra.run.dir)
    cfg = config.compose(overrides, hydra=True)
    with _logging() as to_file:
        try:
            HydraConfig.instance().set_config(cfg)  # (what ${hydra:...} in the config reads)
            run = RunDir(cfg.hydra.run.dir)  # (resolving it makes and locks the run dir)
            to_file(run)
            app.train_composed(cfg, claims, run.path, callbacks, model, started)
        finally:
            _forget_hydra()
    return Result(run.path, run.metrics(), model)


def _qualname(model) -> str:
    cls = model if isinstance(model, type) else type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


class _logging:
    """While a run trains: its lines on this process's stdout (a notebook's cell output) and in
    its train.log, as the command line's; the handlers gone after, so a second run in the same
    kernel does not print each line twice."""

    def __enter__(self):
        self.logger = logging.getLogger("train")
        self.console = logging.StreamHandler(sys.stdout)
        self.console.setFormatter(logging.Formatter("%(message)s"))
        self.handlers = [self.console]
        self.level, self.propagate = self.logger.level, self.logger.propagate
        self.logger.addHandler(self.console)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # (a notebook's root handlers would print them again)
        return self.add_file

    def add_file(self, run) -> None:
        handler = run.log_handler()
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
        self.logger.addHandler(handler)
        self.handlers.append(handler)

    def __exit__(self, *exc):
        for handler in self.handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self.logger.setLevel(self.level)
        self.logger.propagate = self.propagate


def _forget_hydra() -> None:
    """No Hydra state left behind: the next run composes afresh."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
