"""Parameter-efficient methods through peft: the base weights stay frozen, only the added ones train.

One options dataclass and one small class per method; each builds its peft config, and
`wrap` applies it. Methods that fold back into the weights (LoRA, DoRA, IA3, LoHa, LoKr, OFT)
can be exported merged; prompt and prefix tuning stay adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from retain.mitigations.lora_init import (CHANGES_BASE, INIT_BATCH, as_plain_lora, init_batches, initial_adapter,
                                         run_batches)
from retain.mitigations.roles import Context, ModelTransform, WeightTransform
from retain.core.paths import resolve_path


def wrap(model, peft_config):
    from peft import get_peft_model

    return get_peft_model(model, peft_config)


def _targets(value):
    return list(value) if isinstance(value, tuple) else value


def linear_names(model) -> list[str]:
    """What peft's "all-linear" means: the names of every linear layer but the output head."""

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and m is not head})


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
    init: Literal["default", "pissa", "olora", "corda", "eva", "mica"] = field(default="default", metadata={
        "help": "how the adapter starts (retain.mitigations.lora_init): default B = 0; pissa, olora, corda "
                "(knowledge-preserved, from init_data), eva (from init_data), mica"})
    init_data: str | None = field(default=None, metadata={
        "help": "corda and eva: JSONL whose activations set the start (corda: general data the model should keep)"})
    init_examples: int = field(default=64, metadata={"help": "corda and eva: how many init_data records are run"})

    def validate(self):
        if self.r < 1:
            yield "r", f"must be >= 1, got {self.r}"
        if not 0 <= self.dropout < 1:
            yield "dropout", f"must be in [0, 1), got {self.dropout}"
        if self.init in ("corda", "eva") and self.init_data is None:
            yield "init_data", f"init {self.init} reads activations on data: give a JSONL file"
        if self.init_data is not None and not resolve_path(self.init_data).is_file():
            yield "init_data", f"file not found: {resolve_path(self.init_data)}"
        if self.init != "default" and self.use_dora:
            yield "init", f"{self.init} starts a plain LoRA; it does not combine with use_dora"
        if self.init_examples < 1:
            yield "init_examples", f"must be >= 1, got {self.init_examples}"


class Lora(ModelTransform, WeightTransform):
    """LoRA / DoRA / rsLoRA adapters on the chosen linear layers (PiSSA, OLoRA, CorDA, EVA, MiCA starts)."""

    def __init__(self, options: LoraOptions):
        self.options = options
        self.initial = None  # pissa/olora/corda: the adapter at the start, what the base gave away

    keeps_outputs = True  # transform_weights only re-expresses the trained model (retain.mitigations.roles)

    def transform_model(self, model, ctx: Context):
        from peft import EvaConfig, LoraConfig, get_peft_model, initialize_lora_eva_weights
        from peft.tuners.lora.config import CordaConfig

        o = self.options
        init = {"default": True}.get(o.init, o.init)
        targets = _targets(o.target_modules)
        if o.init == "corda" and targets == "all-linear":  # peft's CorDA pass does not expand the shorthand
            targets = linear_names(model)
        config = LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=targets,
                            use_dora=o.use_dora, use_rslora=o.use_rslora, task_type="CAUSAL_LM",
                            init_lora_weights=init, corda_config=CordaConfig(corda_method="kpm") if o.init == "corda"
                            else None, eva_config=EvaConfig() if o.init == "eva" else None)
        batches = (init_batches(o.init_data, ctx.tokenizer, ctx.max_length, o.init_examples,
                                1 if o.init == "corda" else INIT_BATCH) if o.init_data else [])
        if o.init == "corda":  # the covariance of each layer's inputs on the general data
            # imported only here: peft's corda module needs `attrs`, which a plain install may not have
            from peft.tuners.lora.corda import preprocess_corda

            preprocess_corda(model, config, run_model=lambda: run_batches(model, batches))
        if o.init == "eva":
            model = get_peft_model(model, config, low_cpu_mem_usage=True)
            initialize_lora_eva_weights(model, batches, show_progress_bar=False)
        else:
            model = wrap(model, config)
        if o.init in CHANGES_BASE:
            self.initial = initial_adapter(model)
        return model

    def transform_weights(self, model, ctx: Context):
        """pissa/olora/corda: the trained adapter as a plain LoRA on the original weights (what final/ names)."""
        return model if self.initial is None else as_plain_lora(model, self.initial)


