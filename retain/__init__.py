"""retain: fine-tune language models without losing what they already knew.

Python API (mirrors the CLI):
    retain.load_config(path, overrides)   -> RunConfig
    retain.train(config_or_path, ...)     -> RunResult (paths, steps, logged metrics)
"""

from __future__ import annotations

from pathlib import Path

from retain.config import RunConfig, load_config

__version__ = "0.1.0"


def train(config: RunConfig | str | Path, overrides: tuple[str, ...] = (), resume: bool = False,
          overwrite: bool = False, progress: bool = True, allow_config_change: bool = False):
    """Fine-tune as `retain train` does; `config` is a RunConfig or a YAML path."""
    from retain.training.loop import train as run

    if not isinstance(config, RunConfig):
        config = load_config(config, overrides)
    return run(config, resume=resume, overwrite=overwrite, progress=progress,
               allow_config_change=allow_config_change)


__all__ = ["RunConfig", "load_config", "train", "__version__"]
