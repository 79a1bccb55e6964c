"""`python -m train`: the Hydra main. The only code that sees the whole config: it builds plain
objects from it and hands them to plain functions. Torch-heavy modules load lazily, so that
`--help` and config errors answer fast."""

import contextlib
import logging
import os
import random
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from train import config, distributed, rundir, signals, targets
from train.errors import UserError, run_entrypoint

log = logging.getLogger("train")

# At import, not in main(): a parallel sweep launcher (joblib) runs jobs in fresh processes,
# which import this module to find the task function but never call main().
config.register()
rundir.register_resolvers()


def main() -> None:
    """Console entry: run the Hydra app, turning a UserError into one paragraph and exit 2.
    Under torchrun, join the other ranks first: they agree on the run dir with rank 0."""
    entry = _start_and_run
    if distributed.ranks().many:  # a crash's traceback reaches torchrun's failure report
        from torch.distributed.elastic.multiprocessing.errors import record

        entry = record(entry)
    signals.until_training()  # a signal before the loop starts: 143/130, the run dir removed
    try:
        run_entrypoint(entry, on_error=rundir.discard_unstarted)
    finally:
        for thread in _background:  # an import still running at exit aborts the interpreter
            thread.join()
        distributed.finish()


def _start_and_run() -> float | None:
    if distributed.ranks().many and {"-m", "--multirun"} & set(sys.argv[1:]):
        raise UserError(
            "a sweep (-m) cannot run under torchrun: every rank would launch every job. Run the "
            "sweep with python -m train -m ... (hydra/launcher=joblib runs jobs in parallel, one "
            "GPU each), or start torchrun once per configuration."
        )
    sys.argv[1:] = _rebuilt(sys.argv[1:])
    distributed.start()
    return _hydra_main()


def _rebuilt(argv: list[str]) -> list[str]:
    """The command line to run. For resume=<run dir or checkpoint>: the run's own recorded
    overrides, then this command line's; refused (before Hydra writes a thing into the run
    dir) when that would change more than how long and where the run trains."""
    from train import resume

    flags, given = resume.split_args(argv)
    where = resume.resume_value(given)
    if where in (None, "auto", "null") or {"-m", "--multirun"} & set(flags):
        return argv
    return resume.rebuild(flags, given, where, _compose)


def _compose(overrides: list[str]) -> DictConfig:
    """The job config these overrides give, composed without running anything."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("config", overrides=overrides)
    except HydraException as e:
        raise UserError(f"the run's config cannot be rebuilt: {' '.join(str(e).split())}") from None


# An absolute path: run as `python -m train`, Hydra would look for a Python package named conf.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    runtime = hydra_cfg.runtime
    overrides = list(hydra_cfg.overrides.task)
    job = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None
    return train(cfg, Path(runtime.output_dir), dict(runtime.choices), overrides, job)


def train(
    cfg: DictConfig, run_dir: Path, choices: dict, overrides: list[str], job: int | None = None
) -> float | None:
    """Train the configured pipeline into `run_dir`; return the monitored metric (for sweeps).
    The run dir's lock is let go at the end (see `_train`)."""
    try:
        return _train(cfg, run_dir, choices, overrides, job)
    finally:
        rundir.release()


