"""Self-distillation fine-tuning (SDFT): train on the base model's own wording of the targets.

Before training, the base model rewrites each task response: it is shown the prompt with the
original response as a demonstration (`template`), then the prompt again, and continues greedily.
A rewrite replaces the original only if it still contains the original's answer (`keep_if`), so
the run learns the task in a distribution close to the model's own, which changes it less.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from retain.data import IGNORE_INDEX
from retain.mitigations.roles import Context


@dataclass(frozen=True)
class SelfDistillOptions:
    template: str = "{prompt}{response}\n{prompt}"  # what the base model continues
    keep_if: Literal["contains_answer", "always"] = "contains_answer"
    answer: Literal["last_word", "whole"] = "last_word"  # what of the original must survive
    max_new_tokens: int = 32
    batch_size: int = 32

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


class SelfDistill:
    def __init__(self, options: SelfDistillOptions):
        self.options = options
        self.kept = 0

    def transform_data(self, examples: list, ctx: Context) -> list:
        from retain.evaluation.lm import LM
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
