"""Structured config schemas: every key and type the YAML under conf/ may set.

Each group option's YAML starts from one of these schemas (its `defaults` list), so a typo'd key
or a wrong-typed value fails at compose time with Hydra's message, before any data is touched.
Where conf/config.yaml sets a key, the default here is the same (tests/unit/test_config.py
checks it); a group option's YAML may set its own over its schema's.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Activation(Enum):
    relu = "relu"
    sigmoid = "sigmoid"
    tanh = "tanh"


class Pool(Enum):
    max = "max"
    avg = "avg"


class Amp(Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class Padding(Enum):
    same = "same"  # the output keeps the input's height and width
    valid = "valid"  # no padding: each conv trims kernel_size - 1


class Mode(Enum):
    min = "min"
    max = "max"


class Task(Enum):
    auto = "auto"  # CSV: text or few whole numbers are classes; other numbers a regression
    regression = "regression"
    classification = "classification"


class Missing(Enum):
    error = "error"  # refuse the file, naming the lines
    drop = "drop"  # leave rows with a missing value out (said in the log)
    mean = "mean"  # fill missing features with the training mean; rows without a target out


class Background(Enum):
    white = "white"
    black = "black"


class NonFinite(Enum):
    stop = "stop"  # stop the run, naming the step; the last good checkpoint stays
    skip = "skip"  # skip the batch (no optimizer step) and count it


class Augment(Enum):
    auto = "auto"  # none: the course's sets (digits and letters are not to be flipped), tables
    none = "none"
    flip_crop = "flip_crop"  # a random horizontal flip and a crop of the 4-pixel-padded image
    trivialaugment = "trivialaugment"  # torchvision's TrivialAugmentWide, per image
    randaugment = "randaugment"  # torchvision's RandAugment, per image


class Freeze(Enum):
    none = "none"  # fine-tune every layer
    backbone = "backbone"  # train the new head alone (batch norm keeps its statistics)


class Preprocess(Enum):
    auto = "auto"  # pretrained weights: their resize, crop, mean and std; else the data's
    data = "data"  # the data's statistics and size, whatever the weights


class Progress(Enum):
    auto = "auto"  # a bar on a terminal, plain lines otherwise
    bar = "bar"
    lines = "lines"


# --- data -------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    _target_: str = MISSING
    batch_size: int = 64
    eval_batch_size: int = 1024  # evaluation holds no activations for backward: bigger is faster
    val_fraction: float = 0.1
    # Held out as the test split, only for data sets that ship without one (digits, csv, ...).
    test_fraction: float = 0.0
    split_seed: int = 0  # fixed apart from `seed`, so every run is scored on the same examples
    normalize: bool = True
    augment: Augment = Augment.auto  # image data, training split only


@dataclass
class TorchvisionDataConfig(DataConfig):
    name: str = MISSING  # torchvision.datasets class: MNIST, FashionMNIST, CIFAR10
    root: str = "${paths.data_dir}"
    download: bool = True


@dataclass
class DigitsDataConfig(DataConfig):
    _target_: str = "train.data.sets.digits"
    root: str = "${paths.data_dir}"  # a tensor cache is kept here


@dataclass
class TableDataConfig(DataConfig):
    _target_: str = "train.data.sets.course_table"
    name: str = MISSING


@dataclass
class SyntheticDataConfig(DataConfig):
    _target_: str = "train.data.sets.synthetic"
    num_samples: int = 1000
    shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    num_classes: int = 10  # 0 makes it a regression problem with one target
    seed: int = 0


@dataclass
class CsvDataConfig(DataConfig):
    _target_: str = "train.data.sets.csv"
    path: str = MISSING
    target: Any = MISSING  # a column name, or a list of numeric ones (one output each)
    task: Task = Task.auto
    delimiter: str | None = None  # null: detected (, ; tab |)
    decimal: str | None = None  # null: detected ("," where the delimiter is not a comma)
    encoding: str = "utf-8"  # a BOM is dropped either way
    missing: Missing = Missing.error
    drop_columns: list[str] = field(default_factory=list)  # columns that are not features


@dataclass
class ImageFolderDataConfig(DataConfig):
    _target_: str = "train.data.sets.image_folder"
    path: str = MISSING
    image_size: list[int] | None = None  # null: the images' own size (the most common one)
    grayscale: bool | None = None  # null: grayscale when no image has colour
    background: Background = Background.white  # what transparent pixels are composited onto
    skip_bad_files: bool = False  # false: unreadable files stop the run, all named
    in_memory: bool | None = None  # null: decoded into memory when under a quarter of RAM
    num_workers: int = 2  # DataLoader processes, for folders read from disk
    cache_dir: str = "${paths.data_dir}"  # checked files and decoded tensors are cached here


@dataclass
class CustomDataConfig(DataConfig):
    _target_: str = "train.models.usercode.data"
    code: str = MISSING  # your Python file
    name: str = "build"  # its function returning Dataset(s)
    args: Any = None  # passed to it, e.g. {hidden: 64} (a mapping; null: none)
    reader: str | None = "read"  # predict: its function read(path) -> one input tensor
    num_workers: int = 0  # DataLoader processes (0: in this process, as notebooks need)
    normalize: bool = False  # your Dataset's transforms prepare the inputs


# --- models -----------------------------------------------------------------------------------
# Input shape and output size are not here: they come from the data at instantiate time.


@dataclass
class ModelConfig:
    _target_: str = MISSING


@dataclass
class MLPConfig(ModelConfig):
    _target_: str = "train.models.course.MLP"
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    activation: Activation = Activation.relu
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass
class CNNConfig(ModelConfig):
    _target_: str = "train.models.course.CNN"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    padding: Padding = Padding.same
    pool: Pool = Pool.max
    pool_every: int = 1  # a 2x2 pool after every n-th conv block (and after the last)
    dropout: float = 0.25
    batch_norm: bool = False
    head: int = 128


@dataclass
class TorchvisionModelConfig(ModelConfig):
    _target_: str = "train.models.vision.Vision"
    arch: str = "resnet18"  # any of torchvision.models.list_models()
    weights: str | None = None  # null: from scratch | DEFAULT | a weights name (IMAGENET1K_V1)
    freeze: Freeze = Freeze.none
    preprocess: Preprocess = Preprocess.auto
    cifar_stem: bool = False  # ResNets: a 3x3 stride-1 stem, no max pool (32x32 inputs)
    torch_home: str = "${paths.torch_home}"  # pretrained files: <torch_home>/hub/checkpoints/


@dataclass
class CustomModelConfig(ModelConfig):
    _target_: str = "train.models.usercode.model"
    code: str = MISSING  # your Python file
    name: str = "Net"  # its nn.Module class, taking in_shape and num_outputs
    args: Any = None  # passed to it, e.g. {hidden: 64} (a mapping; null: none)


@dataclass
class ObjectModelConfig(ModelConfig):
    _target_: str = "train.models.usercode.in_process"
    name: str = MISSING  # the class of the object train.api.train(model=...) was given
    args: Any = None


# --- optimizers and schedulers (partials: completed in code with the parameters) -------------


@dataclass
class OptimConfig:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    weight_decay: float = 0.0
    # Pretrained models: the backbone's lr is this times lr (the new head's is lr). Not an
    # argument of the optimizer: train.build makes the parameter groups from it.
    backbone_lr_scale: float = 1.0


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0
    nesterov: bool = False
    fused: bool = True  # torch's one-kernel update (same math); false: its per-tensor loop


@dataclass
class AdagradConfig(OptimConfig):
    _target_: str = "torch.optim.Adagrad"
    lr_decay: float = 0.0
    eps: float = 1e-10


@dataclass
class RMSpropConfig(OptimConfig):
    _target_: str = "torch.optim.RMSprop"
    alpha: float = 0.99
    momentum: float = 0.0
    eps: float = 1e-8


@dataclass
class AdamConfig(OptimConfig):
    _target_: str = "torch.optim.Adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    fused: bool = True  # torch's one-kernel update: 1.36x the steps/s of its loop at mlp@64 (CPU)


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class SchedConfig:
    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class StepLRConfig(SchedConfig):
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 10
    gamma: float = 0.1


@dataclass
class CosineConfig(SchedConfig):
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = "${trainer.max_epochs}"  # type: ignore[assignment]
    eta_min: float = 0.0


# --- trainer and the whole config -------------------------------------------------------------


@dataclass
class TrainerConfig:
    max_epochs: int = 100  # an upper bound: early stopping ends most runs long before
    max_steps: int | None = None  # stop after this many optimizer steps in all (smoke runs)
    device: str = "auto"  # auto | cpu | cuda[:N] | mps | xpu[:N]
    amp: Amp = Amp.off
    log_every_n_steps: int = 50
    monitor: str = "loss"  # metric for best.pt and early stopping, read from val (train if no val)
    monitor_mode: Mode = Mode.min
    patience: int | None = 10  # epochs without improvement before stopping; null: never stop
    grad_clip: float | None = None  # max gradient norm; null: no clipping
    on_nonfinite: NonFinite = NonFinite.stop  # a NaN/inf loss: stop, or skip the batch
    deterministic: bool = False  # CUDA: deterministic algorithms (bitwise reruns, slower)
    progress: Progress = Progress.auto
    num_sample_images: int = 32  # size of the predicted/true grid written at the end
    channels_last: bool | None = None  # null: on for conv models under amp (faster), else off
    compile: bool = False  # torch.compile the model (slow first steps; see docs/benchmarks.md)
    score_train: bool = False  # score the best weights on the whole train split at the end
    checkpoint_every_s: float = 60.0  # last.pt/best.pt at most this often (0: every epoch)
    label_smoothing: float = 0.0  # classification: cross entropy against softened targets
    print_every_s: float = 5.0  # an epoch line at most this often (0: every epoch)


@dataclass
class TensorBoardLoggerConfig:
    flush_secs: int = 10  # events reach the disk at least this often (and before checkpoints)


@dataclass
class MlflowLoggerConfig:
    # null: a SQLite store under paths.runs_dir (runs/mlflow.db, artifacts in runs/mlartifacts),
    # what `docker compose up mlflow` shows; or a team server's http(s)://host:port
    tracking_uri: str | None = None
    experiment: str = MISSING  # the MLflow experiment the run joins (conf: the run's name)
    run_name: str | None = None  # null: the run dir's <name>/<time>
    parent_run_id: str | None = None  # a run to file this one under (train.tune's study)
    retries: int = 2  # a request the store does not answer is tried this many times more
    timeout_s: float = 10.0  # per request; then the run goes on without MLflow, saying so


@dataclass
class CsvLoggerConfig:
    file: str = "metrics.csv"  # in the run dir: one row per epoch, one column per metric


@dataclass
class LoggerConfig:
    """Which loggers a run reports to (logger=[tensorboard,mlflow,csv]): those not null."""

    tensorboard: TensorBoardLoggerConfig | None = None
    mlflow: MlflowLoggerConfig | None = None
    csv: CsvLoggerConfig | None = None


@dataclass
class PathsConfig:
    data_dir: str = "${oc.env:TRAIN_DATA_DIR,./data}"
    runs_dir: str = "${oc.env:TRAIN_RUNS_DIR,./runs}"
    torch_home: str = "${paths.data_dir}/torch"  # pretrained weights


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    sched: SchedConfig | None = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    name: str = MISSING  # groups runs under runs/<name>/
    seed: int | None = 42
    resume: str | None = None  # a run dir or checkpoint to continue
    # What this preset should reach, e.g. {"test/accuracy": 0.97}; printed next to the result.
    expect: dict[str, Any] = field(default_factory=dict)


def register() -> None:
    """Put the schemas into Hydra's ConfigStore, where conf/ YAML files find them by name."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, name, node in [
        ("data", "torchvision", TorchvisionDataConfig),
        ("data", "digits", DigitsDataConfig),
        ("data", "table", TableDataConfig),
        ("data", "synthetic", SyntheticDataConfig),
        ("data", "csv", CsvDataConfig),
        ("data", "image_folder", ImageFolderDataConfig),
        ("data", "custom", CustomDataConfig),
        ("model", "linear", ModelConfig),
        ("model", "torchvision", TorchvisionModelConfig),
        ("model", "custom", CustomModelConfig),
        ("model", "object", ObjectModelConfig),
        ("model", "mlp", MLPConfig),
        ("model", "cnn", CNNConfig),
        ("optim", "sgd", SGDConfig),
        ("optim", "adagrad", AdagradConfig),
        ("optim", "rmsprop", RMSpropConfig),
        ("optim", "adam", AdamConfig),
        ("optim", "adamw", AdamWConfig),
        ("sched", "step", StepLRConfig),
        ("sched", "cosine", CosineConfig),
        ("logger", "tensorboard", TensorBoardLoggerConfig),
        ("logger", "mlflow", MlflowLoggerConfig),
        ("logger", "csv", CsvLoggerConfig),
    ]:
        cs.store(group=f"schema/{group}", name=name, node=node)


