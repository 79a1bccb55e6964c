"""`build(cfg) -> Run`: the one place that turns a composed config into plain objects (the
device and precision, the data, model, optimizer and scheduler, the batches, the loop's
settings, the checkpoint saver, the state to continue). Nothing after it reads cfg."""

import contextlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from train.config import targets
from train.data import augment
from train.errors import UserError
from train.models import usercode
from train.run.rundir import RunDir
from train.system import distributed

log = logging.getLogger("train")


@dataclass
class Run:
    """A run, built: what training, scoring and reporting need, as plain objects."""

    dir: RunDir
    ranks: distributed.Ranks
    device: object  # torch.device
    data: object  # train.data.Data
    model: object  # the module whose weights are saved (never a DDP or compiled wrapper)
    loop: object  # train.fit.loop.Loop (its seed the run's)
    state: object  # train.fit.loop.State: where training stands (a resumed run's)
    saver: object  # train.run.checkpoint.Saver
    loggers: object  # train.loggers.Loggers (rank 0's; none on the others)
    record: object  # train.run.record.RunRecord: this invocation's, written as training starts
    source: Path | None  # the checkpoint resumed from
    callback_states: dict  # the callbacks' resume state by name (a resumed run's; else empty)
    eval_batch_size: int
    config: dict  # the resolved config as recorded (its seed the one drawn)
    checkpoint_every_s: float
    score_train: bool
    num_sample_images: int

    @property
    def resumed(self) -> bool:
        return self.source is not None


def build(cfg: DictConfig, run: RunDir, source: Path | None, choices: dict, overrides: list[str],
          job: int | None = None, model=None) -> Run:  # fmt: skip
    """The run `cfg` describes, in `run` (continuing checkpoint `source`, if any); run.json
    written on rank 0. `choices`: the config groups' options (kept in checkpoints); `job`: a
    sweep job's number (it spreads parallel jobs over the GPUs); `model`: an nn.Module class
    or object to train (train.api), in place of the configured one."""
    from train.fit.loop import Loop
    from train.fit.task import Task
    from train.run import checkpoint

    ranks = distributed.ranks()
    if source is None and ranks.main and run.has_checkpoints():  # (two sweeps in one second)
        raise UserError(f"{run.path} already holds a run's checkpoints; refusing to overwrite "
                        "them.")  # fmt: skip
    resumed = checkpoint.Checkpoint.read(source) if source is not None else None
    seed = distributed.agreed(lambda: draw_seed(cfg.seed, resumed))  # seed=null: rank 0 draws
    sizes = _batch_sizes(cfg.data)
    _preflight(cfg)
    loggers = _loggers(cfg, run, source is not None, job, ranks.main)  # (a bad store: exit 2)
    device, scaler, autocast = _machine(cfg, seed, ranks, job, run.path)
    with distributed.main_first():  # downloads and caches: written once, by rank 0
        data = targets.instantiate("data", cfg.data)
    task = Task.of(data, cfg.trainer.label_smoothing)
    s = settings(cfg.trainer, task, quiet=not ranks.main)
    model_object = model
    model, optimizer, scheduler, memory_format = _model(cfg, data, device, model_object)
    origin = {"model": _origin_of(model, given=model_object is not None), "data": data.origin}
    if resumed is not None:  # (the same user files as the run was trained with)
        for group in ("model", "data"):
            usercode.unchanged((resumed.origin or {}).get(group), origin[group], f"{group} code")
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    config["seed"] = seed
    record = _record(config, overrides, device, data, origin)
    saver = checkpoint.Saver(run, config, data.meta().to_dict(), choices,
                             origin)  # fmt: skip
    state = _state(saver, resumed, source, model, optimizer, scheduler, scaler)
    log_data(data, model)
    train, val = _batches(data, sizes, device, memory_format,
                          augment.choose(cfg.data.augment, data.is_image), seed)  # fmt: skip
    forward = distributed.wrap(model, device) if ranks.many else model  # saved: `model`'s
    forward = _compiled(forward) if cfg.trainer.compile else forward  # weights, no prefixes
    loop = Loop(model=forward, evaluator=model if ranks.many else forward, optimizer=optimizer,
                scheduler=scheduler, scaler=scaler, autocast=autocast, task=task, train=train,
                val=val, settings=s, seed=seed)  # fmt: skip
    return Run(dir=run, ranks=ranks, device=device, data=data, model=model, loop=loop,
               state=state, saver=saver, loggers=loggers, record=record, source=source,
               callback_states=resumed.callbacks if resumed is not None else {},
               eval_batch_size=sizes[1], config=config,
               checkpoint_every_s=cfg.trainer.checkpoint_every_s,
               score_train=cfg.trainer.score_train,
               num_sample_images=cfg.trainer.num_sample_images)  # fmt: skip


