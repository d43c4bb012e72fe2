"""Readers: one place data is kept -> (where, record) pairs, `where` being what an error names.

    read_jsonl(path)              JSON lines (retain's own reader: line numbers, UTF-8 and size checks)
    read_json_array(path)         one JSON array of objects; each record's `where` is the line it starts on
    read_with_datasets(path, kind) parquet, CSV, TSV, arrow, text, compressed JSON: `datasets`, streamed
    read_saved(path, split)       a folder `Dataset.save_to_disk` / `DatasetDict.save_to_disk` wrote
    read_folder(path, split)      a folder of data files, as `datasets.load_dataset(folder)` reads it
    read_hub(repo, ...)           a Hugging Face hub dataset (downloaded once into the datasets cache)
    python_rows(data, label)      rows handed over from Python, registered for the length of a run

Local files are streamed, never copied into the datasets cache: a run reads its file where it is. A row
that is not a mapping, a record larger than max_record_chars(), and a file `datasets` cannot read are
DataErrors naming the file (and the row).
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import hashlib
import json
import lzma
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from retain.core.errors import DataError

Rows = Iterable[tuple[str, dict]]


def max_line_bytes() -> int:
    """The longest JSONL line (and the largest record) read: $RETAIN_MAX_LINE_BYTES, else 1 MB."""
    value = os.environ.get("RETAIN_MAX_LINE_BYTES", "")
    try:
        return int(value) if value else 1 << 20
    except ValueError:
        raise DataError(f"RETAIN_MAX_LINE_BYTES={value!r}: expected a number of bytes") from None


def check_record_size(record: dict, where: str) -> None:
    """A record whose text is larger than the line limit is one no tokenizer should be handed: it is not one
    training example, and tokenizing it first would take minutes and gigabytes."""
    limit = max_line_bytes()
    size = _text_size(record, limit)
    if size > limit:
        raise DataError(f"{where}: record of more than {limit:,} characters — is a whole document or file in one "
                        "field? Split it, or raise the limit with RETAIN_MAX_LINE_BYTES")


def _text_size(value: Any, limit: int) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return 0
    total = 0
    for item in value:
        total += _text_size(item, limit)
        if total > limit:  # stop early: the answer is already known
            break
    return total


def _open(path: Path, what: str):
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a {what}") from None


def _decode(raw: bytes, where: str, column_offset: int = 0) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1 + column_offset}) "
                        "— save the file as UTF-8") from None


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line; a bad line raises DataError naming it."""
    path = Path(path)
    limit = max_line_bytes()
    records = []
    with _open(path, "JSONL file") as f:
        for lineno, raw in enumerate(iter(lambda: f.readline(limit + 1), b""), 1):
            where = f"{path}:{lineno}"
            if len(raw) > limit and not raw.endswith(b"\n"):  # checked before anything parses the line
                raise DataError(f"{where}: line longer than {limit:,} bytes — one record per line (is the whole "
                                "file on one line?); split it, or raise the limit with RETAIN_MAX_LINE_BYTES")
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            line = _decode(raw, where)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__} "
                                "(JSONL: one object per line)")
            records.append((lineno, record))
    if not records:
        raise DataError(f"{path}: no records")
    return records


def starts_with_array(path: Path) -> bool:
    """Whether a .json file holds one JSON array (its first non-blank character is '[')."""
    with _open(path, "JSON file") as f:
        head = f.read(4096)
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8):]
    return head.lstrip()[:1] == b"["


