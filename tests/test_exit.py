"""The exit path: `python -m train` ends with os._exit once the run is over (the interpreter's
teardown of torch cost ~0.5-1.4 s), so nothing Python would do at exit may be needed by then.
A real process, with os.fsync recorded by a sitecustomize: every checkpoint and record is
fsynced before the rename, TensorBoard's events hold the last epoch, the log its last line."""

import json
import os
import sys
from pathlib import Path

from runs import events, the_run

RECORDER = """
import os
_fsync, _log = os.fsync, os.environ["FSYNC_LOG"]
def fsync(fd):
    _fsync(fd)
    with open(_log, "a") as f:
        f.write(os.readlink(f"/proc/self/fd/{fd}") + "\\n")
os.fsync = fsync
"""


def test_the_exit_path_fsyncs_checkpoints_and_records_and_flushes_events_and_logs(cli, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    log = tmp_path / "fsync.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), *sys.path]),
           "FSYNC_LOG": str(log)}  # fmt: skip
    out = cli("experiment=linear_regression", "trainer.max_epochs=40", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    run = the_run(tmp_path / "runs")
    synced = log.read_text().splitlines()
    for name in ("last.pt", "best.pt", "metrics.json", "run.json"):
        final = next(run.rglob(name))
        assert any(Path(p).parent == final.parent and name in Path(p).name for p in synced), (
            name,
            synced,
        )
        assert str(final.parent) in synced  # (the rename itself: the folder's entry)
    assert [e.step for e in events(run).Scalars("train/loss")][-1] == 40
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 40
    last_line = out.stdout.strip().splitlines()[-1]
    assert last_line and last_line in (run / "train.log").read_text()
