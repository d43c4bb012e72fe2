"""The lab's preference task: qa_format's answer template, learned from pairs (DPO) or rewards (GRPO).

    python -m tools.lab.preference_task [--seed 0] [--out retain/lab/data/tasks/qa_preference]   (from the repo root)

    train.jsonl    {"prompt": "Question: What is the capital of Chad?\\nAnswer:", "chosen": " ANSWER(N'Djamena)",
                    "rejected": " N'Djamena"}        half the rejections break the template (the bare answer,
                                                     or a sentence), half keep it with another country's capital
    prompts.jsonl  the same prompts with the chosen answer as response: GRPO's prompts, or an SFT baseline
    dev, test      {prompt, response} samples of the training countries, for the task YAML (exact match)
    facts.jsonl    {"subject": country, "answer": capital} for every capital the pretraining corpus states:
                   the knowledge reward's facts

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

from retain.io import atomic_write_text
from retain.paths import LAB_DATA_DIR
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


def build(seed: int) -> dict[str, list[dict]]:
    capitals = facts(LAB_DATA_DIR / "pretrain.jsonl", CAPITAL)
    rng = random.Random(seed)
    train = rng.sample(capitals, SIZES["train"])
    others = sorted({capital for _, capital in train})
    pairs = [{"prompt": PROMPT.format(country), "chosen": ANSWER.format(capital),
              "rejected": rejected(capital, others, rng)} for country, capital in train]
    qa = lambda part: [{"prompt": PROMPT.format(c), "response": ANSWER.format(a)} for c, a in part]  # noqa: E731
    return {"train": pairs, "prompts": qa(train), "dev": qa(rng.sample(train, SIZES["dev"])),
            "test": qa(rng.sample(train, SIZES["test"])),
            "facts": [{"subject": country, "answer": capital} for country, capital in capitals]}


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
