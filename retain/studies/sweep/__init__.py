"""Sweeps: many strategies on one task (run.py: expand, write and run the configs) and what they show
(summary.py: retained change with paired CIs, the table, the Pareto front and its plot; matched_gain.py: forgetting
at a reference's task gain; target.py: whether a recipe keeps 95% of a reference's gain at a tenth of its
forgetting, over seeds and items)."""

from retain.studies.sweep.run import (SweepConfig, expand, load_sweep, result_files, run_configs, run_name, run_sweep,
                                      strategy_configs, summarize_sweep)

__all__ = ["SweepConfig", "expand", "load_sweep", "result_files", "run_configs", "run_name", "run_sweep",
           "strategy_configs", "summarize_sweep"]
