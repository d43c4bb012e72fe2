"""Freezing parts of the model so that they cannot move at all."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from retain.mitigations.roles import Context

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
    embeddings: bool = False
    first_n_blocks: int = 0  # blocks 0 .. n-1 (closest to the input) stay fixed
    patterns: tuple[str, ...] = ()  # regexes on parameter names

    def validate(self):
        if self.first_n_blocks < 0:
            yield "first_n_blocks", f"must be >= 0, got {self.first_n_blocks}"
        for i, p in enumerate(self.patterns):
            try:
                re.compile(p)
            except re.error as e:
                yield f"patterns[{i}]", f"not a valid regex: {e}"


class Freeze:
    def __init__(self, options: FreezeOptions):
        self.options = options

    def transform_model(self, model, ctx: Context):
        o = self.options
        frozen = freeze_params(model, o.embeddings, o.first_n_blocks, o.patterns)
        if not frozen:
            raise ValueError("mitigations.freeze: the options select no parameter of this model")
        return model