@dataclass
class EvaluateConfig:
    run: str = MISSING  # the run directory to evaluate
    checkpoint: str = "best"  # best | last
    split: str = "test"  # train | val | test
    device: str = "auto"
    batch_size: int | None = None  # null: the run's data.eval_batch_size
    out: str | None = None  # null: <run>/evaluation-<split>.json; a file (e.g. a read-only run)
    code: Any = field(default_factory=list)  # the run's own code file(s), if it trained yours


@dataclass
class PredictConfig:
    run: str = MISSING  # the run directory whose model predicts
    inputs: str = MISSING  # a file, a folder or a quoted glob
    checkpoint: str = "best"  # best | last
    out: str | None = None  # also write the predictions to this CSV (never over an existing file)
    code: Any = field(default_factory=list)  # the run's own code file(s), if it trained yours


@dataclass
class ExportConfig:
    run: str = MISSING  # the run directory whose model is exported
    format: str = "onnx"  # onnx | torchscript
    checkpoint: str = "best"  # best | last
    out: str | None = None  # null: beside the checkpoint; a file (e.g. a read-only run)
    code: Any = field(default_factory=list)  # the run's own code file(s), if it trained yours


def register_commands() -> None:
    """The schemas of evaluate, predict and export."""
    cs = ConfigStore.instance()
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="export_schema", node=ExportConfig)


