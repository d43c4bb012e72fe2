"""Freezing parts of the model so that they cannot move at all."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from retain.core.errors import ConfigError
from retain.mitigations.roles import Context, GradientFilter, ModelTransform

# "model.layers.3.mlp..." (Llama, Mistral, Qwen), "transformer.h.3..." (GPT-2), "...blocks.3..."
BLOCK_INDEX = re.compile(r"\.(?:layers|h|blocks|block|layer)\.(\d+)\.")


def block_index(param_name: str) -> int | None:
    match = BLOCK_INDEX.search(param_name)
    return int(match.group(1)) if match else None


def embedding_param_ids(model: torch.nn.Module) -> set[int]:
    """Input (and tied output) embedding parameters, by identity."""
    ids = {id(p) for p in model.get_input_embeddings().parameters()}
    output = model.get_output_embeddings()
    if output is not None and any(id(p) in ids for p in output.parameters()):
        ids |= {id(p) for p in output.parameters()}  # tied: one tensor, frozen with the input side
    return ids


def freeze_params(model: torch.nn.Module, embeddings: bool, first_n_blocks: int, patterns: tuple[str, ...]) -> list[str]:
    """Set requires_grad=False on the selected parameters; returns their names."""
    embed_ids = embedding_param_ids(model) if embeddings else set()
    compiled = [re.compile(p) for p in patterns]
    frozen = []
    for name, param in model.named_parameters():
        index = block_index(name)
        if (id(param) in embed_ids
                or (index is not None and index < first_n_blocks)
                or any(p.search(name) for p in compiled)):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


@dataclass(frozen=True)
class FreezeOptions:
    embeddings: bool = field(default=False, metadata={
        "help": "freeze the input embeddings (and the output head when it is tied to them)"})
    first_n_blocks: int = field(default=0, metadata={
        "help": "freeze transformer blocks 0 .. n-1, the ones closest to the input"})
    patterns: tuple[str, ...] = field(default=(), metadata={
        "help": "regexes on parameter names (re.search); every parameter one matches is frozen too"})

    def validate(self):
        if self.first_n_blocks < 0:
            yield "first_n_blocks", f"must be >= 0, got {self.first_n_blocks}"
        for i, p in enumerate(self.patterns):
            try:
                re.compile(p)
            except re.error as e:
                yield f"patterns[{i}]", f"not a valid regex: {e}"


class Freeze(ModelTransform):
    """Chosen parameters (embeddings, the first blocks, names by regex) never move."""

    def __init__(self, options: FreezeOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        o = self.options
        frozen = freeze_params(model, o.embeddings, o.first_n_blocks, o.patterns)
        if not frozen:
            raise ConfigError("mitigations.freeze: the options select no parameter of this model — check the "
                              "module names and block counts against the model")
        return model


def num_blocks(model: torch.nn.Module) -> int:
    indices = {block_index(n) for n, _ in model.named_parameters()} - {None}
    return max(indices) + 1 if indices else 0


@dataclass(frozen=True)
class ProgressiveUnfreezeOptions:
    every: int = field(default=50, metadata={"help": "optimizer steps between unfreezing one more block"})
    start_blocks: int = field(default=1, metadata={"help": "blocks (nearest the output) trainable from step 0"})
    train_head: bool = field(default=True, metadata={
        "help": "the output head and the final norm train from step 0"})
    train_embeddings: bool = field(default=False, metadata={
        "help": "the input embeddings train too; otherwise they never unfreeze"})

    def validate(self):
        if self.every < 1:
            yield "every", f"must be >= 1, got {self.every}"
        if self.start_blocks < 0:
            yield "start_blocks", f"must be >= 0, got {self.start_blocks}"


def trainable_blocks_at(step: int, n_blocks: int, start_blocks: int, every: int) -> set[int]:
    """Blocks (by index) that train at `step`: the top `start_blocks`, plus one more every `every` steps."""
    n = min(n_blocks, start_blocks + step // every)
    return set(range(n_blocks - n, n_blocks))


class ProgressiveUnfreeze(GradientFilter):
    """Top blocks first (those nearest the output), one more block every `every` steps (ULMFiT-style).

    Parameters stay requires_grad=True so DDP sees a fixed graph; those not yet unfrozen have their
    gradients dropped before the optimizer step, so AdamW leaves them bit-identical. No runtime state:
    the phase is a function of the step, so a resumed run is in the same phase without a state_dict.
    """

    def __init__(self, options: ProgressiveUnfreezeOptions):
        self.options = options

    def filter_gradients(self, model, step: int) -> None:
        o = self.options
        live = trainable_blocks_at(step, num_blocks(model), o.start_blocks, o.every)
        embed_ids = embedding_param_ids(model)
        for name, p in model.named_parameters():
            index = block_index(name)
            if index is not None:
                keep = index in live
            elif id(p) in embed_ids:
                # tied embeddings are the head too: they follow train_head if the head trains
                keep = o.train_embeddings or (o.train_head and "lm_head" in name)
            else:
                keep = o.train_head  # final norm, untied head
            if not keep:
                p.grad = None
