"""MLflow (logger=[tensorboard,mlflow]): one MLflow run per training run, kept by MlflowClient
(never mlflow's fluent global run, so two runs in one notebook kernel stay apart).

- params: the resolved config, flattened (trainer.max_epochs, ...); tags: the command line's
  overrides, the git commit, the data's fingerprint, the run dir;
- metrics: every step and epoch value the run logs, sent at each checkpoint (so a resume never
  repeats a step), and the best weights' scores as best/<split>/<metric> at the end;
- artifacts: the pictures (viz/), summary.txt, metrics.json and checkpoints/best.pt;
- resume=: the same MLflow run again (its id is in run.json), its history appended to;
- a sweep: a parent run with a child per job (`SweepParent`, a Hydra callback); a train.tune
  study: a parent with a child per trial (`parent_run_id`).

The default store is SQLite under the runs dir (runs/mlflow.db, artifacts in runs/mlartifacts),
which `docker compose up mlflow` shows; logger.mlflow.tracking_uri=http://... a team server."""

import json
import logging
import os
import re
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from train.errors import UserError, plain
from train.loggers import FAILED, Logger

log = logging.getLogger("train")
BATCH = 1000  # metrics per request (MLflow's limit for log_batch)
PARAM_CHARS = 6000  # a param's value, at most (MLflow refuses longer ones)
PARENT_FILE = "mlflow.json"  # in a sweep's dir: its parent run


def default_uri(runs_dir: str) -> str:
    """The store a run uses unless told: SQLite in the runs dir."""
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def client(uri: str, retries: int, timeout_s: float):
    """An MlflowClient for `uri`, giving up on a silent server after `retries` more tries of
    `timeout_s` each (MLflow's own default waits minutes). MLflow's and its database
    migrations' chatter stays off the run's console."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(timeout_s, 1)))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    from mlflow.tracking import MlflowClient  # (its import sets its loggers' levels: after it)

    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client, name: str, runs_dir: str | None) -> str:
    """The experiment `name`, made if new (with the default store, its artifacts in
    runs/mlartifacts/<name>)."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    where = None
    if runs_dir is not None:
        folder = re.sub(r"[^\w.=,+-]", "_", name) or "default"
        where = (Path(runs_dir).resolve() / "mlartifacts" / folder).as_uri()
    # (a training experiment, as MLflow's UI calls it: runs, metrics and charts, not GenAI's)
    kind = {"mlflow.experimentKind": "custom_model_development"}
    return mlflow_client.create_experiment(name, artifact_location=where, tags=kind)


SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def unusable(uri: str, error: Exception) -> UserError:
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme not in SCHEMES:
        why = f"MLflow keeps runs in none of the kind '{scheme}://' (it knows {', '.join(SCHEMES)})"
    elif "Connection refused" in str(error) or "Failed to establish" in str(error):
        why = "no server answers there (connection refused)"
    else:
        why = plain(error)[:400]
    return UserError(
        f"logger.mlflow.tracking_uri={uri} cannot be used: {why}. Give a "
        "tracking server that answers (http://host:5000), a database URI "
        "(sqlite:///path/mlflow.db), or null for the store under paths.runs_dir; or leave "
        "MLflow out (logger=[tensorboard]). Nothing was trained."
    )


