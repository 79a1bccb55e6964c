"""Where the configs live, and the one way every command (and the tests) composes one:
`CONF_DIR`, `register()` (the schemas, on demand, never at import), `compose()`, and
`checked()` for the commands, whose bad overrides are a user's error. The `${train.*:...}`
resolvers conf/config.yaml's hydra node uses answer from an invocation's own
train.run.claims.Claims, registered by whoever made it."""

from pathlib import Path

# An absolute path: run as `python -m train`, Hydra would look for a Python package named conf.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def register() -> None:
    """The schemas into Hydra's ConfigStore; idempotent."""
    from train.config import schema

    schema.register()
    schema.register_commands()


def compose(overrides: list[str], name: str = "config", hydra: bool = False):
    """The config `python -m train <overrides>` (or the command `name`) runs with, composed
    without running anything; `hydra` also returns the `hydra` node."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(name, overrides=list(overrides), return_hydra_config=hydra)


MERGING = "Error merging override "  # (how Hydra says a value could not be merged)


def checked(overrides: list[str], hydra: bool = False, doing: str | None = None):
    """`compose()` for a command: Hydra's or OmegaConf's error (a typo'd key, an unknown
    option, a value of the wrong type) becomes one paragraph naming the overrides, exit 2.
    `doing`: what the composing was for, said first."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from train.errors import UserError, plain

    try:
        return compose(overrides, hydra=hydra)
    except (HydraException, OmegaConfBaseException) as e:
        # (Hydra wraps a value's error; its cause says it plainly, without OmegaConf's key dump;
        # an unknown option's list of options is worth keeping, Hydra's search path is not)
        why = plain(e.__cause__).split(" full_key:")[0] if e.__cause__ else plain(e)
        why = why.split(" Config search path:")[0]
        top = plain(e)  # (a value's error names the one override: name only that one)
        named = top.removeprefix(MERGING) if top.startswith(MERGING) else " ".join(overrides)
        said = f"{named}: {why}." if named else f"{why}."
        raise UserError(f"{doing}: {said}" if doing else said) from None
