"""The command line, checked before Hydra sees it: what Hydra would answer with a parser's
traceback (`data.path=my pics (1)`: LexerNoViableAltException) or with advice that hides the
typo (`modle=cnn`: "use +modle=cnn") becomes one paragraph of ours, naming the key."""

import dataclasses
import difflib
import shlex
from pathlib import Path

from train.errors import UserError

# What the parser reads as syntax in a value: a value holding any of these must be quoted.
SYNTAX = set(" ()[]{}'\",=:$\\*?~#")


def check(overrides: list[str], schema, primary: Path | None = None) -> None:
    """Refuse overrides Hydra cannot parse (with the quoting that works), top-level keys no
    config has and group options that do not exist (each with the closest valid one).
    `schema`: the command's config dataclass; `primary`: its YAML, whose defaults list names
    the groups it takes (conf/config.yaml: data, model, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    groups = _groups(primary) if primary is not None else {}
    known = sorted({f.name for f in dataclasses.fields(schema)} |
                   {g.split("/")[0] for g in groups})  # fmt: skip
    for text in overrides:
        try:
            (parsed,) = parser.parse_overrides([text])
        except OverrideParseException:
            raise UserError(_unparsable(text)) from None
        key = parsed.key_or_group
        if parsed.is_add() or parsed.is_delete() or key.startswith("hydra"):
            continue  # (+key: checked once composed; hydra's own keys: Hydra's)
        top = key.split(".")[0].split("/")[0]
        if top not in known:
            raise UserError(_unknown(key, top, known))
        if top not in groups:
            _check_nested(key, schema)
        elif top == "logger" and key != "logger":  # (the loggers' keys are typed in full)
            _check_logger(text, key, _chosen(overrides, primary, "logger"), schema)
        if key in groups and parsed.value() is None:
            raise UserError(f"{text}: to choose no {key}, leave {key}= off the command line; "
                            f"its options are {groups[key]}.")  # fmt: skip
        if key in groups and isinstance(value := parsed.value(), str):
            _check_option(key, value, groups[key])
        elif key in groups and isinstance(value, list):  # (logger=[tensorboard,mlflow])
            for one in value:
                _check_option(key, str(one), groups[key])


def help_text(overrides: list[str], primary: Path) -> str:
    """`python -m train --help`, as Hydra's template in `primary` (hydra.help.template) lays it
    out: the groups the defaults list names with their options, and the composed config. Made
    here: Hydra's own builds a config repository per group option (4 s on our machines)."""
    from omegaconf import OmegaConf

    from train import config

    cfg = config.compose(overrides, hydra=True)
    template = cfg.hydra.help.template
    groups = "\n".join(f"{g}: {', '.join(options)}" for g, options in
                       sorted(_groups(primary).items()))  # fmt: skip
    body = OmegaConf.to_container(cfg, resolve=False)
    body.pop("hydra", None)
    return template.replace("$APP_CONFIG_GROUPS", groups + "\n").replace(
        "$CONFIG", OmegaConf.to_yaml(OmegaConf.create(body))
    )


def check_argv(schema) -> None:
    """`check` on this command line's overrides (its flags left out)."""
    import sys

    check(split_args(sys.argv[1:])[1], schema)


def paths(value) -> list[str]:
    """A `code=` value: one path, or a list of them."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _unparsable(text: str) -> str:
    key, eq, value = text.partition("=")
    if not eq:
        return (f"{text!r} is not an override: give key=value (data.path=pics), group=option "
                "(model=cnn) or a flag (--help).")  # fmt: skip
    inner = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    quoted = shlex.quote(f"{key}={inner}")
    odd = sorted({c for c in value if c in SYNTAX})
    which = f" ({' '.join(map(repr, odd))})" if odd else ""
    if not odd and any(ord(c) > 127 for c in value):
        which = " (letters outside ASCII, which it reads only inside quotes)"
    return (
        f"the value of {key}, {value!r}, holds characters Hydra's override grammar reads as "
        f"syntax{which}; quote the value inside the override, as {quoted} (the outer quotes "
        "are for your shell, the inner ones for Hydra)."
    )


def _unknown(key: str, top: str, known: list[str]) -> str:
    close = difflib.get_close_matches(top, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return (f"unknown key {top!r} (in {key}=...){hint} The keys are {known}; --help lists "
            "them with their options.")  # fmt: skip


def _check_nested(key: str, schema) -> None:
    """A dotted key under a section the schema types fully (trainer.*, paths.*): each part a
    field of its dataclass. (A group's keys depend on the option chosen: checked composed.)"""
    node, parts = schema, key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            return
        fields = {f.name: f.type for f in dataclasses.fields(node)}
        if part not in fields:
            where = ".".join(parts[:i])
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f"; did you mean '{where}.{close[0]}'?" if close else "."
            raise UserError(f"unknown key '{'.'.join(parts[: i + 1])}'{hint} The keys of "
                            f"{where} are {sorted(fields)}.")  # fmt: skip
        node = fields[part]


def _chosen(overrides: list[str], primary: Path | None, group: str) -> list[str]:
    """The options of a list group (logger) this command line picks: its last group=...
    override, else the defaults list of `primary`."""
    from omegaconf import OmegaConf

    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == group]
    if given:
        value = given[-1].strip()
        return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    for entry in OmegaConf.load(primary).get("defaults", []) if primary is not None else []:
        if isinstance(entry, dict | type(OmegaConf.create())) and group in entry:
            value = entry[group]
            return [str(v) for v in value] if not isinstance(value, str) else [value]
    return []


