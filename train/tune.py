"""`python -m train.tune [train overrides] tune.study=NAME tune.n_trials=N`: hyperparameter
search with Optuna, each trial an ordinary run of `python -m train`.

The study lives in `<paths.runs_dir>/tune/<NAME>/study.db` (SQLite through Optuna's RDB
storage): running the same command again continues it with N more trials. Each trial reports
its monitored value every epoch (a callback on the loop) and a pruner stops bad ones early; a
trial whose process died (kill -9, OOM, preemption) stops sending heartbeats, is marked FAIL
when the study is next opened and run again with the same parameters. `tune.workers=K` runs K
worker processes on one study (one GPU each, or a share of the CPU cores each). Every trial
is a run dir `trial-<k>/` beside the study, so evaluate, predict, export and reproduce work
on it, and TensorBoard's HPARAMS tab compares the trials.
"""

import difflib
import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from train.errors import UserError, run_entrypoint
from train.fit.loop import Callback

log = logging.getLogger("train.tune")  # on the console; the trials' own lines in train.log
PRUNERS = ("median", "hyperband", "none")
KINDS = ("float", "int", "categorical")
HEARTBEAT_S = 5  # a live trial's heartbeat; one silent for 4x this is a dead process's


@dataclass
class Search:
    """The `tune.*` keys of the command line."""

    study: str = "default"
    n_trials: int = 10  # this call's trials (the study keeps every earlier one)
    space: str = "default"  # conf/tune/space/<space>.yaml
    pruner: str = "median"  # median | hyperband | none
    workers: int = 1  # processes running trials at once
    warmup_epochs: int = 3  # epochs before a trial may be pruned
    startup_trials: int = 3  # trials finished before pruning starts
    heartbeat_s: int = HEARTBEAT_S
    seed: int | None = 0  # the sampler's (null: drawn)
    storage: str | None = None  # an Optuna storage URL shared by machines (default: study.db)


def settings_of(argv: list[str]) -> tuple[Search, list[str]]:
    """The tune.* settings, checked, and the overrides for every trial's `python -m train`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    mine = [a.removeprefix("tune.") for a in argv if a.startswith("tune.")]
    rest = [a for a in argv if not a.startswith("tune.")]
    if bad := [a for a in rest if a.startswith("-")]:
        raise UserError(f"python -m train.tune takes overrides only, not {' '.join(bad)}; the "
                        "search itself is the sweep (no -m).")  # fmt: skip
    keys = [f"tune.{k}" for k in vars(Search())]
    named = [f"tune.{m.split('=')[0]}" for m in mine]
    if unknown := [k for k in named if k not in keys]:
        near = {k: difflib.get_close_matches(k, keys, 1) for k in unknown}
        raise UserError("no such tune setting: " + ", ".join(
            f"{k}" + (f" (did you mean {near[k][0]}?)" if near[k] else "") for k in unknown)
            + f". The settings are {', '.join(keys)}.")  # fmt: skip
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Search), OmegaConf.from_dotlist(mine))
    except OmegaConfBaseException as e:
        raise UserError(f"tune.{e.full_key}: {e.msg.splitlines()[0]}") from None  # (a type)
    s = Search(**OmegaConf.to_container(merged))
    rules = [(s.pruner in PRUNERS, f"tune.pruner={s.pruner}: use one of {', '.join(PRUNERS)}"),
             (s.n_trials >= 0, f"tune.n_trials={s.n_trials}: 0 or more (0: the summary only)"),
             (s.workers >= 1, f"tune.workers={s.workers}: 1 or more"),
             (bool(s.study.strip()) and "/" not in s.study and not s.study.startswith("."),
              f"tune.study={s.study!r}: a name, not a path (it becomes a directory)")]  # fmt: skip
    if bad := [why for ok, why in rules if not ok]:
        raise UserError("; ".join(bad) + ".")
    return s, rest


def load_space(name: str) -> dict[str, dict]:
    """conf/tune/space/<name>.yaml, or a YAML file of the user's: per key a distribution,
    checked."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from train.config import CONF_DIR

    folder = Path(CONF_DIR) / "tune" / "space"
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.yaml"))
        raise UserError(f"tune.space={name}: no {path}; use one of {have} or a YAML file.")
    try:
        space = OmegaConf.to_container(OmegaConf.load(path))
    except (OSError, OmegaConfBaseException, ValueError) as e:
        raise UserError(f"tune.space={name}: {path} is not readable YAML ({e}).") from None
    if not isinstance(space, dict) or not space:
        raise UserError(f"tune.space={name}: {path} names no keys to search.")
    for key, d in space.items():
        if why := _not_a_distribution(d):
            raise UserError(f"{path}: {key}: {why}. Write {{type: float, low: 1e-4, high: 0.1, "
                            "log: true}, {type: int, low: 32, high: 256, step: 32} or {type: "
                            "categorical, choices: [adam, sgd]}.")  # fmt: skip
    return space


