"""Task isolation: one adapter per task, side by side in one model, picked by task id or by a router.

    model, tokenizer = load_adapter_set(base, {"city_country": dir1, "qa_format": dir2})
    with use_adapter(model, "qa_format"): ...      # None: the base model, every adapter off
    nll = prompt_nll(model, tokenizer, texts)      # (n,) mean negative log-likelihood per token
    choice = route({"base": nll0, "city_country": nll1, ...})   # per item, the lowest-perplexity candidate
    records = routed_records({"base": items0, ...}, choice)     # what routed inference scores

Adapters are peft's named adapters on one base model: a LoRA adapter leaves the base weights as
they were, so a task's adapter gives the same outputs whichever others are loaded beside it.
That is what lets the sequence runner score each adapter once, right after its stage, and build
the routed results of every later stage from those records: scoring item i with the adapter the
router picked for it is the record of item i under that adapter (items are scored independently).

The router needs no labels: it runs every candidate on the item's prompt (the context, or the
document of a perplexity task) and picks the one with the lowest perplexity — the adapter whose
training data looked most like this prompt. "base" (all adapters off) is a candidate too, so
prompts of no trained task (the capability suite) can go to the untouched model.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from retain.core.errors import ConfigError
from retain.evaluation.lm import LM
from retain.model.loading import ModelConfig, load_model, load_tokenizer
from retain.model.reference import adapters_disabled

BASE = "base"  # the candidate with every adapter off


def load_adapter_set(base: str, adapters: dict[str, Path], dtype: str = "float32"):
    """(peft model with each adapter under its name, tokenizer); the base is loaded once."""
    from peft import PeftModel

    if BASE in adapters:
        raise ConfigError(f"an adapter may not be called {BASE!r}: the name is the base model's")
    config = ModelConfig(name=base, dtype=dtype)
    model, tokenizer = load_model(config), load_tokenizer(config, need_pad=False)
    if not adapters:
        return model, tokenizer
    names = list(adapters)
    model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.eval()
    return model, tokenizer


@contextmanager
def use_adapter(model, name: str | None):
    """Run the block with adapter `name` active; None or BASE: with every adapter off."""
    if name in (None, BASE):
        with adapters_disabled(model):  # a plain model is its own base
            yield model
        return
    model.set_adapter(name)
    yield model


def prompt_nll(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean negative log-likelihood per token of each text, shape (n,), scored as retain scores text."""

    lm = LM(model, tokenizer, batch_size=batch_size)
    scored = lm.loglikelihood_rolling(texts)
    return np.array([-ll / max(n, 1) for ll, n in scored])


def routing_texts(task, split: str, limit: int | None, tokenizer) -> list[str]:
    """What the router reads for each scored item of `task`: its rendered prompt, or its document."""
    if not hasattr(task, "items"):
        raise ConfigError(f"task {task.name}: the router reads retain-format task items; this task's format "
                          "(lm-eval or MMLU) does not expose them — route with retain task YAMLs only")
    texts = []
    for item in task.items(split)[:limit]:
        texts.append(task.render(item["context"], tokenizer) if "context" in item else item["text"])
    return texts


def route(nll_by_candidate: dict[str, np.ndarray]) -> list[str]:
    """Per item, the candidate with the lowest prompt perplexity (the first listed on a tie)."""
    names = list(nll_by_candidate)
    stacked = np.stack([np.asarray(nll_by_candidate[n]) for n in names])  # (candidates, n_items)
    return [names[k] for k in stacked.argmin(axis=0)]


def routed_records(records_by_candidate: dict[str, list[dict]], choice: list[str]) -> list[dict]:
    """Item i's record under the candidate routed to it, tagged with that candidate's name."""
    return [{**records_by_candidate[name][i], "routed_to": name} for i, name in enumerate(choice)]


def routing_accuracy(choice: list[str], correct: str) -> float:
    """The share of items routed to `correct` (their task's adapter, or BASE for the capability suite)."""
    return sum(c == correct for c in choice) / max(len(choice), 1)