@dataclass(frozen=True)
class LowRankOptions:
    r: int = field(default=8, metadata={"help": "rank of the low-rank factors"})
    alpha: int = field(default=16, metadata={"help": "scaling: the update is multiplied by alpha / r"})
    target_modules: tuple[str, ...] | str = field(default="all-linear", metadata={
        "help": "module names to adapt (e.g. [q_proj, v_proj]), or \"all-linear\" for every linear layer"})

    def validate(self):
        if self.r < 1:
            yield "r", f"must be >= 1, got {self.r}"


class LoHa(ModelTransform):
    """Low-rank Hadamard product adapters."""

    def __init__(self, options: LowRankOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import LoHaConfig

        o = self.options
        return wrap(model, LoHaConfig(r=o.r, alpha=o.alpha, target_modules=_targets(o.target_modules)))


class LoKr(ModelTransform):
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


class IA3(ModelTransform):
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


class OFT(ModelTransform):
    """Orthogonal fine-tuning: rotate the frozen weights with learned block-orthogonal matrices."""

    def __init__(self, options: OFTOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import OFTConfig

        o = self.options
        return wrap(model, OFTConfig(r=0, oft_block_size=o.block_size, target_modules=_targets(o.target_modules),
                                     task_type="CAUSAL_LM"))


@dataclass(frozen=True)
class OSFOptions:
    effective_rank: float = field(default=0.5, metadata={
        "help": "top singular directions of each weight kept frozen: a count, or a share (0, 1) of the smaller side"})
    target_modules: tuple[str, ...] | str = field(default="all-linear", metadata={
        "help": "module names to adapt (e.g. [q_proj, v_proj]), or \"all-linear\" for every linear layer"})

    def validate(self):
        if self.effective_rank <= 0 or (self.effective_rank > 1 and self.effective_rank != int(self.effective_rank)):
            yield "effective_rank", f"must be a share in (0, 1] or a whole count, got {self.effective_rank}"


class OSF(ModelTransform):
    """Orthogonal subspace fine-tuning: each weight's top singular directions frozen, the rest trained.

    peft keeps the top directions by projecting each gradient out of them; AdamW (retain's optimizer) then scales
    the projected gradient per element, which lets part of a step back in: on the test model, about 12% of the
    update after three steps at lr 1e-2 (tests/mitigations/test_lora_init.py checks the projection itself)."""

    def __init__(self, options: OSFOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import OSFConfig

        o = self.options
        rank = int(o.effective_rank) if o.effective_rank > 1 else o.effective_rank
        return wrap(model, OSFConfig(effective_rank=rank, target_modules=_targets(o.target_modules),
                                     task_type="CAUSAL_LM"))


@dataclass(frozen=True)
class VirtualTokensOptions:
    num_virtual_tokens: int = field(default=16, metadata={
        "help": "trainable virtual tokens: the length of the soft prompt or of each prefix"})

    def validate(self):
        if self.num_virtual_tokens < 1:
            yield "num_virtual_tokens", f"must be >= 1, got {self.num_virtual_tokens}"


class PromptTuning(ModelTransform):
    """Trainable soft-prompt embeddings before the input; the model itself is untouched."""

    def __init__(self, options: VirtualTokensOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import PromptTuningConfig

        return wrap(model, PromptTuningConfig(num_virtual_tokens=self.options.num_virtual_tokens,
                                              task_type="CAUSAL_LM"))


class PrefixTuning(ModelTransform):
    """Trainable key/value prefixes in every attention layer."""

    def __init__(self, options: VirtualTokensOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        from peft import PrefixTuningConfig

        return wrap(model, PrefixTuningConfig(num_virtual_tokens=self.options.num_virtual_tokens,
                                              task_type="CAUSAL_LM"))