def _not_a_distribution(d) -> str | None:
    """What is wrong with a space entry, or None."""
    if not isinstance(d, dict) or d.get("type") not in KINDS:
        kind = d.get("type") if isinstance(d, dict) else d
        return f"type {kind!r} is not one of {', '.join(KINDS)}"
    if d["type"] == "categorical":
        ok = isinstance(d.get("choices"), list) and d["choices"]
        return None if ok else f"choices {d.get('choices')!r} is not a non-empty list"
    low, high = d.get("low"), d.get("high")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        return f"low {low!r} and high {high!r} must both be numbers"
    if not low < high:
        return f"low {low} must be below high {high}"
    if d.get("log") and low <= 0:
        return f"a log scale needs low > 0, not {low}"
    return None


def check_space(space: dict[str, dict], compose) -> None:
    """Refuse, before any trial, a group choice that is no option of its group and a key that
    no option of its group has (a typo would otherwise search nothing, silently)."""
    from train.config import CONF_DIR

    def options(group: str) -> list[str]:
        return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))

    for key, d in space.items():
        if "." not in key:
            if not options(key):
                raise UserError(f"tune.space: {key} is not a config group; groups are searched "
                                "by name (optim, model, sched, ...) and values by key "
                                "(optim.lr).")  # fmt: skip
            if bad := [c for c in d.get("choices", []) if str(c) not in options(key)]:
                raise UserError(f"tune.space: {key}: {bad} not among its options "
                                f"{options(key)}.")  # fmt: skip
        elif not any(_has(compose([f"{key.split('.')[0]}={o}"]), key)
                     for o in options(key.split(".")[0]) or [None]):  # fmt: skip
            raise UserError(f"tune.space: {key} is in no {key.split('.')[0]} config (a typo?); "
                            "python -m train --cfg job lists the keys.")  # fmt: skip


def _has(cfg, key: str) -> bool:
    from omegaconf import OmegaConf

    absent = object()
    return OmegaConf.select(cfg, key, default=absent) is not absent


def suggest(trial, space: dict[str, dict], compose) -> list[str]:
    """The trial's overrides: group choices first (optim, model, ...), then a value for each
    key the config they make has (model.dropout is left out for a linear model)."""
    groups = [_draw(trial, k, d) for k, d in space.items() if "." not in k]
    cfg = compose(groups)
    keys = [_draw(trial, k, d) for k, d in space.items() if "." in k and _has(cfg, k)]
    return groups + keys


def _draw(trial, key: str, d: dict) -> str:
    if d["type"] == "categorical":  # (lists as Hydra writes them: Optuna stores plain values)
        value = trial.suggest_categorical(key, [c if isinstance(c, str | int | float | bool)
                                                else _hydra(c) for c in d["choices"]])  # fmt: skip
    elif d["type"] == "int":
        value = trial.suggest_int(key, d["low"], d["high"], step=d.get("step", 1),
                                  log=d.get("log", False))  # fmt: skip
    else:
        value = trial.suggest_float(key, d["low"], d["high"], log=d.get("log", False))
    return f"{key}={value}"


