"""metrics.csv (logger=[tensorboard,csv]): one row per epoch, `epoch`, `step`, then one column
per metric (train/loss, val/accuracy, vitals/lr, ...), for people who plot with pandas. A
resumed run keeps the rows up to its checkpoint's step and goes on from there, as TensorBoard's
curves do."""

import csv
import io

from train.loggers import Logger


class CsvFile(Logger):
    """The run dir's metrics.csv (`name`), rewritten whole and atomically at each epoch."""

    name = "csv"

    def __init__(self, run, file: str = "metrics.csv"):
        """`run`: the train.run.rundir.RunDir it goes in."""
        self.run, self.file = run, file
        self.rows: list[dict] = []

    def start(self, record, resume_step: int | None) -> None:
        if resume_step is not None and (self.run.path / self.file).is_file():
            rows = csv.DictReader(io.StringIO(self.run.read(self.file)))
            self.rows = [row for row in rows if int(row["step"]) <= resume_step]

    def scalars(self, values: dict[str, float], step: int, epoch: int | None = None) -> None:
        if epoch is None:  # (a step's loss: the CSV holds epochs)
            return
        self.rows.append({"epoch": epoch, "step": step, **values})
        self.run.write(self.file, self._text(), "its metrics.csv", sync=False)

    def _text(self) -> str:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()
