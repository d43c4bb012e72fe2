"""retain inside the trainers people already use (transformers' `Trainer`, TRL's `SFTTrainer`).

    RetainCallback    callback.py: base scores before training, a retention budget during it (stop or
                      roll back), retain's forgetting report after it
    RetainLossMixin   losses.py: KL to the base, L2-SP, EWC, SI added to the trainer's loss, each logged by name

Both reuse retain's own pieces (the scorer, RetentionBudget, the report, the mitigations' pure
functions); nothing here trains by itself.
"""

from retain.integrations.callback import RetainCallback
from retain.integrations.losses import RetainLossMixin

__all__ = ["RetainCallback", "RetainLossMixin"]
