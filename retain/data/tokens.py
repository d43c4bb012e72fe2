"""Text and its loss spans -> token ids and labels; the tokenized dataset the loop trains on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IGNORE_INDEX = -100  # label value the cross-entropy skips


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss
    replay: bool = False  # general data mixed in by the replay mitigation, not task data
    positions: list[int] | None = None  # a packed row (retain.data.packing): each example's positions from 0


@dataclass
class Dataset:
    examples: list[Example]
    path: Path | str  # the file, or the source's name (hub:..., python:..., DIR/dataset_info.json#NAME)
    truncated: int  # examples cut at max_length
    dropped: int  # examples with no loss-carrying token left after truncation

    def __len__(self) -> int:
        return len(self.examples)


def tokenize(text: str, spans: list[tuple[int, int]], tokenizer, loss_on: str) -> Example:
    """Ids and labels of `text`. The tokenizer adds its special tokens (a Llama tokenizer adds BOS)
    unless the text already begins with BOS, as a chat template that writes `{{ bos_token }}` makes
    it: one BOS either way, never two (the same rule as evaluation's LM.encode).

    Tokenizing the whole string once and labelling tokens by their character offsets keeps the ids
    identical to what the model sees at inference, whatever the tokenizer does at segment boundaries.
    """
    bos = tokenizer.bos_token
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=not (bos and text.startswith(bos)))
    labels = []
    for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        # special tokens the tokenizer adds (BOS) have an empty span and never carry loss
        in_target = end > start and any(s <= start < e for s, e in spans)
        labels.append(token_id if (loss_on == "all" and end > start) or in_target else IGNORE_INDEX)
    return Example(list(enc["input_ids"]), labels)


def truncate(example: Example, max_length: int) -> tuple[Example, bool]:
    """(the example cut to max_length, whether it was cut)."""
    if len(example.input_ids) <= max_length:
        return example, False
    return Example(example.input_ids[:max_length], example.labels[:max_length], example.replay), True


def has_target(example: Example) -> bool:
    """Whether any token carries the loss after the shift (the first token is never predicted)."""
    return any(label != IGNORE_INDEX for label in example.labels[1:])