def read_json_array(path: Path) -> list[tuple[str, dict]]:
    """Each object of a file holding one JSON array, with the line it starts on.

    The array is walked one element at a time so that an error can name the line of the element it is
    about (json.loads of the whole array would only say "row 5000").
    """
    with _open(path, "JSON file") as f:
        raw = f.read()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}) — save the file as UTF-8") from None
    decoder = json.JSONDecoder()
    limit = max_line_bytes()

    def line_of(index: int) -> int:
        return text.count("\n", 0, index) + 1

    def skip_space(index: int) -> int:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        return index

    records = []
    i = skip_space(text.index("["))
    i = skip_space(i + 1)
    if i < len(text) and text[i] == "]":
        raise DataError(f"{path}: no records (an empty JSON array)")
    while True:
        where = f"{path}:{line_of(i)}"
        try:
            record, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object in the array, got {type(record).__name__}")
        if end - i > limit:
            raise DataError(f"{where}: record longer than {limit:,} characters — split it, or raise the limit "
                            "with RETAIN_MAX_LINE_BYTES")
        records.append((where, record))
        i = skip_space(end)
        if i < len(text) and text[i] == ",":
            i = skip_space(i + 1)
            continue
        if i < len(text) and text[i] == "]":
            if skip_space(i + 1) != len(text):
                raise DataError(f"{path}:{line_of(i + 1)}: text after the end of the JSON array")
            return records
        raise DataError(f"{path}:{line_of(i)}: not valid JSON (expected ',' or ']' after the object on line "
                        f"{line_of(end - 1)}{'' if i < len(text) else '; the file ends early'})")


def _rows_of(iterable: Iterable, name: str, what: str) -> Iterator[tuple[str, dict]]:
    """Number the rows of a `datasets` object; its read errors (raised while streaming) name the source."""
    iterator = iter(iterable)
    n = 0
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            break
        except (OSError, ValueError, TypeError, KeyError) as e:  # pyarrow/pandas errors derive from these
            raise DataError(f"{name}: could not be read as {what} ({type(e).__name__}: {_first_line(e)})") from None
        n += 1
        if not isinstance(row, dict):
            raise DataError(f"{name}:row {n}: expected a mapping of fields, got {type(row).__name__}")
        yield f"{name}:row {n}", row
    if n == 0:
        raise DataError(f"{name}: no records")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


def read_with_datasets(path: Path, kind: str) -> Rows:
    """Rows of a local file through one of `datasets`' packaged builders (parquet, csv, arrow, json, text)."""
    import datasets

    if kind == "parquet" and not _is_parquet(path):  # before `datasets`, which logs its own error first
        raise DataError(f"{path}: could not be read as parquet (a parquet file begins and ends with PAR1; this one "
                        "does not — is it another format under a .parquet name?)")
    options = csv_options(path, "\t" if kind == "tsv" else ",") if kind in ("csv", "tsv") else {}
    builder = "csv" if kind == "tsv" else kind
    try:
        stream = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, **options)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: could not be read as {kind} ({type(e).__name__}: {_first_line(e)})") from None
    return _rows_of(stream, str(path), kind)


def _is_parquet(path: Path) -> bool:
    with _open(path, "parquet file") as f:
        head = f.read(4)
        if path.stat().st_size < 8:
            return False
        f.seek(-4, os.SEEK_END)
        return head == f.read(4) == b"PAR1"


def csv_options(path: Path, sep: str) -> dict:
    """Read every CSV column as text, and an empty cell as "": pandas would otherwise turn an answer " 4" into
    the number 4 (losing its space) and an empty cell into NaN."""

    import datasets

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, delimiter=sep), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: could not read its header row ({type(e).__name__}: {_first_line(e)})") from None
    if not header:
        raise DataError(f"{path}: no header row (the first line names the columns)")
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return {"sep": sep, "features": features, "keep_default_na": False}


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder `save_to_disk` wrote (a Dataset, or a DatasetDict of splits)."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def read_saved(path: Path, split: str | None) -> Rows:
    import datasets

    try:
        saved = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable save_to_disk folder ({type(e).__name__}: {_first_line(e)})") from None
    if isinstance(saved, datasets.DatasetDict):
        saved = _pick_split(saved, split, str(path), f"{path}#SPLIT")
    elif split is not None:
        raise DataError(f"{path}#{split}: this folder holds one dataset, not a dict of splits — drop '#{split}'")
    return _rows_of(saved, str(path), "a saved dataset")


def _pick_split(splits, split: str | None, name: str, syntax: str):
    if split is None and len(splits) == 1:
        return next(iter(splits.values()))
    if split is None or split not in splits:
        given = "no split given" if split is None else f"no split '{split}'"
        raise DataError(f"{name}: {given}; it has {', '.join(splits)} — name one as {syntax}")
    return splits[split]


