"""Parameter-efficient methods through peft: the base weights stay frozen, only the adapter trains."""

from __future__ import annotations

from dataclasses import dataclass

from retain.mitigations.roles import Context


@dataclass(frozen=True)
class LoraOptions:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = "all-linear"  # names, or "all-linear"
    use_dora: bool = False  # weight-decomposed LoRA
    use_rslora: bool = False  # alpha / sqrt(r) scaling

    def validate(self):
        if self.r < 1:
            yield "r", f"must be >= 1, got {self.r}"
        if not 0 <= self.dropout < 1:
            yield "dropout", f"must be in [0, 1), got {self.dropout}"


class Lora:
    """LoRA / DoRA / rsLoRA adapters on the chosen linear layers."""

    def __init__(self, options: LoraOptions):
        self.options = options

    def peft_config(self):
        from peft import LoraConfig

        o = self.options
        targets = list(o.target_modules) if isinstance(o.target_modules, tuple) else o.target_modules
        return LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=targets,
                          use_dora=o.use_dora, use_rslora=o.use_rslora, task_type="CAUSAL_LM")

    def transform_model(self, model, ctx: Context):
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config())