def _hydra(value) -> str:
    """A list or mapping as a Hydra override writes it: [128,64], {a:1}."""
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra(v)}" for k, v in value.items()) + "}"
    return str(value)


class TrialFailed(Exception):
    """A trial's config error (its UserError): the trial is FAIL with it, the study goes on."""


class Report(Callback):
    """A trial's monitored value to the study every epoch; stops the trial when the pruner
    says so (the run then ends as an early stop does: checkpoints, metrics.json)."""

    def __init__(self, trial, monitor: str):
        self.trial, self.monitor, self.pruned, self.epoch = trial, monitor, False, 0

    def on_epoch_end(self, state, epoch) -> None:
        watched = epoch.results.get("val", epoch.results["train"])  # (as the loop monitors)
        self.trial.report(watched[self.monitor], epoch.number)
        self.epoch = epoch.number
        if not epoch.final and self.trial.should_prune():
            self.pruned = True
            logging.getLogger("train").info(
                "pruned by the study after epoch %d: %s is behind the other trials'",
                     epoch.number, self.monitor)  # fmt: skip

    def should_stop(self, state, epoch=None) -> bool:
        return self.pruned  # (asked after on_epoch_end set it: before the next epoch)


def open_study(directory: Path, s: Search, monitor: str, mode: str):
    """The study at directory/study.db (or tune.storage), made if new, with heartbeats, the
    retry of stale trials and the configured pruner. A study keeps what it optimises: another
    trainer.monitor or monitor_mode is refused (not for the summary alone, n_trials=0)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # (our log says what happens)
    storage = _storage(directory, s)
    known = [x.study_name for x in optuna.get_all_study_summaries(storage)]
    if s.study not in known and s.n_trials == 0:
        raise UserError(f"no study {s.study} in {storage.url}: nothing to summarise yet.")
    direction = "minimize" if mode == "min" else "maximize"
    study = optuna.create_study(study_name=s.study, storage=storage, load_if_exists=True,
                                direction=direction, pruner=_pruner(s))  # fmt: skip
    if s.study not in known:
        study.set_user_attr("monitor", monitor)
        study.set_user_attr("monitor_mode", mode)
    had = study.user_attrs.get("monitor", monitor), study.user_attrs.get("monitor_mode", mode)
    if s.n_trials and had != (monitor, mode):
        raise UserError(f"study {s.study} optimises {had[0]} ({had[1]}); this command's is "
                        f"{monitor} ({mode}). Give trainer.monitor={had[0]} "
                        f"trainer.monitor_mode={had[1]} to continue it, or another "
                        "tune.study.")  # fmt: skip
    # A sampler seeded anew on every call (and worker): a continued study draws new trials.
    if s.seed is not None:
        seed = s.seed + 7919 * len(study.trials) + 104729 * int(os.environ.get(WORKER, 0))
        study.sampler = optuna.samplers.TPESampler(seed=seed)
    return study


def _storage(directory: Path, s: Search):
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    return RDBStorage(s.storage or f"sqlite:///{directory / 'study.db'}",
                      engine_kwargs={"connect_args": {"timeout": 60}},
                      heartbeat_interval=s.heartbeat_s, grace_period=4 * s.heartbeat_s,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                          max_retry=3))  # fmt: skip


def _pruner(s: Search):
    import optuna

    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.startup_trials,
                                           n_warmup_steps=s.warmup_epochs)  # fmt: skip
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=s.warmup_epochs)
    return optuna.pruners.NopPruner()


def objective(trial, base: list[str], space: dict, study_dir: Path, monitor: str):
    """One trial: a run of `base` plus the trial's parameters, in study_dir/trial-<k>/."""
    import optuna

    params = suggest(trial, space, lambda groups: compose([*base, *groups]))
    run_dir = study_dir / f"trial-{trial.number}"
    run_dir.mkdir()
    trial.set_user_attr("run_dir", str(run_dir))
    log.info("trial %d: %s", trial.number, " ".join(params) or "(the config as given)")
    report = Report(trial, monitor)
    try:
        value = run_trial([*base, *params], run_dir, report)
    except UserError as e:  # (a SystemExit: Optuna would let it end the study)
        trial.set_user_attr("error", e.message)
        _mark(run_dir, trial, "FAIL", params, error=e.message)
        log.info("trial %d failed: %s", trial.number, e.message)
        raise TrialFailed(e.message) from None
    except SystemExit as e:  # a signal: the run saved and said so; the trial ends FAIL now
        _mark(run_dir, trial, "FAIL", params, error=f"interrupted (exit {e.code})")
        raise Interrupted(e.code) from None
    state = "PRUNED" if report.pruned else "COMPLETE"
    _mark(run_dir, trial, state, params, value=value)
    log.info("trial %d %s after %d epoch(s): %s %.4g (%s)", trial.number, state.lower(),
             report.epoch, monitor, value, run_dir)  # fmt: skip
    if report.pruned:
        raise optuna.TrialPruned(f"pruned after epoch {report.epoch}")
    return value


