"""The lab's preference task: qa_format's answer template, learned from pairs (DPO) or rewards (GRPO).

    python -m tools.lab.preference_task [--seed 0] [--out retain/lab/data/tasks/qa_preference]   (from the repo root)

    train.jsonl    {"prompt": "Question: What is the capital of Chad?\\nAnswer:", "chosen": " ANSWER(N'Djamena)",
                    "rejected": " N'Djamena"}        half the rejections break the template (the bare answer,
                                                     or a sentence), half keep it with another country's capital
    prompts.jsonl  the same prompts with the chosen answer as response: GRPO's prompts, or an SFT baseline
    dev, test      {prompt, response} samples of the training countries, for the task YAML (exact match)
    facts.jsonl    {"subject": country, "answer": capital} for every capital the pretraining corpus states:
                   the knowledge reward's facts
    heldout_pairs.jsonl   pairs as train's for every other country: held-out preference accuracy
    capital_prompts.jsonl {"prompt": "The capital of Chad is", "response": " N'Djamena."} for the countries of the
                   lab suite's dev split, in the phrasing retain-tiny knows its capitals in: GRPO prompts where a
                   knowledge reward can fire from the first step (configs/grpo_capitals.yaml)

Why the training countries again in dev and test: retain-tiny does not carry a new answer format over to
countries it was not trained on (see continual_task.py), so a score on them says whether the preference
was learned. Deterministic: facts read in sorted order, sampled and paired with a seeded RNG.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from retain.core.files import atomic_write_text
from retain.core.paths import LAB_DATA_DIR
from tools.lab.continual_task import facts

CAPITAL = re.compile(r"^The capital of (.+) is (.+)\.$")
PROMPT, ANSWER = "Question: What is the capital of {}?\nAnswer:", " ANSWER({})"
SIZES = {"train": 160, "dev": 40, "test": 100}  # dev and test are drawn from train's countries


def rejected(capital: str, others: list[str], rng: random.Random) -> str:
    """A worse answer: the right capital outside the template, or the template around a wrong capital."""
    kind = rng.choice(["bare", "sentence", "wrong_fact", "wrong_fact"])
    if kind == "bare":
        return f" {capital}"
    if kind == "sentence":
        return f" The capital is {capital}."
    return ANSWER.format(rng.choice([c for c in others if c != capital]))


def capital_prompts(capitals: list[tuple[str, str]]) -> list[dict]:
    """The lab suite's dev countries (capital_recall.dev), prompted as the pretraining corpus states them."""
    known = dict(capitals)
    rows = [json.loads(line) for line in (LAB_DATA_DIR / "suite" / "capital_recall.dev.jsonl").read_text().splitlines()]
    countries = [r["context"].removeprefix("The capital of ").removesuffix(" is") for r in rows]
    return [{"prompt": f"The capital of {c} is", "response": f" {known[c]}."} for c in countries]


def build(seed: int) -> dict[str, list[dict]]:
    capitals = facts(LAB_DATA_DIR / "pretrain.jsonl", CAPITAL)
    rng = random.Random(seed)
    train = rng.sample(capitals, SIZES["train"])
    others = sorted({capital for _, capital in train})
    pair = lambda country, capital: {"prompt": PROMPT.format(country), "chosen": ANSWER.format(capital),  # noqa: E731
                                     "rejected": rejected(capital, others, rng)}
    pairs = [pair(country, capital) for country, capital in train]
    qa = lambda part: [{"prompt": PROMPT.format(c), "response": ANSWER.format(a)} for c, a in part]  # noqa: E731
    parts = {"train": pairs, "prompts": qa(train), "dev": qa(rng.sample(train, SIZES["dev"])),
             "test": qa(rng.sample(train, SIZES["test"])),
             "facts": [{"subject": country, "answer": capital} for country, capital in capitals]}
    seen = {country for country, _ in train}  # drawn last, so the files above stay as they were
    parts["heldout_pairs"] = [pair(country, capital) for country, capital in capitals if country not in seen]
    parts["capital_prompts"] = capital_prompts(capitals)
    return parts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=LAB_DATA_DIR / "tasks" / "qa_preference")
    args = parser.parse_args(argv)
    for name, rows in build(args.seed).items():
        path = atomic_write_text(args.out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows):5d}  {path}")


if __name__ == "__main__":
    main()
