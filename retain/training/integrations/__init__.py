"""retain inside the trainers people already use (transformers' `Trainer`, TRL's `SFTTrainer`).

    RetainCallback    callback.py: base scores before training, a retention budget during it (stop or
                      roll back), retain's forgetting report after it
    RetainLossMixin   losses.py: the loss-side mitigations (KL to the base, L2-SP, EWC, SI; DFT, EAFT, ASFT
                      token weights) in the trainer's loss, each term logged by name

Both reuse retain's own pieces (the scorer, RetentionBudget, the report, the mitigations' role objects
as the loop drives them); nothing here trains by itself.
"""

from retain.training.integrations.callback import RetainCallback
from retain.training.integrations.losses import RetainLossMixin

__all__ = ["RetainCallback", "RetainLossMixin"]