def _machine(cfg: DictConfig, seed: int, ranks, job: int | None, run_dir: Path):
    """Seeds, determinism, the device and its precision (said in the log); checks that fail
    before any data is read."""
    from train.system import device as devices
    from train.system import health

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
    log.info("device: %s, %s; seed %d", device, why, seed)
    if ranks.many:
        log.info("%s: %d ranks (%s), data.batch_size=%d per rank, %d in all per step",
                 ranks.launcher, ranks.world, distributed.backend(), cfg.data.batch_size,
                 cfg.data.batch_size * ranks.world)  # fmt: skip
    workers = OmegaConf.select(cfg, "data.num_workers", default=0)  # only image_folder has it
    for warning in health.warnings(Path(cfg.paths.data_dir), workers):
        log.warning("%s", warning)
    return device, scaler, autocast


def _model(cfg: DictConfig, data, device, given=None):
    """The model (checked against the data) on `device`, its optimizer and scheduler. A
    pretrained model's input statistics replace the data's (its `normalization`)."""
    import torch

    from train.models import course

    if given is None:
        model = targets.instantiate("model", cfg.model, in_shape=data.in_shape,
                                    num_outputs=data.num_outputs)  # fmt: skip
    elif isinstance(given, type):  # a class: built as ours are, after seeding
        model = usercode.build_object(given, data.in_shape, data.num_outputs, cfg.model.args,
                                      None)  # fmt: skip
    else:
        model = given
    course.check_fits(model, data.task, data.num_classes)
    if (stats := getattr(model, "normalization", None)) is not None:
        data.mean, data.std = torch.tensor(stats[0]), torch.tensor(stats[1])
    memory_format = _memory_format(cfg.trainer, model)
    model.to(device, memory_format=memory_format)
    _probe(model, data, device, memory_format, cfg.model)
    optimizer = _optimizer(cfg.optim, model)
    scheduler = None if cfg.sched is None else targets.instantiate("sched", cfg.sched)(optimizer)
    return model, optimizer, scheduler, memory_format


def _origin_of(model, given: bool) -> dict | None:
    """Where the model came from, when not from this package (run.json, checkpoints)."""
    if given:
        cls = type(model)
        return {"class": f"{cls.__module__}.{cls.__qualname__}", "source": "in process"}
    return getattr(model, "train_origin", None)


def _preflight(cfg: DictConfig) -> None:
    """What needs no data and would fail late: a pretrained file that is not on disk."""
    from train.models import vision

    if cfg.model._target_ == "train.models.vision.Vision":
        vision.check_weights(cfg.model.arch, cfg.model.weights, cfg.model.torch_home)


def _probe(model, data, device, memory_format, cfg_model) -> None:
    """A model not of ours (torchvision's, yours) on one example, before training: an input it
    cannot take or a wrong output shape said now, naming your file and line."""
    from train.data import batches

    target = cfg_model._target_
    if target.startswith("train.models.course."):
        return
    split = data.train
    raw = split.x[:1] if hasattr(split, "x") else split.dataset[0][0][None]
    x = batches.Normalizer(data, device, memory_format)(raw.to(device))
    file = Path(cfg_model.code) if "code" in cfg_model else None
    usercode.check_forward(model, x, data.num_outputs, file, type(model).__name__)


def _record(config: dict, overrides: list[str], device, data, origin: dict):
    from train.run import record

    return record.collect(config, overrides, config["seed"], device,
                          config["trainer"]["deterministic"], data.fingerprint, origin)  # fmt: skip


