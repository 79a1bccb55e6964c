"""Users' CSV files: read with pandas, checked cell by cell, and made into float features.

Reading: the delimiter is detected (or `data.delimiter`), a UTF-8 BOM is dropped, decimal
commas are recognised (`data.decimal`, detected where the delimiter is not a comma), and the
usual spellings of a missing value ('', NA, N/A, NaN, null, ...) are missing values. A
`TablePrep` fitted on the training rows alone turns rows into features: text columns one-hot
encoded from the training values, missing numbers filled with the training mean
(`data.missing=mean`). It is saved with the model, so predict prepares a new file the same way.
"""

import csv as csvlib
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from train.errors import UserError
from train.system.container import not_found

log = logging.getLogger("train")
DELIMITERS = (",", ";", "\t", "|")
MISSING = ("error", "drop", "mean")
MAX_CLASSES = 1000  # more "classes" than this is a number to regress, not a label
AUTO_CLASSES = 50  # data.task=auto: whole numbers with at most this many values are classes
MAX_CATEGORIES = 100  # distinct values of a text feature column (one one-hot column each)
FLOAT32_MAX = float(np.finfo(np.float32).max)
SHOWN = 10  # lines named in an error before "and N more"
# Numbers as spreadsheets write them with digit grouping: 1,585.50 (decimal point), 1.585,50 or
# 1 585,50 (decimal comma; also with the no-break spaces French locales use).
GROUPED = {".": re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?"),
           ",": re.compile(r"[+-]?\d{1,3}([. \u00a0\u202f]\d{3})+(,\d*)?")}  # fmt: skip


def line_of(row) -> int:
    """The file line of a data row (the header is line 1)."""
    return int(row) + 2


def read(path: Path, delimiter: str | None = None, decimal: str | None = None,
         encoding: str = "utf-8"):  # fmt: skip
    """The file as a pandas DataFrame, its header checked, and the decimal mark it uses. Blank
    lines are dropped; the row labels are kept (`line_of` gives a row's line in the file)."""
    import pandas as pd

    sample = _sample(path, encoding)
    sep = delimiter if delimiter is not None else _sniff(sample, path)
    dec = decimal if decimal is not None else _decimal(sample, sep)
    header = [h.strip() for h in next(csvlib.reader([sample.splitlines()[0]], delimiter=sep))]
    twice = sorted(name for name, n in Counter(header).items() if n > 1)
    if twice:
        raise UserError(
            f"{path}: the column name(s) {twice} appear more than once in the header; give "
            "every column a name of its own (a later one would be read in place of the first)."
        )
    options = dict(sep=sep, decimal=dec, encoding=_codec(encoding), skip_blank_lines=False,
                   skipinitialspace=True)  # fmt: skip
    try:
        try:  # columns of floats in the first lines read as float32: half the memory
            with np.errstate(over="ignore"):  # (1e39 becomes inf: refused, named, later)
                frame = pd.read_csv(path, dtype=_float_columns(sample, options), **options)
        except ValueError:  # a later line disagrees: read again, every type inferred
            frame = pd.read_csv(path, **options)
    except (pd.errors.ParserError, ValueError) as e:
        why = " ".join(str(e).split())
        raise UserError(f"{path} is not a well-formed CSV file: {why}.") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():  # blank lines (the row labels keep the line numbers)
        frame = frame[~blank]
    if frame.empty:
        raise UserError(f"{path} needs a header row and at least one data row.")
    return frame, dec


def _float_columns(sample: str, options: dict) -> dict:
    """The columns pandas reads as floats in the sample, to be read as float32."""
    import io

    import pandas as pd

    try:
        head = pd.read_csv(io.StringIO(sample), **{**options, "encoding": None})
    except (pd.errors.ParserError, ValueError):
        return {}
    return {c: "float32" for c in head.columns if pd.api.types.is_float_dtype(head[c])}


