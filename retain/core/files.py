"""Atomic file writes: a crash never leaves a half-written file that a later run would trust; and the one reader
of a run's metrics.jsonl, which tolerates the half-written last line a kill can leave (the log appends).

A write that fails because the disk is full raises an OSError (ENOSPC) naming the file, whichever library wrote
it: torch and safetensors report a full disk in their own words and error types (see `as_disk_full`)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


# How a full disk reads in the errors of the libraries that write weights: safetensors' Rust writer says
# "No space left on device (os error 28)"; torch's zip writer checks its position after each write and reports a
# short one as "[enforce fail at inline_container.cc] . unexpected pos 5312 vs 5204" or "PytorchStreamWriter failed
# writing file data/0: file write failed" (measured: torch 2.13 and safetensors 0.8 writing onto a full tmpfs).
DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122",
                   "unexpected pos", "PytorchStreamWriter failed writing")


def is_disk_full(error: BaseException) -> bool:
    """Whether a write failed for want of space: an OSError with ENOSPC/EDQUOT, or torch's or safetensors'
    words for it. Only meaningful for an error raised while writing."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, Exception) and any(words in str(error) for words in DISK_FULL_WORDS)


def as_disk_full(error: BaseException, path: str | Path) -> OSError | None:
    """A full disk while writing `path`, as an OSError(ENOSPC) naming `path` (the CLI reports that as a user error);
    None if `error` is something else, or an OSError that names its file already: raise it as it is."""
    if not is_disk_full(error) or (isinstance(error, OSError) and error.filename is not None):
        return None
    code = error.errno if isinstance(error, OSError) else errno.ENOSPC
    return OSError(code, os.strerror(code), str(path))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to a temp file beside `path`, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        raise as_disk_full(e, path) or e
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_torch_save(path: str | Path, obj) -> Path:
    """torch.save to a temp file beside `path`, then rename over `path`."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        raise as_disk_full(e, path) or e
    return path


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside `path`; on success it replaces `path` in one rename.

    Readers that only look at complete names (never `.*.tmp`) can't see a partial directory. On an error the
    temp directory is removed (a full disk gets its space back), and a full disk is an OSError naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise as_disk_full(e, path) or e


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of `run_dir`/metrics.jsonl ([] if there is none); a line that is not JSON (a half-written last line
    after a kill) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