PARENT_ATTR = "mlflow_parent"  # the study's MLflow parent run, kept in the study


def _tracked_under(study, cfg, base: list[str]) -> list[str]:
    """With MLflow among the loggers: the study's parent run (made by the first call, its ids
    kept in the study for its workers and later calls), for each trial to be a child of."""
    if cfg.logger.mlflow is None:
        return []
    from train.loggers import tracking

    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is None:
        parent = tracking.parent_run(cfg.logger.mlflow, cfg.paths.runs_dir,
                                     f"study {study.study_name}",
                                     {"train.study": study.study_name},
                                     _experiment(base))  # fmt: skip
        study.set_user_attr(PARENT_ATTR, parent)
    return [f"logger.mlflow.parent_run_id={parent['run_id']}"]


def _experiment(base: list[str]) -> str:
    """The experiment the study's trials name (the run's name by default: resolved, as a
    trial's is, with Hydra's runtime choices)."""
    from hydra.core.hydra_config import HydraConfig

    composed = compose(base, hydra=True)
    HydraConfig.instance().set_config(composed)
    return str(composed.logger.mlflow.experiment)


def _end_parent(study, cfg, status: str) -> None:
    """The study's parent run ended (by the command that started the trials, not a worker)."""
    if cfg.logger.mlflow is not None and PARENT_ATTR in study.user_attrs \
            and not os.environ.get(WORKER):  # fmt: skip
        from train.loggers import tracking

        m = cfg.logger.mlflow
        tracking.tag(study.user_attrs[PARENT_ATTR], {}, status, m.retries, m.timeout_s)


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM during a trial: Optuna marks the trial FAIL at once (not RUNNING until
    its heartbeat goes stale), then the command exits with the signal's code."""


def compose(overrides: list[str], hydra: bool = False):
    """A trial's config; Hydra's errors as one paragraph."""
    from train import config

    return config.checked(overrides, hydra=hydra)


