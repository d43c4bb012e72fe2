"""Training data, in the shapes and places people keep it, turned into token ids and loss labels.

    load_dataset(source, tokenizer, ...) -> Dataset      tokenized examples, what the training loop trains on
    load_preferences(source)             -> [PreferenceExample]   prompt/chosen/rejected pairs (for DPO)

A record's way, one module per step:
    sources.py       where the rows are: JSONL/JSON, parquet, CSV, arrow, save_to_disk folders, a hub dataset,
                     LLaMA-Factory's dataset_info.json#NAME, rows from Python (readers.py reads each)
    shapes.py        what a row says: a text, a completion, a conversation or a preference pair
                     (llamafactory.py: what a dataset_info.json entry says its rows are)
    chat.py          a conversation -> text + the assistant's character spans, through a chat template
    tokens.py        text + spans -> ids + labels (one BOS, never two); Example, Dataset
    batches.py       padded batches, and the seeded order a resume replays
    packing.py       several short examples per row, each attending to itself only (data.packing)

Each record becomes one string plus the character spans that carry the loss (the response, the output,
the assistant turns; everything for a text, or for `loss_on: all`); the EOS ends every target. With
`chat`, a prompt/response or Alpaca record becomes one user turn and one assistant turn of the chat
template. Every problem is a DataError naming the source and row (`FILE:LINE: field 'x': ...`), raised
while the data loads, before the first training step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retain.data.batches import MODEL_INPUTS, SeededOrder, collate, model_inputs
from retain.data.chat import ChatTemplate, render_conversation, resolve_chat_template
from retain.data.packing import pack
from retain.data.readers import check_record_size, max_line_bytes, read_jsonl
from retain.data.shapes import (ALPACA_PROMPT, Completion, Conversation, PreferenceExample, Shape, Text, Turn,
                                detect_format, parse_record)
from retain.data.sources import Source, open_source, source_problem
from retain.data.tokens import IGNORE_INDEX, Dataset, Example, has_target, tokenize, truncate
from retain.core.errors import DataError
from retain.core.paths import resolve_path

__all__ = ["ALPACA_PROMPT", "IGNORE_INDEX", "MODEL_INPUTS", "ChatTemplate", "Completion", "Conversation", "DataError",
           "Dataset", "Example", "PreferenceExample", "SeededOrder", "Source", "Text", "Turn", "collate",
           "detect_format", "general_examples", "load_dataset", "load_preferences", "max_line_bytes", "model_inputs",
           "open_source", "pack", "read_jsonl", "render_shape", "resolve_chat_template", "source_problem", "tokenize"]


def load_dataset(source: str | Path | Any, tokenizer, fmt: str = "auto", max_length: int = 512,
                 loss_on: str = "response", chat: bool = False, chat_template: str | Path | None = None) -> Dataset:
    """Read and tokenize every record of `source`; DataError on the first bad one, before any training.

    `source` is a `data.train` string (a path, `lab:...`, `hub:...`, `DIR/dataset_info.json#NAME`,
    `python:...`), a Path, or rows from Python (a datasets.Dataset, a list of dicts). `fmt` is
    `data.format` ('auto': each record's keys decide); `chat_template` (a Jinja file, `data.chat_template`)
    replaces the tokenizer's chat template.
    """
    src = open_source(source)
    if src.parse is not None and fmt != "auto":
        raise DataError(f"{src.name}: data.format is {fmt!r}, but this dataset entry says how its rows read — "
                        "leave data.format at auto")
    template = resolve_chat_template(tokenizer, resolve_path(str(chat_template)) if chat_template else None)
    examples, truncated, dropped = [], 0, 0
    for where, record in src.rows:
        shape = read_shape(src, record, fmt, where)
        if isinstance(shape, PreferenceExample):
            raise DataError(f"{where}: a preference pair (prompt, chosen, rejected): supervised fine-tuning learns "
                            "one answer per example — give {prompt, response} records (e.g. the chosen answers); "
                            "the pairs are for a preference stage")
        text, spans = render_shape(shape, tokenizer, template, where, chat)
        example, cut = truncate(tokenize(text, spans, tokenizer, loss_on), max_length)
        truncated += cut
        if not has_target(example):
            dropped += 1  # nothing to learn after the shift: no target token survived
            continue
        examples.append(example)
    if not examples:
        raise DataError(f"{src.name}: no example has a target token within max_length={max_length}")
    return Dataset(examples, src.name, truncated, dropped)


def general_examples(source: str | Path, tokenizer, max_length: int) -> list[Example]:
    """The examples of a general-data file (replay's pool, the data EWC's Fisher, SI's anchor, the early warnings and
    CorDA read), tokenized as the run tokenizes, every token a target: what the model should keep predicting."""
    return load_dataset(resolve_path(source) if isinstance(source, str) else source, tokenizer, "auto", max_length,
                        "all").examples


def load_preferences(source: str | Path | Any, fmt: str = "auto") -> list[PreferenceExample]:
    """Every record of `source` as a checked preference pair; DataError naming the first that is not one."""
    src = open_source(source)
    pairs = []
    for where, record in src.rows:
        shape = read_shape(src, record, "preference" if fmt == "auto" and src.parse is None else fmt, where)
        if not isinstance(shape, PreferenceExample):
            raise DataError(f"{where}: not a preference pair — expected prompt, chosen and rejected")
        pairs.append(shape)
    return pairs


def read_shape(src: Source, record: dict, fmt: str, where: str) -> Shape:
    check_record_size(record, where)
    return src.parse(record, where) if src.parse is not None else parse_record(record, fmt, where)


def render_shape(shape: Shape, tokenizer, template: ChatTemplate, where: str,
                 chat: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """(text, loss spans) of one record's shape; the EOS ends every target outside a chat template."""
    eos = tokenizer.eos_token or ""
    if isinstance(shape, Text):
        text = shape.text + eos
        return text, [(0, len(text))]
    if isinstance(shape, Conversation):
        return render_conversation(shape.turns, tokenizer, template, where)
    prompt, target = shape.prompt, shape.completion
    if chat:
        if template.plain:
            raise DataError(f"{where}: data.chat is set, but the tokenizer has no chat template (give one with "
                            "data.chat_template: FILE.jinja)")
        turns = (Turn("user", prompt.strip()), Turn("assistant", target.strip()))
        return render_conversation(turns, tokenizer, template, where)
    return prompt + target + eos, [(len(prompt), len(prompt) + len(target) + len(eos))]
