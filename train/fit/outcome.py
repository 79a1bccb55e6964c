"""What a run leaves when training is over: the best weights scored on every split,
metrics.json, and for the loggers the scores, the hparams entry, pictures and graph; and the
closing log lines (the final metrics, each `expect:` line, whether the run looks
under-trained)."""

import logging
from pathlib import Path

from train.fit import scoring
from train.run import checkpoint
from train.run.claims import swept_keys
from train.run.metrics import Metrics

log = logging.getLogger("train")


def score_and_report(run, state, timing: dict, params: dict, skipped: int) -> dict:
    """Score the best weights of `run` (a train.build.Run) on every split; metrics.json (with
    the batches `skipped` for a non-finite loss), and to the run's loggers the scores, the
    hparams (`params`), pictures and graph. The results, split -> metric -> value."""
    loop, data, s = run.loop, run.data, run.loop.settings
    _load_best(run, state)
    score_train = run.score_train or data.val is None  # (train is then the monitored)
    splits = ("train", "val", "test") if score_train else ("val", "test")
    results, confusion = scoring.score(run.model, data, loop.task, run.device, loop.autocast,
                                      splits, run.eval_batch_size)  # fmt: skip
    matrix = None if confusion is None else confusion.tolist()
    if timing["first_step_s"] is None:  # nothing trained now (a finished run resumed)
        timing = _timing_on_file(run.dir) or timing
    metrics = Metrics(
        splits=results, best_step=state.best_step, epochs=state.epoch, steps=state.step,
        seed=run.config["seed"], monitor=s.monitor, skipped_nonfinite=skipped,
        timing=timing, confusion_matrix=matrix)  # fmt: skip
    run.dir.write_metrics(metrics)
    loggers = run.loggers
    loggers.scores(results, state.step)
    curves = "val" if data.val is not None else "train"  # the metrics: the curves' last values
    loggers.hparams(params, [f"{curves}/{m}" for m in loop.task.metric_names], state.step)
    scoring.pictures(loggers, run.model, data, loop.task, run.device, confusion,
                     run.num_sample_images, state.step)  # fmt: skip
    graph(run.model, data.in_shape, loggers)
    return results


def _timing_on_file(run) -> dict | None:
    """Where the training's time went, as the RunDir's metrics.json says it (None: no readable
    file)."""
    from train.errors import UserError

    try:
        return run.metrics().timing if run.finished() else None
    except UserError:
        return None


def _load_best(run, state) -> None:
    best = run.dir.checkpoint("best")
    if best.exists():
        checkpoint.load_model(run.model, run.dir.read_checkpoint("best").model, best)
    elif state.epoch == 0:  # stopped (max_steps) before the first epoch ended
        log.info("no epoch finished, so no best.pt: scoring the current weights")
    else:  # every epoch's monitored value was NaN: none was ever the best
        log.warning("no best.pt: %s was not finite at any of the %d epoch(s) (%s); scoring "
                    "the last weights", run.loop.settings.monitor, state.epoch,
                    ", ".join(f"{v:.4g}" for v in state.history[-5:]))  # fmt: skip


def conclude(run, state, results: dict, goals: list[tuple[str, str, float]],
             stopped_early: bool) -> float:  # fmt: skip
    """The closing lines: final metrics, expectations, under-training advice (none after an
    early stop). The monitored value (what a sweep optimises)."""
    s = run.loop.settings
    reached = log_results(results, goals)
    advice = None if stopped_early else scoring.undertrained(state.history, s, state)
    if advice is not None and not (goals and reached):  # (a preset whose goals are met: done)
        log.warning("%s: python -m train resume=%s trainer.max_epochs=%d continues this run.",
                    advice, run.dir.path, 2 * state.epoch)  # fmt: skip
    monitored = results.get("val", results.get("train"))
    return monitored[s.monitor]


def graph(model, in_shape, loggers) -> None:
    """The model graph to the loggers (TensorBoard's graph: traced in eval mode, no dropout
    draw, no batch-norm update); after training, so tracing does not delay the first step."""
    import torch

    param = next(model.parameters())
    model.eval()
    try:
        loggers.graph(model, torch.zeros(1, *in_shape, device=param.device))
    except Exception as e:  # noqa: BLE001 - a model that does not trace still trains
        log.warning("no model graph in TensorBoard (%s: %s)", type(e).__name__, e)


def flat(results: dict) -> dict:
    return {f"{split}/{k}": v for split, metrics in results.items() for k, v in metrics.items()}


def hparams(record: dict, choices: dict, overrides: list[str], run_dir: Path) -> dict:
    """The knobs that tell runs of a sweep apart: the keys the sweep varies first, then the
    rest of the command line's overrides, then the group choices and every leaf value."""
    swept = swept_keys(run_dir.parent / "multirun.yaml")
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


def log_results(results: dict, goals: list[tuple[str, str, float]]) -> bool:
    """The final metrics and each expectation into the log; whether all were reached."""
    for split, metrics in results.items():
        log.info("final %s: %s", split, " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    values, reached = flat(results), True
    for key, op, target in goals:
        value = values.get(key)
        ok = value is not None and (value >= target if op == ">=" else value <= target)
        reached &= ok
        log.info("expected %s %s %g: %s (%s)", key, op, target, "reached" if ok else "NOT reached",
                 "missing" if value is None else f"{value:.4g}")  # fmt: skip
    return reached