def _codec(encoding: str) -> str:
    """UTF-8 read as utf-8-sig: a BOM (Excel's "CSV UTF-8") is dropped, not kept in a name."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


SAMPLE_LINES, SAMPLE_BYTES = 50, 1 << 16  # the sample: 50 lines, or whole lines of 64 KB
SAMPLE_MAX = 64 << 20  # a "line" longer than this is not a CSV's


def _sample(path: Path, encoding: str) -> str:
    """The file's first lines, each whole (a 2,000-column line is longer than 64 KB)."""
    try:
        with path.open("rb") as f:
            raw, lines = b"", 0
            while lines < SAMPLE_LINES and (len(raw) < SAMPLE_BYTES or lines < 5):
                line = f.readline(SAMPLE_MAX)
                if not line:
                    break
                raw, lines = raw + line, lines + bool(line.strip())
    except FileNotFoundError:
        raise UserError(not_found("data.path", path)) from None
    except OSError as e:
        raise UserError(f"{path} cannot be read: {e.strerror or e}.") from None
    try:
        text = raw.decode(_codec(encoding))
    except UnicodeDecodeError as e:
        if e.start < len(raw) - 4:  # (not a character cut at the sample's end)
            raise UserError(
                f"{path} is not {encoding} text (byte {e.start} is {raw[e.start]:#04x}). Save it "
                "as 'CSV UTF-8', or name its encoding, e.g. data.encoding=cp1252."
            ) from None
        text = raw[: e.start].decode(_codec(encoding))
    except LookupError:
        raise UserError(f"data.encoding={encoding} is not an encoding Python knows.") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"{path} needs a header row and at least one data row.")
    return "\n".join(lines[:50])


def _sniff(sample: str, path: Path) -> str:
    """The delimiter that splits the header and the first lines into the same number (> 1) of
    fields; the one making the most fields when several do."""
    lines = sample.splitlines()[:20]
    found = {}
    for d in DELIMITERS:
        counts = {len(r) for r in csvlib.reader(lines, delimiter=d)}
        if len(counts) == 1 and (n := counts.pop()) > 1:
            found[d] = n
    if not found:
        if len({len(r) for r in csvlib.reader(lines)}) == 1:
            return ","  # one column (or only the target): a plain CSV
        raise UserError(
            f"{path}: no delimiter among {[*DELIMITERS]} splits every line into the same number "
            "of fields; check the file, or name it with data.delimiter=';' (for example)."
        )
    return max(found, key=lambda d: (found[d], -DELIMITERS.index(d)))


def _decimal(sample: str, sep: str) -> str:
    """',' where the delimiter is not a comma and numbers are written 1,5 (never 1.5)."""
    if sep == ",":
        return "."
    cells = [c.strip().strip('"') for r in csvlib.reader(sample.splitlines()[1:], delimiter=sep)
             for c in r]  # fmt: skip
    grouped = GROUPED[","]  # 1.585,50: a decimal comma; 1.000 could be either
    comma = any(re.fullmatch(r"[+-]?\d*,\d+", c) or "," in c and grouped.fullmatch(c)
                for c in cells)  # fmt: skip
    point = any(re.fullmatch(r"[+-]?\d*\.\d+", c) and not grouped.fullmatch(c) for c in cells)
    return "," if comma and not point else "."


def numbers(column, name: str, path, decimal: str = "."):
    """A column as float64 (NaN where missing), or None when it holds text. A numeric column
    with a few cells that are not numbers is refused, naming them."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    text = column.astype("string").str.strip()
    present = text.notna() & (text != "")
    spelled = _ungrouped(text, decimal)
    spelled = spelled.str.replace(",", ".", regex=False) if decimal == "," else spelled
    parsed = pd.to_numeric(spelled, errors="coerce").astype("float64")
    bad = present & parsed.isna()
    if not bad.any():
        return parsed
    if bad.sum() * 2 > present.sum():
        return None  # mostly text: a text (categorical) column
    cells = ", ".join(f"line {line_of(i)}: {v!r}" for i, v in text[bad].head(SHOWN).items())
    more = f" and {bad.sum() - SHOWN} more" if bad.sum() > SHOWN else ""
    raise UserError(
        f"{path}, column {name!r}: {cells}{more} is not a number, in a column of numbers. Fix "
        "those cells (or empty them, which makes them missing values)."
    )


def _ungrouped(text, decimal: str):
    """The cells written with digit grouping, without it (1,585.50 -> 1585.50); others as
    they are (with a decimal point, 1,5 is not a grouped number and stays text)."""
    grouped = text.str.fullmatch(GROUPED[decimal].pattern).fillna(False)
    if not grouped.any():
        return text
    separators = "," if decimal == "." else ". \u00a0\u202f"
    plain = text.str.replace(f"[{separators}](?=\\d{{3}}(\\D|$))", "", regex=True)
    return text.where(~grouped, plain)


def label(value) -> str:
    """A class label as written, with numbers normalised: "1", "1.0" and 1 are one class."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass
class Target:
    """The target column: its task, and per row a class index or a value."""

    task: str
    values: np.ndarray  # int64 class indices or float32 values, one per row
    class_names: list[str] | None
    reason: str  # why this task (logged)


