"""Preference pairs and prompts -> token ids, and their batches.

A pair is tokenized exactly as supervised data is (retain.data: one BOS, the EOS ends the answer, labels on
the answer's tokens only): prompt + chosen and prompt + rejected are two Examples. A DPO batch stacks
them as rows [chosen_1..P, rejected_1..P, replay_1..R], so one forward serves the DPO loss, the replay loss
and any loss-term mitigation (KL reads the rows' labels like any batch's).

A GRPO prompt is a string (a record's `prompt`; its `response`, `completion` or `answer`, if any, is kept as
the reference a reward function may read), tokenized with the same BOS rule; its completions are sampled
during training (retain.objectives.grpo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retain.data import (Completion, Conversation, DataError, Dataset, Example, PreferenceExample, Turn, collate,
                         load_preferences, open_source, render_shape, resolve_chat_template, tokenize)
from retain.data.readers import check_record_size
from retain.data.tokens import has_target, truncate
from retain.core.paths import resolve_path


@dataclass
class PairExample:
    chosen: Example
    rejected: Example
    where: str  # the source row, for messages
    ref_logps: tuple[float, float] | None = None  # (chosen, rejected) under the reference, once precomputed


@dataclass
class PromptExample:
    prompt: str
    input_ids: list[int]
    where: str
    reference: str | None = None  # the record's answer, passed to reward functions
    base_answer: str | None = None  # the base model's greedy completion (similarity_to_base), once computed


def pair_texts(pair: PreferenceExample, answer) -> Completion | Conversation:
    """The shape whose rendering is the prompt followed by `answer` (pair.chosen or pair.rejected)."""
    if not pair.conversational:
        return Completion(pair.prompt, answer)
    shown = tuple(Turn(t.role, t.content, learn=False) for t in pair.prompt)  # the prompt never carries loss
    return Conversation(shown + tuple(answer))


def load_pairs(source: str | Path | Any, tokenizer, max_length: int, chat: bool = False,
               chat_template: str | None = None) -> Dataset:
    """Every record of `source` as a tokenized PairExample; DataError naming the first record that is not a pair
    (an SFT file given to DPO), and a source where no pair keeps an answer token within max_length."""
    template = resolve_chat_template(tokenizer, resolve_path(chat_template) if chat_template else None)
    pairs, truncated, dropped = [], 0, 0
    for pair in load_preferences(source):
        both, cut = [], False
        for answer in (pair.chosen, pair.rejected):
            text, spans = render_shape(pair_texts(pair, answer), tokenizer, template, pair.where, chat)
            example, was_cut = truncate(tokenize(text, spans, tokenizer, "response"), max_length)
            both.append(example)
            cut |= was_cut
        truncated += cut
        if not all(has_target(e) for e in both):
            dropped += 1  # an answer lost every token to max_length: nothing to compare
            continue
        pairs.append(PairExample(both[0], both[1], pair.where))
    name = open_source(source).name
    if not pairs:
        raise DataError(f"{name}: no preference pair keeps an answer token within max_length={max_length}")
    return Dataset(pairs, name, truncated, dropped)


def collate_pairs(items: list, pad_id: int) -> dict[str, torch.Tensor]:
    """Rows [chosen (P), rejected (P), replay (R)], right-padded: input_ids, attention_mask, labels (2P+R, T),
    replay (2P+R,) bool, n_pairs (int), and ref_logps (2P,) when every pair has them precomputed."""
    pairs = [x for x in items if isinstance(x, PairExample)]
    general = [x for x in items if not isinstance(x, PairExample)]  # replay's Examples
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs] + general, pad_id)
    batch["n_pairs"] = len(pairs)  # a host int: slicing rows by it never syncs with the device
    if pairs and all(p.ref_logps is not None for p in pairs):
        batch["ref_logps"] = torch.tensor([p.ref_logps[0] for p in pairs] + [p.ref_logps[1] for p in pairs],
                                          dtype=torch.float32)
    return batch


def load_prompts(source: str | Path | Any, tokenizer, max_length: int, chat: bool = False) -> Dataset:
    """Every record's `prompt` (a string) as a tokenized PromptExample, its answer field kept as the reference."""
    src = open_source(source)
    prompts, truncated = [], 0
    for where, record in src.rows:
        check_record_size(record, where)
        if src.parse is not None:  # a dataset_info.json entry says how its rows read
            shape = src.parse(record, where)
            record = {"prompt": getattr(shape, "prompt", None), "response": getattr(shape, "completion", None)}
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            got = "missing" if prompt is None else f"expected a non-empty string, got {type(prompt).__name__}"
            raise DataError(f"{where}: field 'prompt': {got} (GRPO samples its answers: give {{prompt}} records, "
                            "optionally with the reference answer as response)")
        reference = next((record[k] for k in ("response", "completion", "answer") if isinstance(record.get(k), str)),
                         None)
        text = prompt
        if chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt.strip()}], tokenize=False,
                                                 add_generation_prompt=True)
        ids = tokenize(text, [], tokenizer, "response").input_ids
        if len(ids) >= max_length:  # keep the end: the generation continues from it
            ids, truncated = ids[-(max_length - 1):], truncated + 1
        prompts.append(PromptExample(prompt, ids, where, reference))
    if not prompts:
        raise DataError(f"{src.name}: no prompts")
    return Dataset(prompts, src.name, truncated, 0)


def collate_prompts(items: list, pad_id: int) -> dict[str, Any]:
    """The prompts and replay's Examples as they are: the rollout builds the tensors, once completions exist."""
    return {"prompts": [x for x in items if isinstance(x, PromptExample)],
            "general": [x for x in items if not isinstance(x, PromptExample)]}


def to_device(batch: dict, device) -> dict:
    """A batch with its tensors on `device` (host ints and lists, such as n_pairs or prompts, as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
