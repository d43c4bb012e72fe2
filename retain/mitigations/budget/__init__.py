"""The retention budget (`mitigations.retention`): no capability may get worse than its budget allows, and the
run ends at the best point it reached within it.

    options.py   RetentionOptions and TaskBudget: what the config says (the suite, the budgets, the action)
    points.py    which point the run ends at: the kept checks, their merit, the repair lines toward them
    judge.py     how much of its budget each capability used at a point, and which went past it
    monitor.py   RetentionBudget, the monitor: scores the dev split at its checks, decides, keeps weights
"""

from retain.mitigations.budget.monitor import RetentionBudget
from retain.mitigations.budget.options import DEFAULT_PERPLEXITY, DEFAULT_POINTS, RetentionOptions, TaskBudget

__all__ = ["DEFAULT_PERPLEXITY", "DEFAULT_POINTS", "RetentionBudget", "RetentionOptions", "TaskBudget"]