def target_columns(target, columns: list[str], path) -> list[str]:
    """data.target as a list of the file's columns: one name, or a list of them."""
    names = [target] if isinstance(target, str) else list(target) if _listlike(target) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"data.target={target!r}: give a column name (data.target=price) or a "
                        "list of them (data.target=[height,weight]).")  # fmt: skip
    if unknown := [n for n in names if n not in columns]:
        what = f"{unknown[0]!r} is not a column" if len(unknown) == 1 else \
            f"{unknown} are not columns"  # fmt: skip
        raise UserError(f"data.target: {what} of {path}; its columns are {columns}.")
    return names


def _listlike(value) -> bool:
    from collections.abc import Sequence

    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def targets(frame, names: list[str], requested: str, path, decimal: str = ".") -> Target:
    """The target of one column (`target`), or of several numeric ones: a regression with
    one output per column (values of shape (rows, columns))."""
    if len(names) == 1:
        found = target(frame[names[0]], names[0], requested, path, decimal)
        found.reason = f"{names[0]!r} {found.reason}" if found.reason else ""
        return found
    if requested == "classification":
        raise UserError(f"data.target={names} with data.task=classification: several target "
                        "columns are a regression (one output each); for classes give one "
                        "column of labels.")  # fmt: skip
    block = []
    for n in names:
        values = numbers(frame[n], n, path, decimal)
        if values is None:
            raise UserError(
                f"data.target={names}: the column {n!r} holds text, and several target columns "
                "are a regression, one number each; for classes give one column of labels."
            )
        _finite(values.to_numpy(), n, path, frame.index)
        block.append(values.to_numpy(np.float32))
    why = f"is {len(names)} numeric columns, one output each"
    return Target("regression", np.stack(block, axis=1), None, why)


def target(column, name: str, requested: str, path, decimal: str = ".") -> Target:
    """Decide classification or regression (data.task=auto) and encode the target."""
    values = numbers(column, name, path, decimal)
    if values is None:  # text labels
        if requested == "regression":
            example = column.dropna().astype(str).iloc[0]
            raise UserError(
                f"data.task=regression, but the target {name!r} holds text (e.g. {example!r}); "
                "use data.task=classification (or auto), or pick a numeric target column."
            )
        return _classes([label(v) for v in column], name, "holds text", path)
    values = values.to_numpy()
    whole = bool(np.all(values == np.round(values)))
    if requested == "classification" and not whole:
        example = values[values != np.round(values)][0]
        raise UserError(
            f"data.task=classification, but the target {name!r} holds numbers with fractions "
            f"(e.g. {example:g}): a value to predict, not a label. Use data.task=regression (or "
            "auto, which chooses regression for such a column)."
        )
    kind, why = _guess(values, whole) if requested == "auto" else (requested, "")
    if kind == "regression":
        _finite(values, name, path, column.index)
        return Target("regression", values.astype(np.float32), None, why)
    return _classes([label(v) for v in values], name, why, path)


def _guess(values: np.ndarray, whole: bool) -> tuple[str, str]:
    """data.task=auto on numbers: classes only when they read as class codes (a few whole
    numbers from 0 or 1 on: 0..k-1, 1..k); quantities otherwise (a weight in kg, a count, a
    price in whole units), with the reason said as decided."""
    if not whole:
        return "regression", "holds numbers with fractions"
    distinct = np.unique(values)
    k, lo, hi = len(distinct), distinct[0], distinct[-1]
    if k > AUTO_CLASSES:
        return "regression", (f"holds {k:,} distinct whole numbers, more than the "
                              f"{AUTO_CLASSES} a class column has")  # fmt: skip
    if lo < 0 or hi > k:
        return "regression", (f"holds {k} distinct whole numbers from {lo:g} to {hi:g}, not "
                              f"class codes (0..{k - 1} or 1..{k}): quantities")  # fmt: skip
    return (
        "classification",
        f"holds {k} distinct whole numbers from {lo:g} to {hi:g}, as class codes do",
    )


MIN_CLASS_ROWS = 3  # a class needs a row for each of train, val and test


def learnable(found: Target, path) -> None:
    """Refuse what data.task=auto made classes when most of them have too few rows to learn
    or score (names, ids, a rare quantity): the user says which task it is."""
    if found.task != "classification":
        return
    counts = np.bincount(found.values, minlength=len(found.class_names))
    few = int((counts < MIN_CLASS_ROWS).sum())
    if few * 2 <= len(counts):
        return
    raise UserError(
        f"the target {found.reason} in {path}, but {few} of those classes have fewer "
        f"than {MIN_CLASS_ROWS} rows: too few to learn them or to score them. Say what the "
        "column is: data.task=regression if it is a quantity, or data.task=classification if "
        "they are labels (which then need more rows each)."
    )


