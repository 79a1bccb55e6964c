"""`python -m train`: the Hydra main. The only code that sees the whole config: it builds plain
objects from it and hands them to plain functions. Torch-heavy modules load lazily, so that
`--help` and config errors answer fast."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from train import config
from train.config import cmdline, schema
from train.errors import UserError, run_entrypoint
from train.run.claims import Claims
from train.run.rundir import RunDir
from train.system import distributed, signals
from train.system.container import not_found

log = logging.getLogger("train")


def main() -> None:
    """Console entry: run the Hydra app, turning a UserError into one paragraph and exit 2.
    Under torchrun, join the other ranks first: they agree on the run dir with rank 0."""
    entry = _start_and_run
    if distributed.ranks().many:  # a crash's traceback reaches torchrun's failure report
        from torch.distributed.elastic.multiprocessing.errors import record

        entry = record(entry)
    config.register()  # (the schemas: a sweep's jobs in other processes get them from Hydra)
    claims = Claims().register()  # (this invocation's run dirs: Hydra's resolvers ask it)
    signals.until_training(claims.discard_unstarted)  # before the loop: 143/130, dir removed
    try:
        run_entrypoint(lambda: entry(claims), on_error=claims.discard_unstarted)
    finally:
        distributed.finish()


def _start_and_run(claims: Claims) -> float | None:
    if distributed.ranks().many and {"-m", "--multirun"} & set(sys.argv[1:]):
        raise UserError(
            "a sweep (-m) cannot run under torchrun: every rank would launch every job. Run the "
            "sweep with python -m train -m ... (hydra/launcher=joblib runs jobs in parallel, one "
            "GPU each), or start torchrun once per configuration."
        )
    if distributed.ranks().many:  # a worker torchrun restarted: continue the job's run
        from train.run import elastic

        flags, given = cmdline.split_args(sys.argv[1:])
        sys.argv[1:] = [*flags, *elastic.continued(given, _compose)]
    flags, given = cmdline.split_args(sys.argv[1:])
    primary = Path(config.CONF_DIR) / "config.yaml"
    cmdline.check(given, schema.Config, primary)
    if {"-m", "--multirun"} & set(flags) and {"--cfg", "-c"} & set(flags):
        raise UserError(
            "--cfg prints one run's config, and a sweep (-m) is one run per job: leave out -m "
            "and give one value per key to see that job's (python -m train --cfg job "
            "optim=adam data.batch_size=32)."
        )
    if {"--help", "-h"} & set(flags):  # (ours: Hydra's takes seconds, listing every group)
        print(cmdline.help_text(given, primary), end="")
        return 0
    sys.argv[1:] = _rebuilt(sys.argv[1:])
    distributed.start()
    return _hydra_task(claims)()


def _rebuilt(argv: list[str]) -> list[str]:
    """The command line to run. For resume=<run dir or checkpoint>: the run's own recorded
    overrides, then this command line's; refused (before Hydra writes a thing into the run
    dir) when that would change more than how long and where the run trains."""
    from train.config import rebuild

    flags, given = cmdline.split_args(argv)
    where = cmdline.resume_value(given)
    if where in (None, "auto", "null") or {"-m", "--multirun"} & set(flags):
        return argv
    return rebuild.rebuild(flags, given, where, _compose)


def _compose(overrides: list[str]) -> DictConfig:
    """The job config these overrides give, composed without running anything."""
    return config.checked(overrides, doing="the run's config cannot be rebuilt")


def _hydra_task(claims: Claims):
    """The Hydra main of this invocation: each job (a run, a sweep's job) trains with the
    invocation's `claims`, which a job in another process gets a fresh copy of."""

    @hydra.main(config_path=config.CONF_DIR, config_name="config", version_base="1.3")
    def task(cfg: DictConfig) -> float | None:
        from hydra.types import RunMode

        distributed.start()  # (done in main; a SLURM job's tasks start here, from the launcher)
        hydra_cfg = HydraConfig.get()
        runtime = hydra_cfg.runtime
        overrides = list(hydra_cfg.overrides.task)
        job = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None
        return train(cfg, Path(runtime.output_dir), dict(runtime.choices), overrides, job,
                     claims=claims)  # fmt: skip

    return task


def train(cfg: DictConfig, run_dir: Path, choices: dict, overrides: list[str],
          job: int | None = None, callbacks=(), model=None, started: float | None = None,
          claims: Claims | None = None) -> float | None:  # fmt: skip
    """Train the configured pipeline into `run_dir`; return the monitored metric (for sweeps).
    `callbacks`: more fit.loop.Callbacks on rank 0 (train.tune's reporting); `model`: an
    nn.Module class or object in place of the configured model (train.api); `started`: when
    the run was asked for (time.perf_counter; None: the process's start); `claims`: the
    invocation's run dirs (train.run.claims: it may hold this one's lock already). Every lock
    it holds is let go at the end."""
    claims = claims if claims is not None else Claims()
    importing = _import_in_background("torch._dynamo")  # the first optimizer call needs it
    try:
        return _train(cfg, run_dir, choices, overrides, claims, job, list(callbacks), model,
                      started)  # fmt: skip
    finally:
        claims.release()
        importing.join()  # (an import still running at exit aborts the interpreter)


def train_composed(cfg: DictConfig, claims: Claims, run_dir: Path | None = None,
                   callbacks=(), model=None,
                   started: float | None = None) -> tuple[Path, float | None]:  # fmt: skip
    """Train, in this process, a config composed with its hydra node (config.compose(...,
    hydra=True), its `${train.*}` resolved by `claims`) as the Hydra main does: the choices
    and overrides from that node, the run dir its hydra.run.dir unless given. The run dir and
    the monitored value. (train.tune's trials, train.api, the tests.)"""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    HydraConfig.instance().set_config(cfg)
    run_dir = run_dir if run_dir is not None else Path(cfg.hydra.run.dir)
    choices, overrides = dict(cfg.hydra.runtime.choices), list(cfg.hydra.overrides.task)
    with open_dict(cfg):
        del cfg["hydra"]
    return run_dir, train(cfg, run_dir, choices, overrides, callbacks=callbacks, model=model,
                          started=started, claims=claims)  # fmt: skip


def _train(cfg: DictConfig, run_dir: Path, choices: dict, overrides: list[str], claims: Claims,
           job: int | None = None, extra: list | None = None, model=None,
           started: float | None = None) -> float | None:  # fmt: skip
    """Train the configured pipeline into `run_dir`; return the monitored metric (for sweeps).

    `choices` are the config groups' chosen options, `overrides` the command line's (recorded),
    `job` a sweep job's number (it spreads parallel jobs over the GPUs). Under torchrun, every
    rank runs this; rank 0 alone writes, and alone scores the result at the end.
    """
    from train import build
    from train.fit import callbacks, loop, outcome
    from train.loggers import FAILED, FINISHED, STOPPED

    goals = check(cfg)
    ranks = distributed.ranks()
    if not ranks.main:  # one voice on the console: the other ranks say only what goes wrong
        logging.getLogger().setLevel(logging.WARNING)
    if ranks.main:
        claims.lock(run_dir)  # (a sweep's job dir; a plain run's is locked since its creation)
    for note in claims.notes:  # what resume=auto looked at
        log.info("%s", note)
    source = claims.source(cfg.paths.runs_dir, cfg.name, cfg.resume, cfg)
    run = build.build(cfg, RunDir(run_dir), source, choices, overrides, job, model)
    s, timing, results = run.loop.settings, callbacks.Timing(started=started), None
    early = callbacks.EarlyStopping(s.patience, s.monitor)
    guard = callbacks.NonFiniteGuard(s.skip_nonfinite)
    deciding = [callbacks.SignalStop(run.loop.stop), early, guard]  # every rank's
    callbacks.restore(deciding, run.callback_states, run.source)  # (a resumed run's go on)
    status = FAILED
    try:
        _begin(run)
        with run.loop.stop as stop:  # SIGTERM/SIGINT: finish the step, checkpoint, 143/130
            state = loop.fit(run.loop, run.state, _callbacks(run, deciding, timing, extra or []))
            interrupted = bool(stop)  # (a signal after this lets the scoring below finish)
            if ranks.main and not stop:
                params = outcome.hparams(run.config, choices, overrides, run_dir)
                results = outcome.score_and_report(run, state, timing.to_dict(run.device),
                                                   params, guard.skipped)  # fmt: skip
        status = STOPPED if interrupted else FINISHED
    finally:
        run.loggers.finish(status, (lambda: _kept(run)) if status == FINISHED else None)
    signals.after_training()
    if stop:
        _stopped(stop, interrupted, state, run_dir)
    return outcome.conclude(run, state, results, goals, early.stopped) if ranks.main else None


def _begin(run) -> None:
    """Rank 0, as training starts: the loggers started (MLflow's run opened), this
    invocation's run.json written (with where the loggers keep the run), the model's summary."""
    from train.models import layers

    if not run.ranks.main:
        return
    run.loggers.start(run.record, run.state.step if run.resumed else None)
    run.record.tracking = run.loggers.ids()
    run.dir.add_record(run.record)
    if not run.resumed:
        layers.describe(run.model, run.data.in_shape, run.dir, run.loggers)


def _kept(run) -> dict[str, bytes]:
    """What a finished run's loggers keep with it (MLflow's artifacts), by name."""
    return run.dir.contents("checkpoints/best.pt", "summary.txt", "metrics.json")


def _callbacks(run, deciding: list, timing, extra: list) -> list:
    """The loop's callbacks: `deciding` (every rank's), then on rank 0 what reports and saves,
    and `extra` (the other ranks train and agree, and say only what goes wrong)."""
    from train.fit import callbacks

    if not run.ranks.main:
        return deciding
    loop, s = run.loop, run.loop.settings

    def payload(state, copy=False):
        return run.saver.payload(run.model, loop.optimizer, loop.scheduler, loop.scaler, state,
                                 callbacks.states(deciding), copy)  # fmt: skip

    return [
        *deciding,
        callbacks.Curves(run.loggers, s.log_every_n_steps, loop.task.loss_scale),
        callbacks.Console(s.max_epochs, s.print_every_s),
        callbacks.Checkpoints(
            payload, run.saver.write, run.checkpoint_every_s, run.loggers.flush
        ),  # fmt: skip
        timing,
        *extra,
    ]


def _stopped(stop, interrupted: bool, state, run_dir: Path):
    """A signal stopped the run: say what is saved (rank 0; in train.log too, which says why
    the run ended even when it stopped at an epoch's end), exit 143/130."""
    if distributed.ranks().main and interrupted:
        log.info("stopped by %s at step %d; checkpoints/last.pt is saved, resume=%s continues "
                 "the run", stop.name, state.step, run_dir)  # fmt: skip
    elif distributed.ranks().main:  # training had finished: nothing to resume
        log.info("stopped by %s after training finished (step %d); its checkpoints and "
                 "metrics.json are complete; python -m train.evaluate run=%s scores it again",
                 stop.name, state.step, run_dir)  # fmt: skip
    sys.exit(stop.exit_code)


def check(cfg: DictConfig) -> list[tuple[str, str, float]]:
    """What the schema alone cannot catch, before any work: values left to the user (???),
    keys no schema knows (added with +), and `expect:` lines; the parsed expectations."""
    path = cfg.data.get("path") if "path" in cfg.data and not schema.is_missing(cfg.data, "path") \
        else None  # fmt: skip
    if path is not None and not Path(path).exists():  # (before asking for data.target)
        raise UserError(not_found("data.path", path))
    schema.require_given(cfg)
    if unknown := schema.unknown_keys(cfg):
        raise UserError(
            f"no such config key: {', '.join(unknown)}. A key added with + is not checked by "
            "Hydra and would be ignored; python -m train --cfg job lists every key."
        )
    return [_expectation(key, goal) for key, goal in cfg.expect.items()]


def _expectation(key: str, goal) -> tuple[str, str, float]:
    """An `expect:` line, e.g. `test/accuracy: ">= 0.95"`: a split/metric, >= or <=, a number."""
    parts = str(goal).split()
    try:
        ok = len(parts) == 2 and parts[0] in (">=", "<=") and key.count("/") == 1
        target = float(parts[1]) if ok else None
    except ValueError:
        ok = False
    if not ok:
        raise UserError(
            f'expect: {key}: {goal!r} is not an expectation; write <split>/<metric>: ">= 0.95" '
            'or "<= 0.3" (only >= and <=, then a number).'
        )
    return key, parts[0], target


def _import_in_background(name: str):
    """Import `name` on a thread while data loads: torch ops release the GIL, so the two
    overlap (~1 s here). The first use waits on Python's import lock until it is done. The
    thread, to join before the process exits."""
    import importlib
    import threading

    thread = threading.Thread(target=importlib.import_module, args=(name,), daemon=True)
    thread.start()
    return thread