def read_folder(path: Path, split: str | None) -> Rows:
    """A folder of data files (a downloaded hub repository, LLaMA-Factory's file_name folders)."""
    import datasets

    try:
        stream = datasets.load_dataset(str(path), split=split or "train", streaming=True)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: a folder `datasets` cannot read as a dataset ({type(e).__name__}: "
                        f"{_first_line(e)}) — give a data file, or a folder save_to_disk wrote") from None
    return _rows_of(stream, str(path) + (f"#{split}" if split else ""), "a dataset folder")


def offline() -> bool:
    """Whether Hugging Face downloads are switched off (HF_DATASETS_OFFLINE or HF_HUB_OFFLINE)."""
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def read_hub(repo: str, config: str | None, split: str, name: str, data_dir: str | None = None,
             revision: str | None = None) -> Rows:
    """A hub dataset's split, through `datasets.load_dataset` (downloaded once, then read from its cache)."""
    import datasets

    try:
        loaded = datasets.load_dataset(repo, config, split=split, data_dir=data_dir, revision=revision)
    except Exception as e:  # any failure here is about the user's id, split, network or cache, not retain
        if offline():
            raise DataError(f"{name}: not in the Hugging Face datasets cache, and downloads are off "
                            "(HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set) — unset it to download the dataset "
                            "once, or give a local file") from None
        raise DataError(f"{name}: `datasets` could not load it ({type(e).__name__}: {_first_line(e)})") from None
    return _rows_of(loaded, name, "a hub dataset")


# --- rows handed over from Python ------------------------------------------------------------------------

_PYTHON_ROWS: dict[str, tuple[list[dict], str, int]] = {}  # python:DIGEST -> (rows, label, holders)
PYTHON_PREFIX = "python:"


def as_rows(data: Any, label: str) -> list[dict]:
    """The rows of a `datasets.Dataset` (or IterableDataset), or of a list of dicts."""
    kind = type(data).__name__
    if kind == "DatasetDict" or kind == "IterableDatasetDict":
        raise DataError(f"{label}: a DatasetDict of splits ({', '.join(data)}) — pass one split, e.g. "
                        "dataset['train']")
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, Iterable):
        raise DataError(f"{label}: expected a datasets.Dataset or a list of dicts, got {kind}")
    rows = list(data)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"{label}:row {n}: expected a dict of fields, got {type(row).__name__}")
    if not rows:
        raise DataError(f"{label}: no records")
    return rows


@contextmanager
def python_rows(data: Any, label: str) -> Iterator[str]:
    """Register rows from Python for the length of a run; yields the `data.train`-style name that reads them.

    The name carries a digest of the rows, so the run's config.yaml says which data it was (a resume with
    other rows is a config change), and a process that was not handed the rows can say so.
    """
    rows = as_rows(data, label)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = PYTHON_PREFIX + digest
    held = _PYTHON_ROWS.get(name)
    _PYTHON_ROWS[name] = (rows, label, (held[2] if held else 0) + 1)
    try:
        yield name
    finally:
        rows, label, holders = _PYTHON_ROWS[name]
        if holders > 1:
            _PYTHON_ROWS[name] = (rows, label, holders - 1)
        else:
            del _PYTHON_ROWS[name]


def python_source_problem(name: str) -> str | None:
    if name in _PYTHON_ROWS:
        return None
    return (f"{name}: rows that were passed from Python (retain.train(..., train_data=...)) to an earlier run; "
            "they are not available here — pass them again, or save them to a file (dataset.to_parquet(...)) "
            "and name that")


def read_python(name: str) -> tuple[str, Rows]:
    """(label for messages, rows) of rows registered by python_rows."""
    problem = python_source_problem(name)
    if problem:
        raise DataError(problem)
    rows, label, _ = _PYTHON_ROWS[name]
    return label, [(f"{label}:row {n}", row) for n, row in enumerate(rows, 1)]