class MLflow(Logger):
    """A run's MLflow run (see the module's docstring): `reach` the store, `start`
    opens the run in it, then the Logger calls."""

    name, remote = "mlflow", True

    def __init__(self, mlflow_client, experiment: str, runs_dir: str | None, run_dir: Path,
                 run_name: str, previous: str | None, parent: str | None):  # fmt: skip
        self.client, self.experiment, self.runs_dir = mlflow_client, experiment, runs_dir
        self.dir, self.run_name, self.previous, self.parent = run_dir, run_name, previous, parent
        self.run_id: str | None = None
        self.pending: list = []  # metrics not sent yet
        self.sent: dict[str, int] = {}  # a resumed run's last step logged, per key

    @classmethod
    def reach(cls, uri: str | None, runs_dir: str, experiment: str, run_dir: Path,
             run_name: str | None, previous: str | None, parent: str | None,
             retries: int = 2, timeout_s: float = 10.0) -> "MLflow":  # fmt: skip
        """Reach the store (nothing is made in it yet): `previous` is a resumed run's MLflow
        run (continued if the store has it), `parent` a run to file it under. A store that
        cannot be used is one paragraph, exit 2, before any work."""
        uri = uri or default_uri(runs_dir)
        try:
            mlflow_client = client(uri, retries, timeout_s)
            mlflow_client.get_experiment_by_name(experiment)
            previous = previous if previous is not None and _exists(mlflow_client, previous) \
                else None  # fmt: skip
            if parent is not None:
                mlflow_client.get_run(parent)
        except Exception as e:  # noqa: BLE001 - any failure of the store: said, exit 2
            raise unusable(uri, e) from None
        name = run_name or f"{run_dir.parent.name}/{run_dir.name}"
        return cls(mlflow_client, experiment, _own_store(uri, runs_dir), run_dir, name, previous,
                   parent)  # fmt: skip

    def ids(self) -> dict | None:
        """What run.json keeps, so resume= finds this MLflow run again."""
        if self.run_id is None:
            return None
        return {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}

    def start(self, record, resume_step: int | None) -> None:
        from mlflow.entities import Param, RunTag

        self._open_run()
        tags = {"train.run_dir": str(self.dir.resolve()),
                "train.data_fingerprint": record.data_fingerprint or "",
                "mlflow.source.name": _source(record.command),
                "mlflow.source.git.commit": (record.git or record.image or {}).get("commit")
                or ""}  # fmt: skip
        overrides = " ".join(record.overrides)
        if self.previous is not None:  # (params stay as the run began; each resume's overrides
            tags[f"train.overrides.resume-{_resumes(self.dir)}"] = overrides  # are a tag)
            self.sent = self._last_steps()
            params = []
        else:
            tags["train.overrides"] = overrides
            params = [Param(k, v) for k, v in flat(record.config).items()]
        tags = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, max(len(params), 1), 100):  # (100 params a request at most)
            self.client.log_batch(self.run_id, params=params[i : i + 100],
                                  tags=tags if i == 0 else [])  # fmt: skip

    def _open_run(self) -> None:
        """The resumed run's MLflow run, running again; or a new one (a child of `parent`, in
        its experiment, where MLflow shows it as one)."""
        if self.previous is not None:
            self.client.update_run(self.previous, status="RUNNING")
            self.run_id = self.previous
            return
        exp = self.client.get_run(self.parent).info.experiment_id if self.parent else \
            experiment_id(self.client, self.experiment, self.runs_dir)  # fmt: skip
        tags = {"mlflow.parentRunId": self.parent} if self.parent else {}
        self.run_id = self.client.create_run(exp, tags=tags, run_name=self.run_name).info.run_id

    def scalars(self, values: dict[str, float], step: int, epoch: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()
                         if step > self.sent.get(k, -1)]  # fmt: skip

    def scores(self, results: dict[str, dict[str, float]], step: int) -> None:
        self.scalars({f"best/{split}/{k}": v for split, metrics in results.items()
                      for k, v in metrics.items()}, step)  # fmt: skip

    def image(self, tag: str, image, step: int) -> None:
        pixels = image.permute(1, 2, 0).cpu().numpy()  # (CHW -> HWC, uint8)
        self.client.log_image(self.run_id, pixels, artifact_file=f"{_file_name(tag)}.png")

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, status: str, files=None) -> None:
        if self.run_id is None:  # (never started)
            return
        if status != FAILED:
            self.flush()
        if files is not None:
            self._upload(files())
        self.client.set_terminated(self.run_id, status)

    def _upload(self, contents: dict[str, bytes]) -> None:
        """Each file as an artifact at its name (checkpoints/best.pt, ...)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="train-mlflow-") as tmp:
            for name, data in contents.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                folder = str(Path(name).parent)
                self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)

    def _last_steps(self) -> dict[str, int]:
        """A resumed run's last logged step of each metric: a point at or before it is not
        sent again (an interrupted run may have sent points past its last checkpoint)."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {k: max((m.step for m in self.client.get_metric_history(self.run_id, k)),
                       default=-1) for k in keys}  # fmt: skip


def _own_store(uri: str, runs_dir: str) -> str | None:
    """The runs dir, when `uri` is the store in it (its artifacts go beside it)."""
    return runs_dir if uri == default_uri(runs_dir) else None


