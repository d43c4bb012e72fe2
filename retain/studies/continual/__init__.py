"""Continual learning: a sequence of tasks, trained stage by stage, scored after every stage.

    plan.py       SEQ.yaml (strict) and each stage's ordinary run config
    sequence.py   the stage runner (`retain sequence SEQ.yaml`), resumable by stage and by step
    buffer.py     the replay buffer: a seeded, fixed-size reservoir over earlier stages' examples
    routing.py    task isolation: peft named adapters side by side, picked by task id or by a router
    isolation.py  scoring each adapter once, and every stage's rows from those records
    metrics.py    the accuracy matrix R, ACC / BWT / FWT / forgetting, paired-bootstrap CIs
    summary.py    summary.json and summary.md; figures.py: heatmap and capability curves
"""

from retain.studies.continual.buffer import Reservoir, reservoir_sample
from retain.studies.continual.plan import SequenceConfig, load_sequence
from retain.studies.continual.sequence import run_sequence

__all__ = ["Reservoir", "SequenceConfig", "load_sequence", "reservoir_sample", "run_sequence"]