def _loggers(cfg: DictConfig, run: RunDir, resumed: bool, job: int | None, main: bool):
    """The loggers logger= picks (rank 0's: the others report nothing). MLflow's store is
    reached now, before any data is read: one that cannot be used is exit 2 here."""
    from train.loggers import Loggers, board, csvfile

    chosen, picked = [], cfg.logger
    if main and picked.tensorboard is not None:
        chosen.append(board.TensorBoard(run.path, picked.tensorboard.flush_secs))
    if main and picked.csv is not None:
        chosen.append(csvfile.CsvFile(run, picked.csv.file))
    if main and (m := picked.mlflow) is not None:
        from train.loggers import tracking

        if m.retries < 0 or not m.timeout_s > 0:
            raise UserError(f"logger.mlflow.retries={m.retries} and logger.mlflow.timeout_s="
                            f"{m.timeout_s}: retries is 0 or more, timeout_s a positive number "
                            "of seconds (defaults 2 and 10).")  # fmt: skip
        previous = _tracked(run, "mlflow") if resumed else None
        parent = m.parent_run_id
        if parent is None and job is not None:  # (a sweep's job: its sweep's parent run)
            parent = (tracking.sweep_parent(run.path.parent) or {}).get("run_id")
        chosen.append(tracking.MLflow.reach(m.tracking_uri, cfg.paths.runs_dir, m.experiment,
                                           run.path, m.run_name, previous, parent, m.retries,
                                           m.timeout_s))  # fmt: skip
    return Loggers(chosen)


def _tracked(run: RunDir, logger: str) -> str | None:
    """A resumed run's id in `logger`'s store (MLflow's run id), from its newest record."""
    ids = [
        rec.tracking[logger]["run_id"]
        for rec in run.records()
        if isinstance(rec.tracking, dict) and isinstance(rec.tracking.get(logger), dict)
    ]
    return ids[-1] if ids else None


def _state(saver, resumed, source, model, optimizer, scheduler, scaler):
    """A fresh loop state, or the resumed run's with every weight and generator restored."""
    from train.fit.loop import State

    if resumed is None:
        return State()
    state = State(**saver.restore(resumed, source, model, optimizer, scheduler, scaler))
    if state.batch_in_epoch:  # (as the stop said it: batch N of the unfinished epoch)
        log.info("resuming at step %d, batch %d of epoch %d", state.step, state.batch_in_epoch,
                 state.epoch + 1)  # fmt: skip
    else:
        log.info("resuming from epoch %d, step %d", state.epoch, state.step)
    return state


def _batch_sizes(cfg_data: DictConfig) -> tuple[int, int]:
    """data.batch_size and data.eval_batch_size (the loader's settings), checked."""
    sizes = cfg_data.batch_size, cfg_data.eval_batch_size
    if min(sizes) < 1:
        raise UserError(f"data.batch_size={sizes[0]} and data.eval_batch_size={sizes[1]} must "
                        "both be at least 1.")  # fmt: skip
    return sizes


def _batches(data, sizes: tuple[int, int], device, memory_format, augmenting, seed: int):
    """This rank's shard of the train and val batches, normalised on `device`; the training
    batches augmented (`augmenting`: a train.augment augmentation, or None)."""
    from train.data.batches import Batches, Normalizer

    ranks = distributed.ranks()
    norm = Normalizer(data, device, memory_format)
    shard = {"rank": ranks.rank, "world": ranks.world}
    train = Batches(data.train, sizes[0], norm, device, **shard, augment=augmenting, seed=seed)
    val = (Batches(data.val, sizes[1], norm, device, **shard)
           if data.val is not None else None)  # fmt: skip
    return train, val


def settings(cfg_trainer: DictConfig, task, quiet: bool = False):
    """The loop's settings from cfg.trainer, each checked against its range."""
    from train.fit.loop import Settings

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


