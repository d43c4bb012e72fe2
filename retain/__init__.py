"""retain: fine-tune language models without losing what they already knew.

Python API (mirrors the CLI):
    retain.load_config(path, overrides)   -> RunConfig
    retain.train(config_or_path, ...)     -> RunResult (paths, steps, logged metrics)
    retain.train(config, train_data=ds)   the same, on rows from Python (a datasets.Dataset or a list of dicts)
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from retain.config import RunConfig, load_config

__version__ = "0.1.0"


def train(config: RunConfig | dict | str | Path, overrides: tuple[str, ...] = (), resume: bool = False,
          overwrite: bool = False, progress: bool = True, allow_config_change: bool = False,
          train_data: Any = None, dev_data: Any = None):
    """Fine-tune as `retain train` does; `config` is a RunConfig, a config dict, or a YAML path.

    `train_data` / `dev_data` (a datasets.Dataset, or a list of dicts in any shape retain reads) stand in
    for data.train / data.dev, which may then be left out of the config. The run's config.yaml names them
    `python:DIGEST`, a digest of the rows: resuming with other rows is a config change.
    """
    from retain.config import config_from_dict
    from retain.config.overrides import apply_overrides, set_dotted
    from retain.data.readers import python_rows
    from retain.training.loop import train as run

    with ExitStack() as stack:
        given = {key: stack.enter_context(python_rows(rows, f"{key}_data"))
                 for key, rows in (("train", train_data), ("dev", dev_data)) if rows is not None}
        if isinstance(config, RunConfig):
            if given:
                config = dataclasses.replace(config, data=dataclasses.replace(config.data, **given))
        else:
            extra = [f"data.{key}={name}" for key, name in given.items()]
            if isinstance(config, dict):
                data = apply_overrides(copy.deepcopy(config), overrides)
                for key, name in given.items():
                    set_dotted(data, f"data.{key}", name)
                config = config_from_dict(data)
            else:
                config = load_config(config, (*overrides, *extra))
        return run(config, resume=resume, overwrite=overwrite, progress=progress,
                   allow_config_change=allow_config_change)


__all__ = ["RunConfig", "load_config", "train", "__version__"]
