"""Scores, as pure functions of model outputs. Definitions follow lm-evaluation-harness where it has one.

Per item (kept for paired statistics) and per task (aggregates):
    multiple_choice  acc = [argmax ll == gold]; acc_norm = [argmax ll / len(choice chars) == gold]
    perplexity       word_perplexity = exp(-Σll / Σwords), byte_perplexity = exp(-Σll / Σbytes),
                     bits_per_byte = -Σll / Σbytes / ln 2, token_perplexity = exp(-Σll / Σtokens);
                     words = len(re.split(r"\\s+", text)), bytes = len(utf-8)
    generation       exact_match = [prediction.strip() == target.strip()], contains = [target in prediction],
                     regex_match = [the answer_regex's match in the prediction == target] (when a task sets one)
    diversity        distinct_n = unique n-grams / n-grams over all samples; repetition_rate = share of
                     tokens that repeat a 4-gram already in the same sample; self_bleu = mean BLEU-4 of each
                     sample against the others
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np


def multiple_choice_item(lls: list[float], choices: list[str], gold: int) -> dict:
    lengths = np.array([float(len(c)) for c in choices])
    return {"acc": float(int(np.argmax(lls)) == gold),
            "acc_norm": float(int(np.argmax(np.array(lls) / lengths)) == gold)}


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def perplexity_item(loglikelihood: float, n_tokens: int, text: str) -> dict:
    return {"loglikelihood": loglikelihood, "tokens": n_tokens, "words": count_words(text),
            "bytes": len(text.encode("utf-8"))}


def perplexity_aggregate(items: list[dict]) -> dict:
    ll = sum(i["loglikelihood"] for i in items)
    words, n_bytes, tokens = (sum(i[k] for i in items) for k in ("words", "bytes", "tokens"))
    return {"word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / n_bytes),
            "bits_per_byte": -ll / n_bytes / math.log(2), "token_perplexity": math.exp(-ll / tokens)}


def generation_item(prediction: str, target: str, answer_regex: re.Pattern | None = None) -> dict:
    """exact_match and contains; with `answer_regex`, regex_match = [its first match (group 1 if it has
    groups) == target], the answer extracted from a chatty reply."""
    item = {"exact_match": float(prediction.strip() == target.strip()), "contains": float(target.strip() in prediction)}
    if answer_regex is not None:
        found = answer_regex.search(prediction)
        answer = (found.group(1) if answer_regex.groups else found.group(0)) if found else None
        item["regex_match"] = float(answer is not None and answer.strip() == target.strip())
    return item


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]


def repetition_rate(tokens: list[str], n: int = 4) -> float:
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def bleu(candidate: list[str], references: list[list[str]], max_n: int = 4) -> float:
    """Sentence BLEU-4; n-gram precisions for n > 1 get add-one smoothing (Lin & Och 2004)."""
    if not candidate:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        counts = Counter(ngrams(candidate, n))
        max_ref = Counter()
        for ref in references:
            for g, c in Counter(ngrams(ref, n)).items():
                max_ref[g] = max(max_ref[g], c)
        clipped = sum(min(c, max_ref[g]) for g, c in counts.items())
        if n == 1 and clipped == 0:
            return 0.0
        smooth = 0 if n == 1 else 1  # unigram precision unsmoothed, higher orders add one
        log_precision += math.log((clipped + smooth) / (sum(counts.values()) + smooth)) / max_n
    closest = min((abs(len(r) - len(candidate)), len(r)) for r in references)[1]
    brevity = 1.0 if len(candidate) > closest else math.exp(1 - closest / len(candidate))
    return brevity * math.exp(log_precision)


def diversity_item(samples: list[str]) -> dict:
    tokens = [s.split() for s in samples]
    return {"distinct_1": distinct_n(tokens, 1), "distinct_2": distinct_n(tokens, 2),
            "repetition_rate": float(np.mean([repetition_rate(t) for t in tokens]))}


def distinct_n(samples: list[list[str]], n: int) -> float:
    grams = [g for s in samples for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def diversity_aggregate(all_samples: list[str], max_self_bleu: int = 100) -> dict:
    tokens = [s.split() for s in all_samples]
    sample = tokens[:max_self_bleu]  # self-BLEU is quadratic; the first N samples are a fixed subset
    self_bleu = float(np.mean([bleu(t, sample[:i] + sample[i + 1:]) for i, t in enumerate(sample)])) \
        if len(sample) > 1 else 0.0
    return {"distinct_1": distinct_n(tokens, 1), "distinct_2": distinct_n(tokens, 2),
            "repetition_rate": float(np.mean([repetition_rate(t) for t in tokens])), "self_bleu": self_bleu}


def mean_aggregate(items: list[dict], keys: tuple[str, ...]) -> dict:
    return {k: float(np.mean([i[k] for i in items])) for k in keys}


def size_weighted_mean(values: list[float], sizes: list[int], weight_by_size: bool = True) -> float:
    """A group's score from its subtasks' (lm-eval's aggregate_subtask_metrics): each weighted by its size, or by 1."""
    weights = sizes if weight_by_size else [1] * len(values)
    return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)