def _classes(labels: list[str], name: str, why: str, path) -> Target:
    names = sorted(set(labels), key=_natural)
    if len(names) > MAX_CLASSES:
        raise UserError(
            f"the target {name!r} of {path} has {len(names):,} distinct values: more than "
            f"{MAX_CLASSES:,} classes is almost surely a quantity, not a label. Use "
            "data.task=regression for a numeric target, or pick another column."
        )
    index = {c: i for i, c in enumerate(names)}
    y = np.array([index[v] for v in labels], dtype=np.int64)
    why = f"{why} ({len(names)} classes)" if why else f"has {len(names)} classes"
    return Target("classification", y, names, why)


def _natural(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _finite(values: np.ndarray, name: str, path, rows=None) -> None:
    """Refuse values float32 cannot hold (inf, or beyond +-3.4e38), naming the line."""
    bad = np.flatnonzero(~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX))
    if len(bad):
        row = bad[0] if rows is None else rows[bad[0]]
        raise UserError(
            f"{path} line {line_of(row)}, column {name!r}: {values[bad[0]]!r} is not a finite "
            f"32-bit number (|x| <= {FLOAT32_MAX:.3g}); {len(bad)} such value(s) in all. Rescale "
            "or fix them."
        )


@dataclass
class TablePrep:
    """How rows of a CSV become the model's float features; fitted on the training rows."""

    columns: list[str]  # the feature columns a file must have, in training order
    categories: dict[str, list[str]] = field(default_factory=dict)  # text column -> values
    fill: dict[str, float] = field(default_factory=dict)  # data.missing=mean: training means
    missing: str = "error"  # error | drop | mean
    decimal: str | None = None  # as configured; None: detected in each file
    delimiter: str | None = None
    encoding: str = "utf-8"
    ignored: list[str] = field(default_factory=list)  # data.drop_columns: allowed, unused

    @property
    def feature_names(self) -> list[str]:
        """The model's inputs, in order: a numeric column's name, or `column=value` per
        one-hot value of a text column."""
        return [n for c in self.columns for n in self._names(c)]

    def _names(self, column: str) -> list[str]:
        if column in self.categories:
            return [f"{column}={v}" for v in self.categories[column]]
        return [column]

    @classmethod
    def fit(cls, frame, columns, train_rows, missing: str, path, decimal: str, reading: dict,
            ignored=()):  # fmt: skip
        """Categories and fill values from the training rows (`train_rows`: row positions).
        `decimal` is the file's; `reading` the configured delimiter, decimal and encoding."""
        categories, fill, constant = {}, {}, []
        for c in columns:
            train = frame[c].iloc[train_rows]  # (one column at a time: no copy of the frame)
            values = numbers(train, c, path, decimal)
            if _constant(train, values):
                constant.append(c)
                continue
            _say_if_id(train, values, c, path)
            if values is None:
                seen = sorted({label(v) for v in train.dropna()}, key=_natural)
                if len(seen) > MAX_CATEGORIES:
                    raise UserError(
                        f"{path}, column {c!r}: {len(seen):,} distinct text values in the "
                        f"training rows, too many to one-hot encode (at most {MAX_CATEGORIES}). "
                        f"Leave it out with data.drop_columns=[{c}], or encode it as numbers."
                    )
                categories[c] = seen
            elif missing == "mean":
                mean = values.mean()
                fill[c] = float(mean) if np.isfinite(mean) else 0.0
        if constant:
            log.warning("%s: left out the column(s) %s: one value in every training row, so "
                        "nothing to learn from", path, constant)  # fmt: skip
        kept = [c for c in columns if c not in constant]
        if not kept:
            raise UserError(f"{path} has no feature column to learn from: every column but the "
                            f"target holds one value throughout ({constant}).")  # fmt: skip
        return cls(kept, categories, fill, missing, **reading,
                   ignored=[*ignored, *constant])  # fmt: skip

    def transform(self, frame, path, decimal: str = ".") -> np.ndarray:
        """The rows' features (float32). Missing numbers take the training mean (only
        data.missing=mean lets them through to here); a missing or unseen text value is a
        row of zeros in its one-hot columns."""
        import pandas as pd

        numeric = [c for c in self.columns if c not in self.categories]
        plain = all(pd.api.types.is_numeric_dtype(frame[c]) for c in numeric)
        if plain:  # the common case: one float32 copy of the numbers, straight from pandas
            values = frame[numeric].fillna(self.fill) if self.fill else frame[numeric]
        else:
            values = pd.DataFrame({c: self._numbers(frame[c], c, path, decimal) for c in numeric})
        with np.errstate(over="ignore"):  # (beyond float32: inf, refused just below)
            block = values.to_numpy(dtype=np.float32)
        if not np.isfinite(block).all():
            row, col = np.argwhere(~np.isfinite(block))[0]
            _finite(values.iloc[:, col].to_numpy(np.float64), numeric[col], path, frame.index)
        if not self.categories:
            return block if block.flags.writeable else block.copy()  # (pandas' own, read-only)
        parts = {c: block[:, [i]] for i, c in enumerate(numeric)}
        parts.update({c: self._one_hot(frame[c], c, path) for c in self.categories})
        return np.concatenate([parts[c] for c in self.columns], axis=1).astype(np.float32)

    def _numbers(self, column, name: str, path, decimal: str):
        values = numbers(column, name, path, decimal)
        if values is None:
            raise UserError(
                f"{path}, column {name!r} holds text, but the model was trained on numbers there; "
                "give it the same kind of values as in training."
            )
        return values.fillna(self.fill.get(name, 0.0))

    def _one_hot(self, column, name: str, path) -> np.ndarray:
        known = {v: i for i, v in enumerate(self.categories[name])}
        texts = [None if v is None or (isinstance(v, float) and np.isnan(v)) else label(v)
                 for v in column.astype(object)]  # fmt: skip
        out = np.zeros((len(texts), len(known)), np.float64)
        unseen: dict[str, list[int]] = {}
        for i, (row, t) in enumerate(zip(column.index, texts, strict=True)):
            if t is None:
                continue
            if t in known:
                out[i, known[t]] = 1.0
            else:
                unseen.setdefault(t, []).append(line_of(row))
        for value, lines in list(unseen.items())[:SHOWN]:
            log.warning("%s, column %r: %r (line %s) was not seen in training; encoded as all "
                        "zeros", path, name, value, ", ".join(map(str, lines[:SHOWN])))  # fmt: skip
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TablePrep":
        return cls(**d)


