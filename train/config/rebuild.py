"""Continuing a run: `resume=<run dir or checkpoint>` rebuilds the run's own config from its
record (its overrides), applies what the command line adds, and refuses any change that would
make the continuation something other than that run, before anything is written.

What may change: how long to train, how often to log, checkpoint or print, where it reports
(logger), the device and the paths (train.run.resume.LOOSE). Everything else (model, data,
optimizer, seed, ...) must stay as the run's checkpoint says, or the resume is refused in one
paragraph naming each changed key.
"""

from pathlib import Path

from train.errors import UserError
from train.run.resume import (
    LOOSE,
    LOOSE_TRAINER,
    recorded_overrides,
    resume_checkpoint,
    resumed_run_dir,
)


def rebuild(flags: list[str], given: list[str], where: str, compose,
            model_given: bool = False) -> list[str]:  # fmt: skip
    """The arguments that continue the run at `where`: its recorded overrides, then `given`.
    Refused, naming each key, when they would change the run (see the module's docstring).
    `model_given`: train.api was handed the model (a run of an object resumes only so)."""
    from train.config import schema
    from train.run.checkpoint import Checkpoint

    run, path = resumed_run_dir(where), resume_checkpoint(where)
    blob = Checkpoint.read(path)
    stored, choices = blob.config, blob.choices or {}
    consented(stored, blob.origin, given, run, model_given)
    swapped = [f"{group}: {choices[group]!r} -> {value!r}" for group, value in
               (o.split("=", 1) for o in given if "=" in o)
               if group in choices and group not in LOOSE
               and str(choices[group]) != value]  # fmt: skip
    if swapped:  # another model, data set, optimizer...: refused before composing
        raise refusal(run, swapped)
    args = merged(recorded_overrides(run), given)
    composed = compose(args)
    if unknown := schema.unknown_keys(composed):
        raise UserError(f"no such config key: {', '.join(unknown)}. Nothing in {run} was touched.")
    if found := changes(stored, composed):
        raise refusal(run, found)
    return [*flags, *args]


# A run's own code files: their paths may change (a copy elsewhere), their SHA-256 may not.
CODE_KEYS = ("model.code", "data.code")


def consented(stored: dict, origin: dict | None, given: list[str], run: Path,
              model_given: bool = False) -> None:  # fmt: skip
    """A run that trained a user's code resumes only when this command line names the file
    again (model.code=..., data.code=...) and it is the one recorded (its SHA-256): a record
    never runs code by itself. A run of a model object (train.api) resumes only with it."""
    from train.models import usercode

    if (stored.get("model") or {}).get("_target_") == usercode.OBJECT and not model_given:
        usercode.in_process(None, 0, stored["model"].get("name", "?"))  # (refused, saying so)
    for key in CODE_KEYS:
        group = key.split(".")[0]
        if (stored.get(group) or {}).get("_target_") not in (usercode.MODEL, usercode.DATA):
            continue
        named = [o.split("=", 1)[1] for o in given if o.startswith(f"{key}=")]
        recorded = (origin or {}).get(group)
        if not named:
            was = recorded["file"] if recorded else "<unrecorded>"
            raise UserError(
                f"resume={run} trained your {group} code, {was}; a run's record never runs code "
                f"by itself: name it again to resume, {key}={was} (the same file, unchanged). "
                "Nothing in the run dir was touched."
            )
        usercode.Consent(named[-1:]).file_for(f"{group} code", recorded)


# How long to train, as one decision: the command line giving either replaces both recorded.
HOW_LONG = ("trainer.max_epochs", "trainer.max_steps")


def merged(recorded: list[str], given: list[str]) -> list[str]:
    """Overrides by key, the command line's last; the resume= of the record dropped, and the
    recorded epoch and step limits when the command line says how long to train."""
    keys = {o.split("=", 1)[0] for o in given}
    drop = ("resume", *HOW_LONG) if keys & set(HOW_LONG) else ("resume",)
    by_key: dict[str, str] = {}
    for o in [*(r for r in recorded if r.split("=", 1)[0] not in drop), *given]:
        by_key.pop(o.split("=", 1)[0], None)  # (re-inserted: keeps the newest order)
        by_key[o.split("=", 1)[0]] = o
    return list(by_key.values())


def changes(stored: dict, composed) -> list[str]:
    """Where the composed config differs from the run's checkpoint, outside the loose keys.
    Values that follow the paths (e.g. data.root: ${paths.data_dir}) go with the paths."""
    from omegaconf import OmegaConf

    now = {}
    for key in composed:
        if key in LOOSE:
            continue
        node = composed[key]
        now[key] = OmegaConf.to_container(node, resolve=True, enum_to_str=True) \
            if OmegaConf.is_config(node) else node  # fmt: skip
    follows_paths = _paths_interpolations(composed)
    out: list[tuple[str, object, object]] = []
    for key in sorted(set(now) | {k for k in stored if k not in LOOSE}):
        _diff(key, stored.get(key, "<absent>"), now.get(key, "<absent>"), follows_paths, out)
    swapped = {k.rsplit(".", 1)[0] for k, _, _ in out if k.endswith("._target_")}
    return [f"{k.rsplit('.', 1)[0] if k.endswith('._target_') else k}: {was!r} -> {now!r}"
            for k, was, now in out if k.endswith("._target_")
            or not any(k.startswith(f"{group}.") for group in swapped)]  # fmt: skip


# Keys added since runs were first recorded: a record without one had what it defaults to.
ADDED = {"data.augment": "auto", "optim.backbone_lr_scale": 1.0, "trainer.label_smoothing": 0.0}


def _diff(key: str, was, now, skip: set[str], out: list) -> None:
    if key in skip or key.startswith("trainer.") and key.split(".", 1)[1] in LOOSE_TRAINER:
        return
    if key in CODE_KEYS or was == "<absent>" and key in ADDED and ADDED[key] == now:
        return  # (a code file is checked by its SHA-256, in `consented`)
    if key == "seed" and now is None:  # seed=null: the run's drawn seed goes on
        return
    if isinstance(was, dict) and isinstance(now, dict):
        for k in sorted(set(was) | set(now)):
            _diff(f"{key}.{k}", was.get(k, "<absent>"), now.get(k, "<absent>"), skip, out)
    elif was != now:
        out.append((key, was, now))


def _paths_interpolations(cfg) -> set[str]:
    """Keys whose value is an interpolation of a path (${paths....}, ${oc.env:...})."""
    from train.config.schema import nodes

    return {key for key, node in nodes(cfg) if node._is_interpolation()
            and ("paths." in str(node._value()) or "oc.env" in str(node._value()))}  # fmt: skip


def refusal(run: Path, found: list[str]) -> UserError:
    shown = "; ".join(found[:20]) + (f"; and {len(found) - 20} more" if len(found) > 20 else "")
    return UserError(
        f"resume={run} would change what the run is, not only how long it trains: {shown}. A "
        "resume may change how long to train (trainer.max_epochs, max_steps, patience), logging "
        "(logger= too), the device and paths; anything else is a new run: start one (drop "
        "resume=). Nothing in the run dir was touched."
    )