def _check_logger(text: str, key: str, chosen: list[str], schema) -> None:
    """logger.<name>.<key>: a logger there is, among this run's, and a key it has."""
    import typing

    loggers = {f.name: f.type for f in dataclasses.fields(schema)}["logger"]
    kinds = {f.name: f.type for f in dataclasses.fields(loggers)}
    name, *rest = key.split(".")[1:]
    if name not in kinds:
        close = difflib.get_close_matches(name, list(kinds), n=1)
        hint = f"; did you mean 'logger.{close[0]}'?" if close else "."
        raise UserError(f"unknown key 'logger.{name}'{hint} The loggers are {sorted(kinds)} "
                        "(logger=[tensorboard,mlflow,csv] picks them).")  # fmt: skip
    if name not in chosen:
        both = ",".join([*chosen, name])
        raise UserError(
            f"{text}: {name} is not among this run's loggers (logger=[{','.join(chosen)}]), so "
            f"its keys mean nothing here; add it: 'logger=[{both}]' {text}"
        )
    option = next(t for t in typing.get_args(kinds[name]) if dataclasses.is_dataclass(t))
    fields = sorted(f.name for f in dataclasses.fields(option))
    if rest and rest[0] not in fields:
        close = difflib.get_close_matches(rest[0], fields, n=1)
        hint = f"; did you mean 'logger.{name}.{close[0]}'?" if close else "."
        raise UserError(f"unknown key 'logger.{name}.{rest[0]}'{hint} The keys of "
                        f"logger.{name} are {fields}.")  # fmt: skip


def _check_option(group: str, value: str, options: list[str]) -> None:
    if value in options or value in ("null", "none") and "none" not in options:
        return
    close = difflib.get_close_matches(value, options, n=1)
    hint = f"; did you mean {group}={close[0]}?" if close else "."
    raise UserError(f"{group}={value}: {value!r} is not an option of {group}{hint} Its options "
                    f"are {options}.")  # fmt: skip


def _groups(primary: Path) -> dict[str, list[str]]:
    """The config groups the defaults list of `primary` names (data, model, ...), each with
    its options (the YAML files in its folder beside `primary`)."""
    from omegaconf import OmegaConf

    found = {}
    for entry in OmegaConf.load(primary).get("defaults", []):
        if not isinstance(entry, dict | type(OmegaConf.create())):
            continue
        for key in entry:
            group = str(key).removeprefix("optional ").removeprefix("override ").strip()
            if not group.startswith("hydra"):
                found[group] = sorted(p.stem for p in (primary.parent / group).glob("*.yaml"))
    return found


def usage(doc: str, schema) -> str:
    """A command's --help: its docstring, then its keys with their defaults."""
    from omegaconf import OmegaConf

    keys = OmegaConf.to_yaml(OmegaConf.structured(schema)).rstrip()
    return f"{doc.rstrip()}\n\nKeys (key=value), with their defaults:\n{keys}\n"


# Hydra's flags that take a value: their value is not an override.
FLAGS_WITH_VALUES = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp",
                     "--config-name", "-cn", "--config-dir", "-cd"}  # fmt: skip


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (with their values) and the overrides, apart."""
    flags, overrides, take = [], [], False
    for a in argv:
        if take or a.startswith("-"):
            flags.append(a)
            take = not take and a in FLAGS_WITH_VALUES
        else:
            overrides.append(a)
    return flags, overrides


def resume_value(overrides: list[str]) -> str | None:
    """The command line's resume= value (the last one), or None."""
    values = [o.split("=", 1)[1] for o in overrides if o.startswith("resume=")]
    return values[-1] if values else None
