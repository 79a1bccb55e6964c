"""MkDocs hooks: the reference pages, generated from the code at every build so they cannot go
stale. The configuration reference comes from the typed schema (train/config/schema.py) and the YAML
under conf/ (values and their comments), the commands' reference from each command's --help."""

import dataclasses
import enum
import re
import subprocess
import sys
import typing
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
GROUPS = ["data", "model", "optim", "sched", "logger"]  # their keys live under the group
PRESETS = ["experiment", "tuned", "sweep"]  # global overrides: shown as the lines they set
CONFIG_INTRO = """# Configuration

Generated at build time from the typed schema (`train/config/schema.py`) and the YAML under `conf/`:
every key, its type, its default as the YAML sets it (where the YAML and the schema differ, the
YAML's value is the one a run gets) and its comment. `???` is a value you must give. Set any of
them on the command line, `key=value`; choose a group's option with `group=option`.
"""
COMMANDS_INTRO = """# Commands

Each command's own `--help`, generated at build time. Every one is also a console script of the
same name with a dash (`train.evaluate` is `train-evaluate`).
"""


def on_files(files, config):
    from mkdocs.structure.files import File

    for uri, make in GENERATED.items():
        files.append(File.generated(config, uri, content=make()))
    return files


# --- the configuration -------------------------------------------------------------------------


def comments(path: Path) -> dict[str, str]:
    """Each dotted key of a YAML file and its comment: the one on its line, else the block just
    above it ('' for none); '' maps to the file's leading block (what the file is)."""
    notes, block, stack, leading = {}, [], [], True
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            block.append(text.lstrip("# ").rstrip())
            continue
        if leading and block:
            notes[""] = " ".join(b for b in block if not b.startswith("@package"))
        leading = False
        match = re.match(r"( *)([A-Za-z_][\w]*):(.*)$", line)
        if not match:
            block = []
            continue
        indent, key, rest = len(match[1]), match[2], match[3]
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        note = rest.split(" # ", 1)[1].strip() if " # " in rest else " ".join(block)
        notes[".".join(k for _, k in stack)] = note
        block = []
    return notes


def schema_notes() -> dict[tuple[str, str], str]:
    """(class, field) -> the comment on the field's line in train/config/schema.py."""
    notes, cls, block = {}, None, []
    for line in (ROOT / "train" / "config" / "schema.py").read_text().splitlines():
        if m := re.match(r"class (\w+)", line):
            cls, block = m[1], []
        elif m := re.match(r"    # (.*)$", line):
            block.append(m[1])
        elif cls and (m := re.match(r"    (\w+): ([^#]*#\s*(.+))?", line)):
            notes[(cls, m[1])] = m[3] or " ".join(block)
            block = []
    return notes


def type_name(hint) -> str:
    name = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    text = name or str(hint).replace("typing.", "")
    return re.sub(r"\btrain\.config\.|<class '|'>|<enum '", "", text).replace("NoneType", "None")


def fields(schema) -> dict[str, tuple[str, str]]:
    """A schema's keys, nested ones dotted: key -> (type, note from the schema)."""
    notes, out = schema_notes(), {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and f.name not in GROUPS:
            for key, value in fields(hint).items():
                out[f"{f.name}.{key}"] = value
        elif f.name not in GROUPS and not f.name.startswith("_"):
            own = next((notes[(c.__name__, f.name)] for c in schema.__mro__
                        if (c.__name__, f.name) in notes), "")  # fmt: skip
            kinds = typing.get_args(hint) or (hint,)
            choices = [e for e in kinds if isinstance(e, type) and issubclass(e, enum.Enum)]
            kind = " | ".join(m.value for m in choices[0]) if choices else type_name(hint)
            out[f.name] = (kind, own)
    return out


def flat(tree, prefix="") -> dict[str, object]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def shown(value) -> str:
    text = "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip()
    return "`" + text.removesuffix("\n...") + "`"


def table(rows) -> list[str]:
    """A Markdown table of (key, type, default, note); a | inside a cell is escaped."""

    def cells(*texts):
        return "| " + " | ".join(t.replace("|", "\\|") for t in texts) + " |"

    lines = ["| key | type | default | what it is |", "|---|---|---|---|"]
    return lines + [cells(f"`{k}`", t, shown(v), n) for k, t, v, n in rows]


def option_schema(body: dict):
    """The dataclass an option's YAML starts from (its `/schema/<group>/<name>` default)."""
    from train.config import schema

    schema.register()
    for entry in body.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/schema/"):
            group, name = entry.split("@")[0].split("/")[2:4]
            node = schema.ConfigStore.instance().repo["schema"][group][f"{name}.yaml"].node
            return node._metadata.object_type
    return None


def option_rows(path: Path, group: str) -> list:
    body = yaml.safe_load(path.read_text()) or {}
    schema, notes = option_schema(body), comments(path)
    if set(body) - {"defaults"} == {path.stem}:  # (a list group's option: logger.<name>.*)
        body, group = body[path.stem], f"{group}.{path.stem}"
    known = fields(schema) if schema else {}
    values = {k: v for k, v in flat({k: v for k, v in body.items() if k != "defaults"}).items()
              if k and not k.startswith("_")}  # fmt: skip
    if schema:
        defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING
                    else f.default for f in dataclasses.fields(schema)}  # fmt: skip
        for key in known:
            values.setdefault(key, getattr(defaults.get(key), "value", defaults.get(key)))
    rows = []
    for key, value in values.items():
        kind, own = known.get(key, ("", ""))
        rows.append((f"{group}.{key}", kind, "???" if value == "???" else value,
                     notes.get(key) or own))  # fmt: skip
    return rows


def config_reference() -> str:
    from train.config import schema

    out = [CONFIG_INTRO, "## Top level, `trainer.*`, `paths.*`", ""]
    notes, body = comments(CONF / "config.yaml"), yaml.safe_load((CONF / "config.yaml").read_text())
    values = {k: v for k, v in flat(body).items() if not k.startswith(("hydra", "defaults"))}
    known = fields(schema.Config)
    rows = [(k, known.get(k, ("", ""))[0], v, notes.get(k) or known.get(k, ("", ""))[1])
            for k, v in values.items()]  # fmt: skip
    out += table(rows)
    for group in GROUPS:
        out += ["", f"## `{group}=`", ""]
        for path in sorted((CONF / group).glob("*.yaml")):
            out += [f"### `{group}={path.stem}`", "", comments(path).get("", ""), ""]
            rows = option_rows(path, group)
            out += table(rows) if rows else ["No keys of its own."]
            out.append("")
    for group in PRESETS:
        out += ["", f"## `{group}=`", ""]
        for path in sorted((CONF / group).glob("*.yaml")):
            lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
            out += [f"### `{group}={path.stem}`", "", comments(path).get("", ""), "",
                    "```yaml", *[ln for ln in lines if ln.strip()], "```", ""]  # fmt: skip
    return "\n".join(out) + "\n"


# --- the commands ------------------------------------------------------------------------------


def commands() -> list[str]:
    """The console scripts, as pyproject's [project.scripts] lists them."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return [target.split(":")[0].removesuffix(".__main__") for target in scripts.values()]


def commands_reference() -> str:
    out = [COMMANDS_INTRO]
    for module in commands():
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, text=True,
                              capture_output=True, timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"python -m {module} --help exited {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}")  # fmt: skip
        out += [f"## `python -m {module}`", "", "```text", done.stdout.rstrip(), "```", ""]
    return "\n".join(out) + "\n"


GENERATED = {"reference/config.md": config_reference, "reference/commands.md": commands_reference}
