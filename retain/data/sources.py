"""Where training data is: a `data.train` string (or rows from Python) -> a Source of (where, record) rows.

    FILE.jsonl, FILE.json        JSON lines, or one JSON array of objects (a .json file may hold either)
    FILE.parquet .csv .tsv .arrow .txt, and compressed JSON, CSV or text (.gz .bz2 .xz .zst): read by
                                 `datasets`, streamed from where they are
    DIR                          a folder `save_to_disk` wrote (DIR#SPLIT picks a split of a DatasetDict),
                                 else a folder of data files as `datasets` reads it (DIR#SPLIT, default train)
    DIR/dataset_info.json#NAME   LLaMA-Factory's dataset entry NAME (retain.data.llamafactory)
    hub:ORG/NAME:SPLIT           a Hugging Face hub dataset; hub:ORG/NAME:CONFIG:SPLIT for one of its configs;
                                 SPLIT may be sliced as `datasets` allows (train[:1000]). Downloaded once into
                                 the datasets cache; with downloads off (HF_DATASETS_OFFLINE) only the cache
    python:DIGEST                rows passed from Python (retain.train(..., train_data=...)) to this run
    lab:REL                      a file shipped with retain's lab

A file with another extension is read as JSON lines (as retain always did), unless it starts as a parquet
file does. `where` names a row as FILE:LINE for JSON (the line a record starts on) and SOURCE:row N (from
1) for tables, hub and Python rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from retain.data import readers
from retain.data.llamafactory import read_entry
from retain.data.readers import PYTHON_PREFIX, Rows
from retain.data.shapes import Shape
from retain.core.errors import DataError
from retain.core.paths import resolve_path

HUB_PREFIX = "hub:"
HUB_SYNTAX = "hub:ORG/NAME:SPLIT or hub:ORG/NAME:CONFIG:SPLIT"
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
READ_BY_DATASETS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".arrow": "arrow", ".txt": "text",
                    ".json": "json", ".jsonl": "json"}  # JSON here only when compressed


@dataclass
class Source:
    name: str  # what the run log calls it
    rows: Rows  # (where, record), read lazily where the reader streams
    parse: Callable[[dict, str], Shape] | None = None  # the source's own reading of a row (LLaMA-Factory)


def parse_hub(spec: str) -> tuple[str, str | None, str]:
    """(repo, config or None, split) of `hub:ORG/NAME[:CONFIG]:SPLIT`; DataError on another form."""
    # colons inside a slice (train[:100]) belong to the split
    parts = re.split(r":(?![^\[]*\])", spec[len(HUB_PREFIX):])
    if len(parts) not in (2, 3) or not all(parts):
        hint = " — name the split, e.g. :train" if len(parts) == 1 and parts[0] else ""
        raise DataError(f"{spec}: expected {HUB_SYNTAX}{hint}")
    repo, *config, split = parts
    return repo, (config[0] if config else None), split


def split_selector(spec: str) -> tuple[str, str | None]:
    """`PATH#NAME` -> (PATH, NAME), unless the whole string names an existing path."""
    if "#" in spec and not resolve_path(spec).exists():
        base, selector = spec.rsplit("#", 1)
        return base, selector or None
    return spec, None


def source_problem(spec: str) -> str | None:
    """What is wrong with a `data.train`-style string, found cheaply (no rows read); None if nothing is."""
    try:
        if spec.startswith(HUB_PREFIX):
            parse_hub(spec)
            return None
        if spec.startswith(PYTHON_PREFIX):
            return readers.python_source_problem(spec)
        base, selector = split_selector(spec)
        path = resolve_path(base)
        if not path.exists():
            return f"file not found: {path}"
        if selector is not None and path.is_file():
            if path.name != "dataset_info.json":
                return f"{spec}: '#{selector}' follows a folder (a split) or a dataset_info.json (an entry), not a file"
            read_entry(path, selector)
        return None
    except DataError as e:
        return str(e)


def open_source(source: str | Path | Any) -> Source:
    """The rows of `source`: a `data.train`-style string, a local path, or rows from Python."""
    if isinstance(source, Path):
        return local(source, None)
    if not isinstance(source, str):
        label = type(source).__name__
        return Source(label, [(f"{label}:row {n}", r) for n, r in enumerate(readers.as_rows(source, label), 1)])
    if source.startswith(HUB_PREFIX):
        repo, config, split = parse_hub(source)
        return Source(source, readers.read_hub(repo, config, split, source))
    if source.startswith(PYTHON_PREFIX):
        label, rows = readers.read_python(source)
        return Source(f"{label} ({source})", rows)
    base, selector = split_selector(source)
    return local(resolve_path(base), selector)


def local(path: Path, selector: str | None) -> Source:
    if path.is_dir():
        rows = readers.read_saved(path, selector) if readers.is_saved_dataset(path) else readers.read_folder(path, selector)
        return Source(str(path) + (f"#{selector}" if selector else ""), rows)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if selector is not None:
        if path.name != "dataset_info.json":
            raise DataError(f"{path}#{selector}: '#{selector}' follows a folder (a split) or a dataset_info.json "
                            "(an entry), not a file")
        entry = read_entry(path, selector)
        if entry.hub is not None:
            hub = entry.hub
            rows = readers.read_hub(hub["repo"], hub["config"], hub["split"], f"{entry.name} ({hub['repo']})",
                                    hub["data_dir"], hub["revision"])
        else:
            rows = local(entry.file, None).rows
        return Source(entry.name, rows, entry.parse)
    return Source(str(path), read_file(path))


def read_file(path: Path) -> Rows:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSED
    extension = suffixes[-2] if compressed and len(suffixes) == 2 else (suffixes[-1] if suffixes else "")
    if not compressed and extension == ".json" and readers.starts_with_array(path):
        return readers.read_json_array(path)
    if extension in READ_BY_DATASETS and (compressed or extension not in (".json", ".jsonl")):
        return readers.read_with_datasets(path, READ_BY_DATASETS[extension])
    if extension not in (".json", ".jsonl", ".ndjson") and _starts_with(path, b"PAR1"):
        return readers.read_with_datasets(path, "parquet")
    try:
        return [(f"{path}:{line}", record) for line, record in readers.read_jsonl(path)]
    except DataError as e:
        if extension == ".json" and "not valid JSON" in str(e):  # e.g. one pretty-printed object
            raise DataError(f"{e} — a .json file holds one JSON object per line, or one array of objects") from None
        raise


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False
