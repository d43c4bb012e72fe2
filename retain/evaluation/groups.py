"""Group scores as lm-evaluation-harness reports them, beside retain's pooled items.

An lm-eval group (mmlu over its 57 subjects, a group YAML of yours) reports one score per aggregated metric:
the mean of its subtasks' scores, each weighted by its number of documents (`weight_by_size: true`, mmlu's and
most groups') or not (`false`, belebele's): lm_eval.api.metrics.aggregate_subtask_metrics, which is
retain.evaluation.metrics.size_weighted_mean. retain's report pools the items of a capability's tasks, so each
item counts once: the same as lm-eval's size-weighted mean, and not an unweighted one when subtasks differ in
size. A results file records lm-eval's group score too, so a figure from retain can be set beside one from
`lm_eval --tasks GROUP`:

    group_scores(tasks, scored) -> {group: {"metrics": {metric: value}, "weight_by_size": {metric: bool},
                                            "subtasks": {name: {"n": documents, metric: value, ...}}}}

lm-eval groups are aggregated by lm-eval itself (its Group.aggregate reads the group's aggregate_metric_list);
retain's own `mmlu` (all subjects in one task) by subject, size-weighted as lm-eval's mmlu group is.
"""

from __future__ import annotations

from retain.evaluation.tasks.lm_eval_harness import LmEvalTask, lm_eval_group_scores
from retain.evaluation.tasks.mmlu import MMLUTask, subject_scores


def group_scores(tasks: list, scored: dict[str, dict]) -> dict[str, dict]:
    """The group scores of the scored tasks (`scored`: the runner's per-task results); {} when none is a group."""
    groups = lm_eval_group_scores([t for t in tasks if isinstance(t, LmEvalTask)], scored)
    for task in tasks:
        if isinstance(task, MMLUTask) and task.subject is None:
            groups[task.name] = subject_scores(scored[task.name]["items"])
    return groups