def run_trial(overrides: list[str], run_dir: Path, report: Report) -> float:
    """`python -m train overrides...` into `run_dir`, in this process; the monitored value of
    its best weights. Its log also goes to run_dir/train.log, as Hydra's would."""
    from train import app
    from train.run.claims import Claims
    from train.run.rundir import RunDir

    claims = Claims().register()  # (this trial's: run_dir is the trial's own)
    cfg = compose(overrides, hydra=True)
    handler = RunDir(run_dir).log_handler()
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        return app.train_composed(cfg, claims, run_dir, callbacks=[report])[1]
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _mark(run_dir: Path, trial, state: str, params: list[str], **more) -> None:
    """tune.json in the trial's run dir: which study and trial it was, and how it ended; the
    same as tags on its MLflow run, if it has one (a pruned trial's: train.trial_state)."""
    from train.run.rundir import RunDir

    run = RunDir(run_dir)
    run.write_json("tune.json", {"study": trial.study.study_name, "trial": trial.number,
                                 "state": state, "params": params, **more})  # fmt: skip
    ids = _mlflow_ids(run)
    if ids is not None:
        from train.loggers import tracking

        tracking.tag(ids, {"train.study": trial.study.study_name, "train.trial": trial.number,
                           "train.trial_state": state})  # fmt: skip


def _mlflow_ids(run) -> dict | None:
    """The trial's MLflow run ({run_id, tracking_uri}), as its run.json recorded it."""
    from train.errors import UserError as Refused

    try:
        tracking = run.records()[-1].tracking if any(run.path.glob("run*.json")) else None
    except Refused:
        return None
    return (tracking or {}).get("mlflow")


