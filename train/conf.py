"""Where the configs live, and the one way every command (and the tests) composes one:
`CONF_DIR`, `register()` (the schemas and resolvers, on demand, never at import) and
`compose()`."""

from pathlib import Path

# An absolute path: run as `python -m train`, Hydra would look for a Python package named conf.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def register() -> None:
    """The schemas into Hydra's ConfigStore and the `${train.*:...}` resolvers into OmegaConf;
    idempotent."""
    from train import config, rundir

    config.register()
    config.register_commands()
    rundir.register_resolvers()


def compose(overrides: list[str], name: str = "config", hydra: bool = False):
    """The config `python -m train <overrides>` (or the command `name`) runs with, composed
    without running anything; `hydra` also returns the `hydra` node."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(name, overrides=list(overrides), return_hydra_config=hydra)
