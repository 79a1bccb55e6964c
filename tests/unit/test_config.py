"""Every YAML under conf/ composes against the typed schema; typos and wrong types fail at once."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from train import build, config

CONF = Path(config.CONF_DIR)
# Group options that need a value only the user can give.
REQUIRED = {
    "data/csv": ["data.path=x.csv", "data.target=y"],
    "data/image_folder": ["data.path=pics"],
    "data/custom": ["data.code=data.py"],
    "model/custom": ["model.code=net.py"],
    "model/object": ["model.name=Net"],
}
OPTIONS = sorted(
    p.relative_to(CONF).with_suffix("").as_posix()
    for p in CONF.rglob("*.yaml")
    if p.parent != CONF and p.parts[len(CONF.parts)] != "tune"  # (tune/space: train.tune reads it)
)


def _compose(overrides):
    return config.compose(overrides, hydra=True)


def test_every_group_has_options():
    groups = {o.split("/")[0] for o in OPTIONS}
    assert {"data", "model", "optim", "sched", "experiment"} <= groups
    assert len(OPTIONS) >= 30


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes_and_resolves(option):
    group, name = option.rsplit("/", 1)
    cfg = _compose([f"{group}={name}", *REQUIRED.get(option, [])])
    cfg.hydra.runtime.choices  # noqa: B018 - composes with Hydra's own config too
    plain = OmegaConf.to_container(cfg.data, resolve=True)
    assert plain["_target_"].startswith(("train.data.", "train.models.usercode.data"))
    if group == "experiment":
        assert cfg.expect, f"{option} must say what result it should reach (expect:)"
        assert cfg.name == name


def test_the_slurm_preset_is_hydras_submitit_slurm_with_our_launcher_found_as_a_plugin():
    from hydra.core.plugins import Plugins

    launcher = _compose(["hydra/launcher=slurm"]).hydra.launcher
    found = Plugins.instance().class_name_to_class  # (what Hydra's plugin discovery found)
    ancestors = [f"{c.__module__}.{c.__name__}" for c in found[launcher._target_].__mro__]
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in ancestors
    assert launcher.signal_delay_s > 0 and launcher.max_num_timeout > 0
    assert launcher.tasks_per_node == 1 and launcher.partition is None  # (the site's default)


def test_typo_fails_with_the_key_named():
    with pytest.raises(ConfigCompositionException) as e:
        _compose(["trainer.max_epoch=3"])
    assert "max_epoch" in str(e.value.__cause__ or e.value)


def test_wrong_type_fails_with_the_key_named():
    with pytest.raises((ConfigCompositionException, ValidationError)) as e:
        _compose(["data.batch_size=lots"])
    assert "batch_size" in str(e.value) + str(e.value.__cause__)


def test_enum_lists_the_valid_values():
    with pytest.raises(ConfigCompositionException) as e:
        _compose(["model.activation=gelu"])
    assert "relu, sigmoid, tanh" in str(e.value.__cause__ or e.value)


def test_model_sizes_are_not_in_the_config():
    """Input and output sizes come from the data at instantiate time, never typed twice."""
    for name in ("linear", "logistic", "softmax", "mlp", "cnn"):
        keys = set(_compose([f"model={name}"]).model)
        assert not keys & {"in_shape", "num_outputs", "in_features", "num_classes"}, name


def test_sweep_presets_name_real_options():
    optims = _compose(["sweep=optimizers"]).hydra.sweeper.params["optim"].split(",")
    assert optims == ["sgd", "momentum", "adagrad", "rmsprop", "adam"]
    assert all((CONF / "optim" / f"{o}.yaml").is_file() for o in optims)
    sizes = _compose(["sweep=batch_size"]).hydra.sweeper.params["data.batch_size"]
    assert [int(b) for b in sizes.split(",")] == [2**k for k in range(4, 11)]  # 16 .. 1024


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_optimizers_take_torchs_fused_update_which_does_the_same_math(name):
    """Fused by default (faster, docs/benchmarks.md); optim.fused=false gives torch's loop."""
    import torch

    def trained(fused: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        optim = _compose([f"optim={name}", *([] if fused else ["optim.fused=false"])]).optim
        opt = build._optimizer(optim, model)
        assert bool(opt.defaults["fused"]) is fused
        x, y = torch.randn(64, 8), torch.randint(3, (64,))
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.testing.assert_close(trained(True), trained(False), rtol=1e-6, atol=1e-7)


def _schema_defaults(schema) -> dict:
    import dataclasses

    out = {}
    for f in dataclasses.fields(schema):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value is not dataclasses.MISSING and value != "???" and f.name not in {"expect"}:
            out[f.name] = getattr(value, "value", value)  # (an Enum: its YAML spelling)
    return out


def test_the_schemas_defaults_are_the_yamls_where_both_set_one():
    """A key's default lives in one place: conf/config.yaml. Where the schema carries one too
    (train/config/schema.py), it is the same, so reading the schema never misleads (it said 10
    epochs and no patience while a run got 100 and 10)."""
    from train.config import schema

    body = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    pairs = [(schema.Config, body, ""), (schema.TrainerConfig, body["trainer"], "trainer."),
             (schema.PathsConfig, body["paths"], "paths.")]  # fmt: skip
    differ = []
    for node, yaml, prefix in pairs:
        for key, value in _schema_defaults(node).items():
            if not isinstance(yaml.get(key), dict) and yaml.get(key, value) != value:
                differ.append(f"{prefix}{key}: schema {value!r}, YAML {yaml[key]!r}")
    assert not differ, differ
    assert set(schema.TrainerConfig.__dataclass_fields__) == set(body["trainer"])


@pytest.mark.parametrize("overrides, said", [
    (["modle=cnn"], "modle=cnn: Key 'modle' not in 'Config'."),
    (["model=nope"], "model=nope: In 'config': Could not find 'model/nope' Available options in "
                     "'model': cnn custom"),
    (["trainer.max_epochs=many"], "trainer.max_epochs=many: Value 'many' of type 'str' could "
                                  "not be converted to Integer."),
])  # fmt: skip
def test_a_command_s_bad_override_is_one_paragraph_that_names_it(overrides, said):
    """What every command (fetch, doctor, summary, tune, a rebuilt resume) says, in one wording."""
    from train.errors import UserError

    with pytest.raises(UserError) as e:
        config.checked(overrides, doing="x")
    assert str(e.value).startswith(f"x: {said}"), str(e.value)
    assert "\n" not in str(e.value) and "full_key" not in str(e.value)
    assert "search path" not in str(e.value)


@pytest.mark.parametrize("overrides, said", [
    (["logger.nope=1"], "unknown key 'logger.nope'. The loggers are ['csv', 'mlflow', "
                        "'tensorboard']"),
    (["logger.mlfow.retries=1"], "unknown key 'logger.mlfow'; did you mean 'logger.mlflow'?"),
    (["logger.mlflow.tracking_uri=http://h:5000"],
     "logger.mlflow.tracking_uri=http://h:5000: mlflow is not among this run's loggers "
     "(logger=[tensorboard]), so its keys mean nothing here; add it: "
     "'logger=[tensorboard,mlflow]' logger.mlflow.tracking_uri=http://h:5000"),
    (["logger=[mlflow]", "logger.mlflow.tracking_urii=x"],
     "unknown key 'logger.mlflow.tracking_urii'; did you mean 'logger.mlflow.tracking_uri'?"),
    (["logger=[tensorboard,mlfow]"], "logger=mlfow: 'mlfow' is not an option of logger; did "
                                     "you mean logger=mlflow?"),
])  # fmt: skip
def test_a_loggers_key_is_checked_before_hydra_sees_it(overrides, said):
    """Hydra would answer these with a traceback (exit 1) or advice to add the key with +."""
    from train.config import cmdline, schema
    from train.errors import UserError

    with pytest.raises(UserError) as e:
        cmdline.check(overrides, schema.Config, CONF / "config.yaml")
    assert str(e.value).startswith(said), str(e.value)
    cmdline.check(
        ["logger=[csv,mlflow]", "logger.mlflow.retries=0", "logger.csv.file=m.csv"],
        schema.Config,
        CONF / "config.yaml",
    )  # (what is chosen may be set)