# --- checks on a composed config: before any work, with the key named -----------------------


def nodes(cfg, prefix: str = ""):
    """(dotted key, node) of every value under `cfg`, without resolving interpolations."""
    from omegaconf import DictConfig

    for key in cfg:
        node = cfg._get_node(key)
        yield f"{prefix}{key}", node
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            yield from nodes(node, f"{prefix}{key}.")


def is_missing(cfg, key: str) -> bool:
    """`key` of `cfg` is left to the user (`???`)."""
    return cfg._get_node(key)._is_missing()


def missing_keys(cfg) -> list[str]:
    """Keys the config leaves to the user (`???`) and nobody gave."""
    return sorted(key for key, node in nodes(cfg) if node._is_missing())


# What a value left as ??? in conf/ looks like when given: shown in the error.
EXAMPLES = {"data.path": "data.path=my.csv (a CSV file) or data.path=pics (an image folder)",
            "data.target": "data.target=label (the CSV column to predict; [a,b]: several "
                           "numeric ones)"}  # fmt: skip


def require_given(cfg) -> None:
    """Every value left to the user (`???`) is given; else one paragraph naming them, exit 2."""
    from train.errors import UserError

    if missing := missing_keys(cfg):
        wanted = "; ".join(f"{k}, e.g. {EXAMPLES.get(k, k + '=...')}" for k in missing)
        raise UserError(
            f"{'these values are' if len(missing) > 1 else 'a value is'} needed and not given: "
            f"{wanted}. Add {'them' if len(missing) > 1 else 'it'} to the command line."
        )


def unknown_keys(cfg) -> list[str]:
    """Keys no schema knows (added with `+`, as Hydra suggests for a misspelt key), each with
    the closest valid key: `+trainer.max_epoch=3` would run with the typo ignored."""
    import dataclasses
    import difflib

    from omegaconf import DictConfig, OmegaConf

    found = []
    for key, node in [("", cfg), *nodes(cfg)]:
        if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
            continue
        schema = OmegaConf.get_type(node)
        if not dataclasses.is_dataclass(schema):
            continue  # free-form (expect)
        known = [f.name for f in dataclasses.fields(schema)]
        for name in node:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                where = f"{key}." if key else ""
                hint = f" (did you mean {where}{close[0]}?)" if close else ""
                found.append(f"{where}{name}{hint}")
    return found
