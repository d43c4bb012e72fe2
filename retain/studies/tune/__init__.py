"""`retain tune TUNE.yaml`: search recipes for the Pareto front of task gain against forgetting.

run.py (the command's flow), space.py (the TUNE file: the search space of dotted config keys, objective,
pruner), trial.py (one trial: its run config, training with a dev check, dev scores, record), study.py (the
sequential Optuna backend), ray_backend.py (the same trials through Ray Tune), report.py (dev front -> test
split, recommended recipe, importances).
"""

from retain.studies.tune.run import load_tuning, run_tune
from retain.studies.tune.space import ABSENT, Space, TuneConfig, load_tune, trial_name

__all__ = ["ABSENT", "Space", "TuneConfig", "load_tune", "load_tuning", "run_tune", "trial_name"]
