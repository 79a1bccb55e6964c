"""Every typed file a run writes (a checkpoint, run.json, metrics.json, the data's description)
follows one format scheme: written as its FORMAT, read back by its one reader, older formats
upgraded, any other refused in one line naming the file."""

import json

import pytest
import torch

from train.errors import UserError
from train.run import checkpoint
from train.run.checkpoint import Checkpoint
from train.run.formats import MOVED_TARGETS, Typed
from train.run.meta import DataMeta
from train.run.metrics import Metrics
from train.run.record import RunRecord

TYPED = [Checkpoint, RunRecord, Metrics, DataMeta]


def test_every_typed_file_is_on_the_one_scheme():
    assert all(issubclass(cls, Typed) for cls in TYPED)
    for cls in TYPED:  # (the dataclass field a file carries is the class's FORMAT)
        assert cls.__dataclass_fields__["format"].default == cls.FORMAT
        assert set(cls.UPGRADES) <= set(range(1, cls.FORMAT))


def _record(**changes) -> dict:
    return {"overrides": ["data=digits"], "seed": 0, "config": {"seed": 0}, **changes}


def _metrics(**changes) -> dict:
    return {"test": {"accuracy": 0.9}, "best_step": 3, "epochs": 1, "steps": 3, "seed": 0,
            "monitor": "loss", **changes}  # fmt: skip


@pytest.mark.parametrize("cls, blob", [(RunRecord, _record), (Metrics, _metrics)])
def test_a_json_file_of_a_newer_format_is_refused_in_one_line(tmp_path, cls, blob):
    path = tmp_path / "f.json"
    path.write_text(json.dumps(blob(format=cls.FORMAT + 1)))
    with pytest.raises(UserError, match=rf"f.json is a {cls.WHAT} of format {cls.FORMAT + 1}; "
                       rf"this version of train reads formats 1 to {cls.FORMAT}"):  # fmt: skip
        cls.read(path)
    path.write_text(json.dumps(blob(format="2")))  # (a string is no format)
    with pytest.raises(UserError, match="of format '2'"):
        cls.read(path)


def test_files_from_before_formats_were_recorded_are_format_1(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(_record()))
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics()))
    assert RunRecord.read(tmp_path / "run.json").format == RunRecord.FORMAT
    assert Metrics.read(tmp_path / "metrics.json").splits == {"test": {"accuracy": 0.9}}


def test_a_format_1_run_record_names_its_models_as_this_version_does(tmp_path):
    config = {"seed": 0, "model": {"_target_": "train.usercode.model", "code": "net.py"}}
    (tmp_path / "run.json").write_text(json.dumps(_record(format=1, config=config)))
    got = RunRecord.read(tmp_path / "run.json")
    assert got.config["model"] == {"_target_": "train.models.usercode.model", "code": "net.py"}


def test_the_data_description_reads_what_older_checkpoints_called_version():
    meta = {"task": "classification", "in_shape": [1, 8, 8], "num_outputs": 10,
            "num_classes": 10, "class_names": list("0123456789"), "scale": 16.0,
            "mean": [0.3], "std": [0.4]}  # fmt: skip
    assert DataMeta.read({**meta, "version": 2}, "old.pt").format == DataMeta.FORMAT
    assert DataMeta.read(meta, "oldest.pt").feature_names is None  # (format 1: no "version")
    with pytest.raises(UserError, match="new.pt's data is a data description of format 3"):
        DataMeta.read({**meta, "version": 3}, "new.pt")
    with pytest.raises(UserError, match="new.pt's data is a data description of format 3"):
        DataMeta.read({**meta, "format": 3}, "new.pt")


def test_every_moved_target_names_a_callable_this_version_allows():
    from train.config import targets

    allowed = {t for group in targets.ALLOWED.values() for t in group}
    assert set(MOVED_TARGETS.values()) <= allowed
    assert not set(MOVED_TARGETS) & allowed  # (an old name is never a current one)


def test_a_checkpoint_written_now_reads_back_as_written(tmp_path):
    model = torch.nn.Linear(2, 1)
    blob = {"model": model.state_dict(), "optimizer": {}, "scheduler": None, "scaler": {},
            "state": {"step": 1}, "rng": {}, "config": {}, "data": {}, "callbacks": {},
            "format": Checkpoint.FORMAT}  # fmt: skip
    checkpoint.save(tmp_path / "c.pt", blob)
    assert Checkpoint.read(tmp_path / "c.pt").format == Checkpoint.FORMAT