def _train(
    cfg: DictConfig, run_dir: Path, choices: dict, overrides: list[str], job: int | None = None
) -> float | None:
    """Train the configured pipeline into `run_dir`; return the monitored metric (for sweeps).

    `choices` are the config groups' chosen options, `overrides` the command line's (recorded),
    `job` a sweep job's number (it spreads parallel jobs over the GPUs). Under torchrun, every
    rank runs this; rank 0 alone writes, and alone scores the result at the end.
    """
    from train import board, checkpoint, doctor, loop, models, record, report
    from train import device as devices
    from train.batches import Batches, Normalizer
    from train.signals import StopRequest
    from train.task import Task

    goals = _check(cfg)
    _import_in_background("torch._dynamo")  # the first optimizer call needs it: ~1 s here
    ranks = distributed.ranks()
    if not ranks.main:  # one voice on the console: the other ranks say only what goes wrong
        logging.getLogger().setLevel(logging.WARNING)
    if ranks.main:
        rundir.lock(run_dir)  # (a sweep's job dir; a plain run's is locked since its creation)
    for note in rundir.notes:  # what resume=auto looked at
        log.info("%s", note)
    source = rundir.resume_source(cfg.paths.runs_dir, cfg.name, cfg.resume)
    if source is None and ranks.main and (run_dir / "checkpoints").exists():  # two sweeps in 1 s
        raise UserError(f"{run_dir} already holds a run's checkpoints; refusing to overwrite them.")
    resumed = checkpoint.load(source) if source is not None else None
    seed = distributed.agreed(lambda: _draw_seed(cfg.seed, resumed))  # seed=null: rank 0 draws
    _seed(seed)
    if cfg.trainer.deterministic:
        _deterministic()
    slot = ranks.local if ranks.many else job
    device, why = devices.choose(cfg.trainer.device, slot, shared=not ranks.many)
    if not ranks.many and (threads := devices.use_cpu_budget()) is not None:
        log.info("%s", threads)  # (torchrun sets OMP_NUM_THREADS for its ranks)
    if cfg.trainer.compile:
        _need_compiler(device)
    scaler, autocast = _precision(cfg.trainer.amp.value, device)
    log.info("run dir: %s", run_dir)
    log.info("device: %s (%s); seed %d", device, why, seed)
    if ranks.many:
        log.info("torchrun: %d ranks (%s), data.batch_size=%d per rank, %d in all per step",
                 ranks.world, distributed.backend(), cfg.data.batch_size,
                 cfg.data.batch_size * ranks.world)  # fmt: skip
    workers = OmegaConf.select(cfg, "data.num_workers", default=0)  # only image_folder has it
    for warning in doctor.warnings(Path(cfg.paths.data_dir), workers):
        log.warning("warning: %s", warning)

    with distributed.main_first():  # downloads and caches: written once, by rank 0
        data = targets.instantiate("data", cfg.data)
    task = Task.of(data)
    settings = _settings(cfg.trainer, task, quiet=not ranks.main)
    model = targets.instantiate("model", cfg.model, in_shape=data.in_shape,
                                num_outputs=data.num_outputs)  # fmt: skip
    models.check_fits(model, data.task, data.num_classes)
    memory_format = _memory_format(cfg.trainer, model)
    model.to(device, memory_format=memory_format)
    optimizer = _optimizer(cfg.optim, model)
    scheduler = None if cfg.sched is None else targets.instantiate("sched", cfg.sched)(optimizer)

    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    config["seed"] = seed
    if ranks.main:
        report.write_json(
            report.unused_path(run_dir / "run.json"),
            record.collect(
                config, overrides, seed, device, cfg.trainer.deterministic, data.fingerprint
            ),  # fmt: skip
        )
    saver = checkpoint.Saver(run_dir / "checkpoints", config, data.meta().to_dict(), choices)
    state = loop.State()
    if resumed is not None:
        restored = saver.restore(resumed, source, model, optimizer, scheduler, scaler)
        state = loop.State(**restored)
        log.info("resuming from epoch %d, step %d", state.epoch, state.step)
    _log_data(data, model)

    norm = Normalizer(data, device, memory_format)
    shard = {"rank": ranks.rank, "world": ranks.world}
    train_b = Batches(data.train, data.batch_size, norm, device, **shard)
    val_b = (Batches(data.val, data.eval_batch_size, norm, device, **shard)
             if data.val is not None else None)  # fmt: skip
    resume_step = state.step if resumed is not None else None
    writer = board.open_writer(run_dir, resume_step) if ranks.main else board.NoWriter()
    if resumed is None and ranks.main:
        _describe(model, data, run_dir, writer)
    stop = StopRequest()  # SIGTERM/SIGINT: finish the step, checkpoint, exit 143/130
    timing = loop.Timing()
    forward = distributed.wrap(model, device) if ranks.many else model  # saved: `model`'s
    forward = _compiled(forward) if cfg.trainer.compile else forward  # weights, no prefixes

    def payload(st, copy=False):
        return saver.payload(model, optimizer, scheduler, scaler, st, copy) if ranks.main else None

    def write(name, blob):
        if ranks.main:
            saver.write(name, blob)

    checkpoints = loop.Checkpoints(payload, write, cfg.trainer.checkpoint_every_s, writer)

    try:
        with stop:
            state = loop.fit(
                forward, optimizer, scheduler, scaler, task, train_b, val_b, settings, state, seed,
                autocast=autocast, writer=writer, stop=stop, timing=timing, checkpoints=checkpoints,
                evaluator=model if ranks.many else forward,
            )  # fmt: skip
            interrupted = bool(stop)  # (a signal after this lets the scoring below finish)
            if not ranks.main and not stop:  # rank 0 scores the result alone
                return None
            if not stop:
                results = _score_and_report(
                    model, data, task, device, autocast, saver, state, writer, run_dir, config,
                    _hparams(config, choices, overrides, run_dir), cfg.trainer,
                    timing.to_dict(device),
                )  # fmt: skip
    finally:
        writer.close()
    if stop:
        if ranks.main and interrupted:
            print(f"stopped by {stop.name} at step {state.step}; checkpoints/last.pt is saved, "
                  f"resume={run_dir} continues the run", flush=True)  # fmt: skip
        elif ranks.main:  # training had finished: nothing to resume
            print(f"stopped by {stop.name} after training finished (step {state.step}); its "
                  f"checkpoints and metrics.json are complete; python -m train.evaluate "
                  f"run={run_dir} scores it again", flush=True)  # fmt: skip
        sys.exit(stop.exit_code)
    reached = _log_results(results, goals)
    advice = report.undertrained(state.history, settings, state)
    if advice is not None and not (goals and reached):  # (a preset whose goals are met: done)
        log.warning("%s: python -m train resume=%s trainer.max_epochs=%d continues this run.",
                    advice, run_dir, 2 * state.epoch)  # fmt: skip
    monitored = results.get("val", results.get("train"))
    return monitored[settings.monitor]


