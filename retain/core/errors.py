"""What a user error is, as opposed to a bug in retain.

A user error is a problem with what the user gave retain, detected and explained by retain: a
config, data, task, model, tokenizer or results file that cannot be used as it is. Its message
is the whole story, phrased `WHERE: what is wrong — what to do` (WHERE is FILE, FILE:LINE, or a
config key), so the CLI prints it alone and exits 2 (`--debug` adds the traceback).

    UserError
      ConfigError   a config, sweep, task or suite YAML (or a command-line value)
      DataError     a data source (file, folder, hub dataset, Python rows) or one of its records
      ModelError    a model or tokenizer that cannot be loaded or used as it is
      ResultsError  a results file `retain report` cannot use, or results that are not comparable

Everything else that escapes a command is a bug (or an environment problem retain did not
foresee): the CLI shows the traceback and exits 1. The one exception is an OSError about the
user's files (not found, exists, permission, disk full), which names its file and is reported
like a user error.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, explained by its message (`WHERE: what is wrong — what to do`)."""


# ValueError too: these replaced ValueErrors, and callers that catch those keep working.
class ConfigError(UserError, ValueError):
    """A config problem, phrased as `FILE: key.path: what is wrong`."""


class DataError(UserError, ValueError):
    """Malformed data, phrased as `FILE:LINE: field 'x': what is wrong` (`SOURCE:row N:` for tables)."""


class ModelError(UserError, ValueError):
    """A model or tokenizer that cannot be loaded or used, phrased as `DIR or ID: what is wrong — what to do`."""


class ResultsError(UserError, ValueError):
    """A results file that cannot be read, or results that cannot be compared, naming the file."""
