"""Self-distillation fine-tuning (SDFT): train on the base model's own wording of the targets.

Before training, the base model rewrites each task response: it is shown the prompt with the
original response as a demonstration (`template`), then the prompt again, and continues greedily.
A rewrite replaces the original only if it still contains the original's answer (`keep_if`), so
the run learns the task in a distribution close to the model's own, which changes it less.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from retain.data import IGNORE_INDEX
from retain.evaluation.lm import LM
from retain.mitigations.roles import Context, DataTransform


@dataclass(frozen=True)
class SelfDistillOptions:
    template: str = field(default="{prompt}{response}\n{prompt}", metadata={
        "help": "what the base model continues: the example as a demonstration, then the prompt; needs {prompt}"})
    keep_if: Literal["contains_answer", "always"] = field(default="contains_answer", metadata={
        "help": "contains_answer: keep a rewrite only if it still holds the original's answer; always: keep all"})
    answer: Literal["last_word", "whole"] = field(default="last_word", metadata={
        "help": "what of the original response must survive in the rewrite: its last word, or all of it"})
    max_new_tokens: int = field(default=32, metadata={"help": "longest rewrite the base model may generate, in tokens"})
    batch_size: int = field(default=32, metadata={"help": "prompts per generation batch"})

    def validate(self):
        if "{prompt}" not in self.template:
            yield "template", "must contain {prompt}"


def answer_of(response: str, how: str) -> str:
    text = response.strip().rstrip(".!?")
    return text.split()[-1] if how == "last_word" and text.split() else text


def split_example(example, tokenizer) -> tuple[str, str]:
    """(prompt text, response text) of a tokenized example, from its loss labels."""
    first = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    prompt = tokenizer.decode(example.input_ids[:first])
    response = tokenizer.decode(example.input_ids[first:], skip_special_tokens=True)
    return prompt, response


class SelfDistill(DataTransform):
    """Train on the base model's own rewording of each task response (SDFT)."""

    def __init__(self, options: SelfDistillOptions):
        self.options = options
        self.kept = 0

    def transform_data(self, examples: list, ctx: Context) -> list:
        o = self.options
        tok = ctx.tokenizer
        base = ctx.load_base_model().eval()  # the untouched base, whatever wraps the run's model
        lm = LM(base, tok, batch_size=o.batch_size)
        task = [(i, *split_example(e, tok)) for i, e in enumerate(examples) if not e.replay]
        requests = [(o.template.format(prompt=p, response=r), ("\n",), o.max_new_tokens) for _, p, r in task]
        with torch.no_grad():
            rewrites = lm.generate_until(requests)
        out = list(examples)
        eos = tok.eos_token or ""
        for (i, prompt, response), rewrite in zip(task, rewrites):
            if o.keep_if == "always" or answer_of(response, o.answer) in rewrite:
                ids = tok(prompt + rewrite + eos)["input_ids"]
                n_prompt = len(tok(prompt)["input_ids"])
                labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
                out[i] = replace(examples[i], input_ids=ids[: ctx.max_length],
                                 labels=labels[: ctx.max_length])
                self.kept += 1
        print(f"self-distillation: {self.kept} of {len(task)} responses rewritten by the base model")
        return out