def _deterministic() -> None:
    """Deterministic algorithms on CUDA. cuBLAS reads its workspace setting when CUDA starts,
    so it is set here, before anything touches the GPU."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


# trainer.amp per device type: fp16 trains with a gradient scaler, which torch keeps for CUDA
# and XPU (on the CPU, fp16 is slow); bf16 needs the device's bf16 units where torch can say.
AMP = {"cpu": {"bf16"}, "cuda": {"bf16", "fp16"}, "xpu": {"bf16", "fp16"}, "mps": {"bf16"}}


def _precision(amp: str, device):
    """The gradient scaler and autocast context for `trainer.amp` on `device` (AMP says what
    each device type takes), refused in one paragraph where the device cannot."""
    import torch

    if amp != "off" and amp not in AMP.get(device.type, set()):
        takes = " or ".join(sorted(AMP.get(device.type, set()))) or "nothing but off"
        raise UserError(
            f"trainer.amp={amp} is not for {device.type} devices; the run is on {device}, where "
            f"trainer.amp takes {takes} (or off). fp16 needs a CUDA or XPU device; bf16 is "
            "fast on CPUs with bf16 units (AVX-512 BF16, AMX)."
        )
    if amp == "bf16" and device.type == "mps" and not torch.backends.mps.is_macos_or_newer(14, 0):
        raise UserError("trainer.amp=bf16 on MPS needs macOS 14 or newer; use trainer.amp=off.")
    if amp == "bf16" and device.type in ("cuda", "xpu"):
        from train.system.device import name

        if not getattr(torch, device.type).is_bf16_supported():
            raise UserError(f"trainer.amp=bf16: this {device.type} device ({name(device)}) has "
                            "no bf16 support; use trainer.amp=fp16 or off.")  # fmt: skip
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type if amp == "fp16" else "cuda", enabled=amp == "fp16")
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


def draw_seed(seed: int | None, resumed) -> int:
    """The run's seed: the resumed run's, the config's, or (`seed=null`) a drawn one, recorded
    so the run can be replayed."""
    if resumed is not None:
        return resumed.config["seed"]
    return seed if seed is not None else random.SystemRandom().randrange(2**31)


def _seed(seed: int) -> None:
    """Seed every generator. Every torchrun rank takes the same seed: the same initial weights,
    and generator states that stay equal (rank 0's checkpoint resumes them all)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def optimizer(cfg_optim: DictConfig, model):
    """The optimizer an optim config makes for `model`, as training makes it (bench.speed)."""
    return _optimizer(cfg_optim, model)


def _optimizer(cfg_optim: DictConfig, model):
    """The optimizer over what trains: a pretrained model's backbone at
    optim.backbone_lr_scale times the lr (its new head at lr); frozen weights left out."""
    from omegaconf import open_dict

    scale = cfg_optim.backbone_lr_scale
    node = cfg_optim.copy()
    with open_dict(node):
        del node["backbone_lr_scale"]  # (train's, not the optimizer's)
    if hasattr(model, "param_groups"):
        params = model.param_groups(cfg_optim.lr, scale)
    elif scale != 1.0:
        raise UserError(f"optim.backbone_lr_scale={scale} is for a pretrained backbone "
                        "(model=torchvision); this model has none: leave it at 1.")  # fmt: skip
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    try:
        return targets.instantiate("optim", node)(params)
    except ValueError as e:  # torch's own range checks: "Invalid learning rate: -1.0", ...
        raise UserError(f"optim: {e} (check the optim.* values).") from None


SMALL_SPLIT = 30  # held-out examples below which a split's scores are mostly noise


def log_data(data, model) -> None:
    """The data and model in one line; a warning for held-out splits too small to mean much."""
    sizes = ", ".join(
        f"{n} {len(s):,}" for n in ("train", "val", "test") if (s := getattr(data, n)) is not None
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
    for name in ("val", "test"):
        split = getattr(data, name)
        if split is not None and len(split) < SMALL_SPLIT:
            swing = (
                f": one example more or less right moves its accuracy by "
                f"{100 / len(split):.0f} points"
                if data.task == "classification"
                else ""
            )
            log.warning("the %s split has %d example(s)%s; its scores mean little (bring more "
                        "data, or raise data.%s_fraction)", name, len(split), swing,
                        name)  # fmt: skip