def _score_and_report(
    model, data, task, device, autocast, saver, state, writer, run_dir, config, params,
    cfg_trainer, timing,
) -> dict:  # fmt: skip
    """Score the best weights on every split; metrics.json, HPARAMS, pictures. The results."""
    from train import board, checkpoint, report

    best = saver.path("best")
    if best.exists():
        checkpoint.load_model(model, checkpoint.load(best)["model"], best)
    elif state.epoch == 0:  # stopped (max_steps) before the first epoch ended
        log.info("no epoch finished, so no best.pt: scoring the current weights")
    else:  # every epoch's monitored value was NaN: none was ever the best
        log.warning("no best.pt: %s was not finite at any of the %d epoch(s) (%s); scoring "
                    "the last weights", cfg_trainer.monitor, state.epoch,
                    ", ".join(f"{v:.4g}" for v in state.history[-5:]))  # fmt: skip
    score_train = cfg_trainer.score_train or data.val is None  # (train is then the monitored)
    splits = ("train", "val", "test") if score_train else ("val", "test")
    results, confusion = report.score(model, data, task, device, autocast, splits)
    summary = {**results, "best_step": state.best_step, "epochs": state.epoch,
               "steps": state.step, "seed": config["seed"], "monitor": cfg_trainer.monitor,
               "skipped_nonfinite": state.skipped, "timing": timing}  # fmt: skip
    if confusion is not None:
        summary["confusion_matrix"] = confusion.tolist()
    report.write_json(run_dir / "metrics.json", summary)
    curves = "val" if data.val is not None else "train"  # the metrics: the curves' last values
    board.hparams(writer, params, [f"{curves}/{m}" for m in task.metric_names], state.step)
    report.pictures(writer, model, data, task, device, confusion, cfg_trainer.num_sample_images,
                    state.step)  # fmt: skip
    _graph(model, data.in_shape, writer)
    return results


# What a value left as ??? in conf/ looks like when given: shown in the error.
EXAMPLES = {"data.path": "data.path=my.csv (a CSV file) or data.path=pics (an image folder)",
            "data.target": "data.target=label (the CSV column to predict)"}  # fmt: skip


def _check(cfg: DictConfig) -> list[tuple[str, str, float]]:
    """What the schema alone cannot catch, before any work: values left to the user (???),
    keys no schema knows (added with +), and `expect:` lines; the parsed expectations."""
    if missing := config.missing_keys(cfg):
        wanted = "; ".join(f"{k}, e.g. {EXAMPLES.get(k, k + '=...')}" for k in missing)
        raise UserError(
            f"{'these values are' if len(missing) > 1 else 'a value is'} needed and not given: "
            f"{wanted}. Add {'them' if len(missing) > 1 else 'it'} to the command line."
        )
    if unknown := config.unknown_keys(cfg):
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


