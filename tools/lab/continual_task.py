"""The lab's third narrow task, for continual-learning sequences: country -> currency in a rigid format.

    python tools/lab/continual_task.py [--seed 0] [--out retain/lab/data/tasks/country_currency]

    {"prompt": "Country: Sri Lanka\\nCurrency:", "response": " [Rupee]"}

retain-tiny learned "The currency of X is the Y." in pretraining (retain/lab/data/pretrain.jsonl),
but a 4M-parameter model does not carry a new answer format over to countries it was not trained
on in a few steps (qa_format's disjoint test split stays near 0 after 100 full fine-tuning steps).
So, as city_country does, dev and test are samples of the training facts: the score measures
that the task was learned, and later forgotten — what a continual-learning sequence needs.
Deterministic: the facts are read in sorted order and sampled with a seeded RNG.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from retain.io import atomic_write_text
from retain.paths import LAB_DATA_DIR

FACT = re.compile(r"^The currency of (.+) is the (.+)\.$")
SPLIT_SIZES = {"train": 160, "dev": 40, "test": 100}  # dev and test are drawn from train's countries


def currency_facts(pretrain: Path) -> list[tuple[str, str]]:
    """(country, currency) pairs stated in the pretraining corpus, once each, sorted."""
    facts = set()
    for line in pretrain.read_text(encoding="utf-8").splitlines():
        match = FACT.match(json.loads(line)["text"])
        if match:
            facts.add((match.group(1), match.group(2)))
    return sorted(facts)


def example(country: str, currency: str) -> dict:
    return {"prompt": f"Country: {country}\nCurrency:", "response": f" [{currency}]"}


def split(facts: list[tuple[str, str]], seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    train = rng.sample(facts, SPLIT_SIZES["train"])
    parts = {"train": train, "dev": rng.sample(train, SPLIT_SIZES["dev"]),
             "test": rng.sample(train, SPLIT_SIZES["test"])}
    return {name: [example(*fact) for fact in part] for name, part in parts.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=LAB_DATA_DIR / "tasks" / "country_currency")
    args = parser.parse_args(argv)
    facts = currency_facts(LAB_DATA_DIR / "pretrain.jsonl")
    for name, rows in split(facts, args.seed).items():
        path = atomic_write_text(args.out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows):5d}  {path}")


if __name__ == "__main__":
    main()