def _constant(train, values) -> bool:
    """One value (or none) in every training row: a column a model cannot learn from."""
    if values is not None:
        present = values.dropna()
        return present.empty or present.min() == present.max()
    return train.nunique(dropna=False) <= 1


ID_ROWS = 20  # from this many rows on, a value that differs on every row reads as an ID


def _say_if_id(train, values, name: str, path) -> None:
    """Warn of a column whose whole numbers or text differ on every row, as an ID's do: a
    model memorises rows by it, and an ID sorted by class gives the label away."""
    if len(train) < ID_ROWS or values is not None and not (values == values.round()).all():
        return
    if (train if values is None else values).is_unique:
        log.warning("%s: the column %r holds a different value on every row, as an ID does: a "
                    "model can memorise rows by it (an ID given out in class order gives the "
                    "label away). If it is not a feature, leave it out: data.drop_columns=[%s]",
                    path, name, name)  # fmt: skip


def handle_missing(frame, columns: list[str], policy: str, path, what: str):
    """The rows to use: rows missing a value in `columns` are refused (error, naming the lines)
    or left out (drop; said once); `mean` leaves them to be filled from the training mean."""
    if policy not in MISSING:
        raise UserError(f"data.missing={policy!r} is not one of {list(MISSING)}.")
    gaps = frame[columns].isna()
    rows = gaps.any(axis=1).to_numpy()
    if not rows.any() or policy == "mean":
        return frame
    if policy == "error":
        parts = []
        for c in columns:
            lines = [line_of(r) for r in frame.index[gaps[c].to_numpy()]]
            if lines:
                more = f" and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
                parts.append(f"column {c!r} on line(s) {', '.join(map(str, lines[:SHOWN]))}{more}")
        raise UserError(
            f"{path} has missing values ({what}): {'; '.join(parts)}. Fill them, or set "
            "data.missing=drop (leave those rows out) or data.missing=mean (fill features with "
            "the training mean; rows without a target are left out)."
        )
    lines = [line_of(r) for r in frame.index[rows]]
    more = f" and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
    log.warning("%s: left out %d row(s) with missing values (%s; data.missing=drop): line(s) %s%s",
                path, len(lines), what, ", ".join(map(str, lines[:SHOWN])), more)  # fmt: skip
    return frame[~rows]