_background: list = []  # import threads, joined before the process exits


def _import_in_background(name: str) -> None:
    """Import `name` on a thread while data loads: torch ops release the GIL, so the two
    overlap. The first use waits on Python's import lock until it is done."""
    import importlib
    import threading

    thread = threading.Thread(target=importlib.import_module, args=(name,), daemon=True)
    thread.start()
    _background.append(thread)


def _describe(model, data, run_dir: Path, writer) -> None:
    """The model's summary into the log, summary.txt and TensorBoard's TEXT tab."""
    from train import summary

    text = summary.table(model, data.in_shape)
    log.info("model:\n%s", text)
    (run_dir / "summary.txt").write_text(text + "\n")
    writer.add_text("viz/model summary", "    " + text.replace("\n", "\n    "), 0)  # preformatted


def _graph(model, in_shape, writer) -> None:
    """The model graph into TensorBoard (traced in eval mode: no dropout draw, no batch-norm
    update); after training, so tracing does not delay the first step."""
    import warnings

    import torch

    param = next(model.parameters())
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer.add_graph(model, torch.zeros(1, *in_shape, device=param.device))
    except Exception as e:  # noqa: BLE001 - a model that does not trace still trains
        log.warning("warning: no model graph in TensorBoard (%s: %s)", type(e).__name__, e)


def _deterministic() -> None:
    """Deterministic algorithms on CUDA. cuBLAS reads its workspace setting when CUDA starts,
    so it is set here, before anything touches the GPU."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _precision(amp: str, device):
    """The gradient scaler and autocast context for `trainer.amp`: off, bf16 (CUDA or CPU),
    fp16 (CUDA only: on the CPU it is slow and needs a gradient scaler there too)."""
    import torch

    if amp == "fp16" and device.type != "cuda":
        raise UserError(
            f"trainer.amp=fp16 needs a CUDA device; the run is on {device}. "
            "Use trainer.amp=bf16 (fast on CPUs with bf16 units: AVX-512 BF16, AMX) or off."
        )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    if dtype is None:  # (a disabled torch.autocast still costs microseconds a step)
        return scaler, contextlib.nullcontext

    def autocast():
        return torch.autocast(device.type, dtype=dtype)

    return scaler, autocast


def _memory_format(cfg_trainer: DictConfig, model):
    """channels_last for conv models when asked, or under amp when not said (null): measured
    faster there (docs/benchmarks.md); contiguous (NCHW) otherwise."""
    import torch

    convolves = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    wanted = cfg_trainer.channels_last
    if wanted is None:
        wanted = cfg_trainer.amp.value != "off"
    return torch.channels_last if wanted and convolves else torch.contiguous_format


def _compiled(model):
    """torch.compile'd forward passes; the module itself (and its state_dict names) unchanged."""
    import torch

    log.info("compiling the model (trainer.compile=true): the first steps take longer")
    return torch.compile(model)


def _need_compiler(device) -> None:
    """Inductor builds C++ on the CPU and Triton builds C launchers on GPUs: a compiler must be
    there. Checked before any work, rather than failing at the first step."""
    import shutil

    names = ("CXX", "g++", "clang++") if device.type == "cpu" else ("CC", "gcc", "clang", "cc")
    found = os.environ.get(names[0]) or any(shutil.which(n) for n in names[1:])
    if not found:
        kind = "a C++ compiler (g++)" if device.type == "cpu" else "a C compiler (gcc)"
        raise UserError(
            f"trainer.compile=true needs {kind} for torch.compile on {device.type}, and none is "
            f"on PATH (nor in ${names[0]}); the project's images carry none, to stay lean. "
            "Install one (Debian: apt-get install g++), or leave trainer.compile=false: on CPUs it "
            "measured slower anyway (docs/benchmarks.md)."
        )


