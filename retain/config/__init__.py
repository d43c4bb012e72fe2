"""The run config: one frozen dataclass per YAML section, loaded strictly (schema.py), with dotted-key
overrides (overrides.py) and a one-line help per field (`retain config --explain KEY`, explain.py).

The strict YAML reader every config-like file shares sits below this package, in retain.core.schema, so that
the modules that own a section (modeling, mitigations) can use it without importing the run config.
"""

from retain.config.overrides import apply_overrides, set_dotted
from retain.config.schema import (DataConfig, OutputConfig, RunConfig, TrainingConfig, config_from_dict,
                                  config_to_yaml, fill_lab_defaults, load_config, total_steps_for)
from retain.core.paths import resolve_path

__all__ = ["DataConfig", "OutputConfig", "RunConfig", "TrainingConfig", "apply_overrides", "config_from_dict",
           "config_to_yaml", "fill_lab_defaults", "load_config", "resolve_path", "set_dotted", "total_steps_for"]
