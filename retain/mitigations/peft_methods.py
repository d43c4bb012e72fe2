"""Parameter-efficient methods through peft: the base weights stay frozen, only the added ones train.

One options dataclass and one small class per method; each builds its peft config, and
`wrap` applies it. Methods that fold back into the weights (LoRA, DoRA, IA3, LoHa, LoKr, OFT)
can be exported merged; prompt and prefix tuning stay adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retain.mitigations.roles import Context


def wrap(model, peft_config):
    from peft import get_peft_model

    return get_peft_model(model, peft_config)


def _targets(value):
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class LoraOptions:
    r: int = field(default=8, metadata={"help": "rank of each adapter's two low-rank matrices"})
    alpha: int = field(default=16, metadata={"help": "scaling: the update is multiplied by alpha / r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input, in [0, 1)"})
    target_modules: tuple[str, ...] | str = field(default="all-linear", metadata={
        "help": "module names to adapt (e.g. [q_proj, v_proj]), or \"all-linear\" for every linear layer"})
    use_dora: bool = field(default=False, metadata={
        "help": "DoRA: weight-decomposed LoRA (a learned magnitude per output, LoRA on the direction)"})
    use_rslora: bool = field(default=False, metadata={"help": "rsLoRA: scale by alpha / sqrt(r) instead of alpha / r"})

    def validate(self):
        if self.r < 1:
            yield "r", f"must be >= 1, got {self.r}"
        if not 0 <= self.dropout < 1:
            yield "dropout", f"must be in [0, 1), got {self.dropout}"


class Lora:
    """LoRA / DoRA / rsLoRA adapters on the chosen linear layers."""

    def __init__(self, options: LoraOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import LoraConfig

        o = self.options
        return wrap(model, LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout,
                                      target_modules=_targets(o.target_modules), use_dora=o.use_dora,
                                      use_rslora=o.use_rslora, task_type="CAUSAL_LM"))


@dataclass(frozen=True)
class LowRankOptions:
    r: int = field(default=8, metadata={"help": "rank of the low-rank factors"})
    alpha: int = field(default=16, metadata={"help": "scaling: the update is multiplied by alpha / r"})
    target_modules: tuple[str, ...] | str = field(default="all-linear", metadata={
        "help": "module names to adapt (e.g. [q_proj, v_proj]), or \"all-linear\" for every linear layer"})

    def validate(self):
        if self.r < 1:
            yield "r", f"must be >= 1, got {self.r}"


class LoHa:
    """Low-rank Hadamard product adapters."""

    def __init__(self, options: LowRankOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import LoHaConfig

        o = self.options
        return wrap(model, LoHaConfig(r=o.r, alpha=o.alpha, target_modules=_targets(o.target_modules)))


class LoKr:
    """Low-rank Kronecker product adapters."""

    def __init__(self, options: LowRankOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import LoKrConfig

        o = self.options
        return wrap(model, LoKrConfig(r=o.r, alpha=o.alpha, target_modules=_targets(o.target_modules)))


@dataclass(frozen=True)
class IA3Options:
    target_modules: tuple[str, ...] = field(default=("k_proj", "v_proj", "down_proj"), metadata={
        "help": "module names that get a learned scaling vector"})
    feedforward_modules: tuple[str, ...] = field(default=("down_proj",), metadata={
        "help": "those of target_modules scaled on their input; the others are scaled on their output"})


class IA3:
    """Learned per-channel scaling vectors (IA3)."""

    def __init__(self, options: IA3Options):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import IA3Config

        o = self.options
        return wrap(model, IA3Config(target_modules=list(o.target_modules),
                                     feedforward_modules=list(o.feedforward_modules), task_type="CAUSAL_LM"))


@dataclass(frozen=True)
class OFTOptions:
    block_size: int = field(default=32, metadata={
        "help": "size of each orthogonal block; must divide the adapted layers' input width"})
    target_modules: tuple[str, ...] | str = field(default="all-linear", metadata={
        "help": "module names to adapt (e.g. [q_proj, v_proj]), or \"all-linear\" for every linear layer"})


class OFT:
    """Orthogonal fine-tuning: rotate the frozen weights with learned block-orthogonal matrices."""

    def __init__(self, options: OFTOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import OFTConfig

        o = self.options
        return wrap(model, OFTConfig(r=0, oft_block_size=o.block_size, target_modules=_targets(o.target_modules),
                                     task_type="CAUSAL_LM"))


@dataclass(frozen=True)
class VirtualTokensOptions:
    num_virtual_tokens: int = field(default=16, metadata={
        "help": "trainable virtual tokens: the length of the soft prompt or of each prefix"})

    def validate(self):
        if self.num_virtual_tokens < 1:
            yield "num_virtual_tokens", f"must be >= 1, got {self.num_virtual_tokens}"


class PromptTuning:
    """Trainable soft-prompt embeddings before the input; the model itself is untouched."""

    def __init__(self, options: VirtualTokensOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import PromptTuningConfig

        return wrap(model, PromptTuningConfig(num_virtual_tokens=self.options.num_virtual_tokens,
                                              task_type="CAUSAL_LM"))


class PrefixTuning:
    """Trainable key/value prefixes in every attention layer."""

    def __init__(self, options: VirtualTokensOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import PrefixTuningConfig

        return wrap(model, PrefixTuningConfig(num_virtual_tokens=self.options.num_virtual_tokens,
                                              task_type="CAUSAL_LM"))