def _settings(cfg_trainer: DictConfig, task, quiet: bool = False):
    from train.loop import Settings

    if cfg_trainer.monitor not in task.metric_names:
        raise UserError(
            f"trainer.monitor={cfg_trainer.monitor} is not a metric of this {task.kind} data; "
            f"use one of {list(task.metric_names)} (with trainer.monitor_mode min or max)."
        )
    limits = {"max_epochs": 1, "log_every_n_steps": 1, "max_steps": 1, "patience": 0,
              "checkpoint_every_s": 0, "print_every_s": 0}  # fmt: skip
    for key, low in limits.items():
        if cfg_trainer[key] is not None and cfg_trainer[key] < low:
            raise UserError(f"trainer.{key}={cfg_trainer[key]} must be at least {low}.")
    if cfg_trainer.grad_clip is not None and not cfg_trainer.grad_clip > 0:
        raise UserError(f"trainer.grad_clip={cfg_trainer.grad_clip} must be positive (or null).")
    return Settings(
        max_epochs=cfg_trainer.max_epochs,
        max_steps=cfg_trainer.max_steps,
        log_every_n_steps=cfg_trainer.log_every_n_steps,
        monitor=cfg_trainer.monitor,
        monitor_mode=cfg_trainer.monitor_mode.value,
        patience=cfg_trainer.patience,
        grad_clip=cfg_trainer.grad_clip,
        progress="lines" if quiet else cfg_trainer.progress.value,  # (lines: to the log)
        skip_nonfinite=cfg_trainer.on_nonfinite.value == "skip",
        print_every_s=cfg_trainer.print_every_s,
    )


def _draw_seed(seed: int | None, resumed: dict | None) -> int:
    """The run's seed: the resumed run's, the config's, or (`seed=null`) a drawn one, recorded
    so the run can be replayed."""
    if resumed is not None:
        return resumed["config"]["seed"]
    return seed if seed is not None else random.SystemRandom().randrange(2**31)


def _seed(seed: int) -> None:
    """Seed every generator. Every torchrun rank takes the same seed: the same initial weights,
    and generator states that stay equal (rank 0's checkpoint resumes them all)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(cfg_optim: DictConfig, model):
    try:
        return targets.instantiate("optim", cfg_optim)(model.parameters())
    except ValueError as e:  # torch's own range checks: "Invalid learning rate: -1.0", ...
        raise UserError(f"optim: {e} (check the optim.* values).") from None


def _log_data(data, model) -> None:
    sizes = ", ".join(
        f"{n} {len(s)}" for n in ("train", "val", "test") if (s := getattr(data, n)) is not None
    )
    params = sum(p.numel() for p in model.parameters())
    log.info(
        "data: %s, inputs %s, %s (%s); model %s, %s parameters",
        data.task,
        tuple(data.in_shape),
        f"{data.num_classes} classes" if data.num_classes else f"{data.num_outputs} target(s)",
        sizes,
        type(model).__name__,
        f"{params:,}",
    )


def _flat(results: dict) -> dict:
    return {f"{split}/{k}": v for split, metrics in results.items() for k, v in metrics.items()}


def _hparams(record: dict, choices: dict, overrides: list[str], run_dir: Path) -> dict:
    """The knobs that tell runs of a sweep apart: the keys the sweep varies first, then the
    rest of the command line's overrides, then the group choices and every leaf value."""
    swept = rundir.swept_keys(run_dir.parent / "multirun.yaml")
    out = {}
    for o in sorted(overrides, key=lambda o: o.lstrip("+~").partition("=")[0] not in swept):
        key, _, value = o.lstrip("+~").partition("=")
        if not key.startswith(("hydra", "paths", "resume")):
            out[key] = choices.get(key, value) if "." not in key else None
    out.update((k, v) for k, v in choices.items() if not k.startswith("hydra") and v is not None)

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif k not in ("_target_", "_partial_") and v is not None:
                out[f"{prefix}{k}"] = v

    walk(
        {
            k: record[k]
            for k in ("data", "model", "optim", "sched", "trainer", "seed")
            if record.get(k) is not None and k != "seed"
        },
        "",
    )
    out["seed"] = record["seed"]
    return {k: v for k, v in out.items() if v is not None}


def _log_results(results: dict, goals: list[tuple[str, str, float]]) -> bool:
    """The final metrics and each expectation into the log; whether all were reached."""
    for split, metrics in results.items():
        log.info("final %s: %s", split, " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    flat, reached = _flat(results), True
    for key, op, target in goals:
        value = flat.get(key)
        ok = value is not None and (value >= target if op == ">=" else value <= target)
        reached &= ok
        log.info("expected %s %s %g: %s (%s)", key, op, target, "reached" if ok else "NOT reached",
                 "missing" if value is None else f"{value:.4g}")  # fmt: skip
    return reached