def _exists(mlflow_client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_run(run_id)
        return True
    except MlflowException:
        return False


def _resumes(run_dir: Path) -> int:
    """This resume's number: the run's invocations before it (run.json, run-1.json, ...;
    this one's record is written once its loggers have started)."""
    return len(list(run_dir.glob("run*.json")))


def _source(command: list[str]) -> str:
    """What started the run, as MLflow's source: the command, or the script or kernel that
    called train.api."""
    if command[1:3] == ["-m", "train"] or Path(command[0]).name == "train":
        return "python -m train"
    caller = command[2] if command[1:2] == ["-m"] and len(command) > 2 else \
        Path(command[1] if len(command) > 1 else command[0]).name  # fmt: skip
    return f"train.api ({caller})"


def _file_name(tag: str) -> str:
    """An artifact's path for a tag: viz/samples (predicted,true) -> viz/samples_predicted_true."""
    return "/".join(re.sub(r"[^\w.-]+", "_", part).strip("_") for part in tag.split("/"))


def flat(config: dict, prefix: str = "") -> dict[str, str]:
    """A resolved config as MLflow params: dotted keys, plain values (lists as JSON)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        elif key not in ("_partial_",):
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            out[f"{prefix}{key}"] = text[:PARAM_CHARS]
    return out


# --- parents: a sweep's, a study's --------------------------------------------------------


def parent_run(settings, runs_dir: str, name: str, tags: dict,
               experiment: str | None = None) -> dict:  # fmt: skip
    """A new run to file others under (a sweep's, a study's), in `experiment` (else the one
    `settings`, logger.mlflow, names): {run_id, tracking_uri}. A store that cannot be used:
    exit 2."""
    uri = settings.tracking_uri or default_uri(runs_dir)
    try:
        mlflow_client = client(uri, settings.retries, settings.timeout_s)
        exp = experiment_id(mlflow_client, experiment or _experiment_of(settings),
                            _own_store(uri, runs_dir))  # fmt: skip
        run = mlflow_client.create_run(exp, run_name=name, tags=tags)
    except Exception as e:  # noqa: BLE001 - any failure of the store: said, exit 2
        raise unusable(uri, e) from None
    return {"run_id": run.info.run_id, "tracking_uri": uri}


def tag(ids: dict, tags: dict, status: str | None = None, retries: int = 2,
        timeout_s: float = 10.0) -> None:  # fmt: skip
    """Tags on the run `ids` names ({run_id, tracking_uri}), and its end if `status` is given;
    a store that fails is said (the runs are complete without it)."""
    try:
        mlflow_client = client(ids["tracking_uri"], retries, timeout_s)
        for key, value in tags.items():
            mlflow_client.set_tag(ids["run_id"], key, str(value))
        if status is not None:
            mlflow_client.set_terminated(ids["run_id"], status)
    except Exception as e:  # noqa: BLE001 - said; the runs themselves are complete
        log.warning("mlflow: could not mark run %s (%s: %s)", ids["run_id"], type(e).__name__,
                    " ".join(str(e).split())[:300])  # fmt: skip


def _experiment_of(settings) -> str:
    """The experiment logger.mlflow names (a study's: resolved as its trials' is)."""
    return str(settings.experiment)


def _sweep_experiment(config) -> str:
    """A sweep's experiment: the one its jobs would name, when they all name the same one;
    "sweeps" when it depends on what each job chooses (the default, the run's name, in a
    sweep over data= or model=)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    varied = {o.key_or_group for o in parsed if o.is_sweep_override()}
    if varied & {"data", "model", "name", "logger.mlflow.experiment"}:
        return "sweeps"
    HydraConfig.instance().set_config(config)  # (what ${hydra:runtime.choices...} reads)
    return str(config.logger.mlflow.experiment)


class SweepParent(Callback):
    """A sweep's MLflow parent run, as a Hydra callback (conf/config.yaml's hydra.callbacks): a
    sweep (-m) with MLflow among its loggers gets one run its jobs are children of, made when
    the sweep starts (its id in the sweep dir's mlflow.json, where each job finds it, in any
    process) and ended with the sweep."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        from train.run import files

        settings = OmegaConf.select(config, "logger.mlflow")
        if settings is None:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        tags = {"train.sweep_dir": str(sweep_dir),
                "train.overrides": " ".join(config.hydra.overrides.task)}  # fmt: skip
        ids = parent_run(settings, str(config.paths.runs_dir), f"sweep {sweep_dir.name}", tags,
                         _sweep_experiment(config))  # fmt: skip
        sweep_dir.mkdir(parents=True, exist_ok=True)
        files.write_json(sweep_dir / PARENT_FILE, ids)

    def on_multirun_end(self, config, **kwargs) -> None:
        parent = sweep_parent(Path(str(config.hydra.sweep.dir)))
        if parent is not None:
            m = config.logger.mlflow
            tag(parent, {}, "FINISHED", m.retries, m.timeout_s)


def sweep_parent(sweep_dir: Path) -> dict | None:
    """The parent run a sweep's job files its run under ({run_id, tracking_uri}), if any."""
    try:
        return json.loads((sweep_dir / PARENT_FILE).read_text())
    except (OSError, ValueError):
        return None
