"""Scoring items of one kind with an LM: (aggregate metrics, per-item records for paired statistics).

    multiple_choice  items {id, context, choices, gold}
    perplexity       items {id, text}
    generation       items {id, context, target}
    diversity        items {id, context}

`context` is the text the model sees, already rendered (plain text, few-shot prefix or chat template).
"""

from __future__ import annotations

import re

from retain.evaluation import metrics as M


def score_multiple_choice(lm, items: list[dict], target_delimiter: str = " ") -> tuple[dict, list[dict]]:
    requests = [(it["context"], target_delimiter + c) for it in items for c in it["choices"]]
    lls = iter(ll for ll, _ in lm.loglikelihood(requests))
    records = []
    for it in items:
        item_lls = [next(lls) for _ in it["choices"]]
        records.append({"id": it["id"], **M.multiple_choice_item(item_lls, it["choices"], it["gold"]),
                        "loglikelihoods": item_lls})
    return M.mean_aggregate(records, ("acc", "acc_norm")), records


def score_perplexity(lm, items: list[dict]) -> tuple[dict, list[dict]]:
    scored = lm.loglikelihood_rolling([it["text"] for it in items])
    records = [{"id": it["id"], **M.perplexity_item(ll, n, it["text"])} for it, (ll, n) in zip(items, scored)]
    return M.perplexity_aggregate(records), records


def score_generation(lm, items: list[dict], until: tuple[str, ...], max_new_tokens: int,
                     answer_regex: str | None = None) -> tuple[dict, list[dict]]:
    predictions = lm.generate_until([(it["context"], until, max_new_tokens) for it in items])
    pattern = re.compile(answer_regex) if answer_regex else None
    # the prompt and target beside the prediction: the report shows answers that changed (retain.report.answers)
    records = [{"id": it["id"], **M.generation_item(p, it["target"], pattern), "prediction": p,
                "context": it["context"], "target": it["target"]} for it, p in zip(items, predictions)]
    keys = ("exact_match", "contains") + (("regex_match",) if pattern else ())
    return M.mean_aggregate(records, keys), records


def score_diversity(lm, items: list[dict], until: tuple[str, ...], max_new_tokens: int, samples_per_prompt: int,
                    temperature: float, seed: int) -> tuple[dict, list[dict]]:
    """Several sampled continuations per prompt, seeded."""
    k = samples_per_prompt
    requests = [(it["context"], until, max_new_tokens) for it in items for _ in range(k)]
    samples = lm.generate_until(requests, sample=True, temperature=temperature, seed=seed)
    records = [{"id": it["id"], **M.diversity_item(samples[i * k:(i + 1) * k]), "samples": samples[i * k:(i + 1) * k]}
               for i, it in enumerate(items)]
    return M.diversity_aggregate(samples), records
