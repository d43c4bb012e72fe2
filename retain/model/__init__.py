"""The model: what a run trains and what it measures the training against.

    reference.py   the base model as a reference (PEFT adapters disabled, or a frozen copy): its logits
                   under no_grad, at every position or at chosen ones
"""

from retain.model.reference import Reference, adapters_disabled

__all__ = ["Reference", "adapters_disabled"]