def run_workers(argv: list[str], s: Search) -> None:
    """tune.workers=K: K processes of this command on one study, the trials shared out; one
    GPU each where there are GPUs, else an equal share of the CPU cores each."""
    import torch

    from train.system.device import cpu_budget

    shares = [s.n_trials // s.workers + (i < s.n_trials % s.workers) for i in range(s.workers)]
    threads, gpus = max(1, cpu_budget()[0] // s.workers), torch.cuda.device_count()
    args = [a for a in argv if not a.startswith(("tune.workers=", "tune.n_trials="))]
    procs = []
    for i, n in enumerate(x for x in shares if x):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), WORKER: str(i)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        cmd = [sys.executable, "-m", "train.tune", *args, "tune.workers=1", f"tune.n_trials={n}"]
        procs.append(subprocess.Popen(cmd, env=env))
    gpu = f", GPU {', '.join(str(i % gpus) for i in range(len(procs)))}" if gpus else ""
    log.info("%d workers, %s trials each, %d CPU thread(s)%s each", len(procs),
             "/".join(str(n) for n in shares if n), threads, gpu)  # fmt: skip
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    if any(codes):
        log.warning("worker exit codes: %s", codes)


WORKER = "TRAIN_TUNE_WORKER"  # set in a worker process: it leaves the summary to its parent


def summarize(study, study_dir: Path, base: list[str]) -> dict | None:
    """The best trial (value, parameters, run dir, the command that retrains it), printed and
    written to summary.json, with the optimisation history as history.png."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {st.name: n for st in TrialState if (n := sum(t.state == st for t in trials))}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        print(f"study {study.study_name}: no completed trial yet ({counts or 'none'})")
        return None
    best = study.best_trial
    params = [f"{k}={v}" for k, v in best.params.items()]
    command = shlex.join(["python", "-m", "train", *_trained_with(best, [*base, *params])])
    summary = {"study": study.study_name, "direction": study.direction.name.lower(),
               "trials": counts, "best": {"trial": best.number, "value": best.value,
                                          "params": best.params,
                                          "run_dir": best.user_attrs.get("run_dir"),
                                          "command": command}}  # fmt: skip
    from train.run.files import write_json

    write_json(study_dir / "summary.json", summary)
    history_png(trials, study.direction.name == "MINIMIZE", study_dir / "history.png")
    print(f"study {study.study_name}: {len(trials)} trials "
          f"({', '.join(f'{n} {k.lower()}' for k, n in counts.items())})")  # fmt: skip
    print(f"best: trial {best.number}, value {best.value:.4g}, {' '.join(params)}")
    print(f"run dir: {best.user_attrs.get('run_dir')}")
    print(f"retrain it: {command}")
    return summary


def _trained_with(trial, fallback: list[str]) -> list[str]:
    """The overrides the trial's run recorded (its run.json): what retrains it, whatever a
    later call of the study was given."""
    from train.run.rundir import RunDir

    run = trial.user_attrs.get("run_dir")
    try:
        return RunDir(run).records()[0].overrides if run else fallback
    except UserError:
        return fallback


def history_png(trials, minimize: bool, path: Path) -> None:
    """Each finished trial's value (pruned ones at their last report, grey) and the best so
    far, against the trial number."""
    from optuna.trial import TrialState
    from PIL import Image, ImageDraw

    points = [(t.number, t.value if t.state == TrialState.COMPLETE else
               t.intermediate_values[max(t.intermediate_values)], t.state == TrialState.COMPLETE)
              for t in trials if t.state == TrialState.COMPLETE or
              (t.state == TrialState.PRUNED and t.intermediate_values)]  # fmt: skip
    w, h, pad = 640, 400, 48
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lo, hi = min(ys), max(ys)
    span_x, span_y = max(max(xs) - min(xs), 1), max(hi - lo, 1e-12)

    def at(x, y):
        return (pad + (x - min(xs)) / span_x * (w - 2 * pad),
                h - pad - (y - lo) / span_y * (h - 2 * pad))  # fmt: skip

    draw.rectangle([pad, pad, w - pad, h - pad], outline="black")
    best, line = None, []
    for x, y, complete in points:
        cx, cy = at(x, y)
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill="#1f77b4" if complete else "#aaaaaa")
        if complete and (best is None or (y < best if minimize else y > best)):
            best = y
        if best is not None:
            line.append(at(x, best))
    if len(line) > 1:
        draw.line(line, fill="#d62728", width=2)
    draw.text((pad, 8), f"objective by trial (red: best so far; grey: pruned); {lo:.4g} .. "
                        f"{hi:.4g}", fill="black")  # fmt: skip
    draw.text((pad, h - pad + 8), f"trial {min(xs)} .. {max(xs)}", fill="black")
    img.save(path)


def main(argv: list[str]) -> None:
    import warnings

    import optuna

    # Heartbeats and their retry are "experimental" in Optuna since 2.8: said once, here.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from train import app

    # The console: this module's lines and warnings; each trial's whole log in its train.log.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger().handlers[0].addFilter(
        lambda r: r.name == log.name or r.levelno >= logging.WARNING
    )
    s, base = settings_of(argv)
    cfg = compose(base)  # every trial's config: checked once, before any trial
    app.check(cfg)
    space = load_space(s.space)
    if s.n_trials:
        check_space(space, lambda extra: compose([*base, *extra]))
    study_dir = Path(cfg.paths.runs_dir) / "tune" / s.study
    study_dir.mkdir(parents=True, exist_ok=True)
    monitor, mode = cfg.trainer.monitor, cfg.trainer.monitor_mode.value
    study = open_study(study_dir, s, monitor, mode)
    optuna.storages.fail_stale_trials(study)  # (a dead worker's trials: FAIL, then retried)
    base = [*base, *_tracked_under(study, cfg, base)]
    try:
        if s.workers > 1 and s.n_trials > 1:
            run_workers(argv, s)
        elif s.n_trials:
            study.optimize(lambda t: objective(t, base, space, study_dir, monitor),
                           n_trials=s.n_trials, catch=(TrialFailed,))  # fmt: skip
    except Interrupted as e:
        print("the study was interrupted: its trial is FAIL; the same command goes on with new "
              "trials", flush=True)  # fmt: skip
        _end_parent(study, cfg, "KILLED")
        raise SystemExit(e.args[0] if e.args else 130) from None
    _end_parent(study, cfg, "FINISHED")
    if not os.environ.get(WORKER):
        summarize(study, study_dir, base)


def cli() -> None:
    """The console script (pyproject's [project.scripts]) and `python -m train.tune`."""
    run_entrypoint(lambda: main(sys.argv[1:]), usage=__doc__)


if __name__ == "__main__":
    cli()
