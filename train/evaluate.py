"""`python -m train.evaluate run=<run dir>`: score a run's checkpoint on a split, no retraining.

Prints the metrics (and the confusion matrix for classifiers) and saves them as
`<run>/evaluation-<split>.json` (numbered, never over an earlier one).
"""

import logging
from contextlib import nullcontext
from pathlib import Path

import hydra
from omegaconf import DictConfig

from train import config
from train.config import cmdline, schema
from train.errors import UserError, run_entrypoint
from train.run.rundir import RunDir

log = logging.getLogger("train")
SPLITS = ("train", "val", "test")


def main() -> None:
    config.register()
    run_entrypoint(
        lambda: cmdline.check_argv(schema.EvaluateConfig) or _hydra_main(),
        usage=cmdline.usage(__doc__, schema.EvaluateConfig),
    )


@hydra.main(config_path=config.CONF_DIR, config_name="evaluate", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    out = Path(cfg.out) if cfg.out is not None else None
    evaluate_run(Path(cfg.run), cfg.checkpoint, cfg.split, cfg.device, cfg.batch_size, out,
                 cmdline.paths(cfg.code))  # fmt: skip


def evaluate_run(run: Path, which: str, split: str, device_name: str,
                 batch_size: int | None = None, out: Path | None = None, code=(),
                 model=None) -> dict:  # fmt: skip
    """Score `run`'s `which` checkpoint on `split`; returns what it saves (in `out`, or the
    run dir's evaluation-<split>.json). `code`: the run's own code files, if it trained a
    user's (train.usercode); `model`: the class, if it trained an object (train.api)."""
    import torch

    from train.fit import scoring
    from train.run import files
    from train.system.device import choose
    from train.trained import load

    _check_request(run, which, split, out)
    trained = load(run, which, code, model)
    path, meta = trained.path, trained.meta
    device, why = choose(device_name)
    data = trained.data()
    # Score with the normalisation the model was trained with, whatever the data looks like now.
    data.mean, data.std = torch.tensor(meta.mean), torch.tensor(meta.std)
    if getattr(data, split) is None:
        have = [s for s in SPLITS if getattr(data, s) is not None]
        raise UserError(f"split={split}: this run's data has no {split} split; it has {have}.")
    model = trained.model.to(device)
    size = batch_size or trained.config["data"].get("eval_batch_size") or 1024
    results, confusion = scoring.score(model, data, trained.task, device, nullcontext,
                                      splits=(split,), batch_size=size)  # fmt: skip
    saved = {
        "run": str(run),
        "checkpoint": str(path),
        "split": split,
        "step": trained.step,
        "metrics": results[split],
    }
    log.info("%s on %s (%s, %s): %s", path, split, device, why,
             " ".join(f"{k} {v:.4g}" for k, v in results[split].items()))  # fmt: skip
    if confusion is not None:
        saved["confusion_matrix"] = confusion.tolist()
        log.info(
            "confusion matrix (rows true, columns predicted; classes %s):\n%s",
            meta.class_names,
            "\n".join(" ".join(f"{v:5d}" for v in row) for row in confusion.tolist()),
        )
    if out is None:
        dest = RunDir(run).write_json(f"evaluation-{split}.json", saved, numbered=True)
    else:  # (a file of the user's own, outside the run dir)
        dest = out
        files.write_json(out, saved)
    log.info("saved %s", dest)
    return saved


def _check_request(run: Path, which: str, split: str, out: Path | None) -> None:
    """Before any work: valid choices, and a place to save that is writable and not a link."""
    from train.run import files

    if split not in SPLITS or which not in ("best", "last"):
        raise UserError(
            f"split={split}, checkpoint={which}: use split one of {SPLITS} and "
            "checkpoint best or last."
        )
    if out is not None and out.exists():
        raise UserError(f"out={out} already exists; give a new file name (nothing is overwritten).")
    files.writable(out.parent if out is not None else run, "the evaluation",
                    "give out=<file.json> somewhere writable.")  # fmt: skip
    if out is None:  # (it writes into the run dir: one holding a planted link is refused)
        RunDir(run).refuse_links()


if __name__ == "__main__":
    main()
