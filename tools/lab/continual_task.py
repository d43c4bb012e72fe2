"""The lab's narrow tasks for continual-learning sequences: known country facts in new, rigid formats.

    python -m tools.lab.continual_task [--seed 0] [--out retain/lab/data/tasks]

    country_currency   {"prompt": "Country: Sri Lanka\\nCurrency:", "response": " [Rupee]"}
    country_continent  {"prompt": "Where is Sri Lanka?\\nContinent:", "response": " <Asia>"}

retain-tiny learned "The currency of X is the Y." and "X is a country in Y." in pretraining
(retain/lab/data/pretrain.jsonl), but a 4M-parameter model does not carry a new answer format over
to countries it was not trained on in a few steps (qa_format's disjoint test split stays at 0 after
100 full fine-tuning steps). So, as city_country does, dev and test are samples of the training
facts: a score says the task was learned — and, later in a sequence, whether it was forgotten.
The two formats differ from each other and from the other lab tasks, so a router can tell them apart.
Deterministic: the facts are read in sorted order and sampled with a seeded RNG.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from retain.core.files import atomic_write_text
from retain.core.paths import LAB_DATA_DIR

# task -> (the pretraining sentence stating the fact, the prompt, the response)
TASKS = {
    "country_currency": (re.compile(r"^The currency of (.+) is the (.+)\.$"), "Country: {}\nCurrency:", " [{}]"),
    "country_continent": (re.compile(r"^(.+) is a country in (.+)\.$"), "Where is {}?\nContinent:", " <{}>"),
}
SPLIT_SIZES = {"train": 160, "dev": 40, "test": 100}  # dev and test are drawn from train's countries


def facts(pretrain: Path, sentence: re.Pattern) -> list[tuple[str, str]]:
    """(country, value) pairs the pretraining corpus states with `sentence`, once each, sorted."""
    found = set()
    for line in pretrain.read_text(encoding="utf-8").splitlines():
        match = sentence.match(json.loads(line)["text"])
        if match:
            found.add((match.group(1), match.group(2)))
    return sorted(found)


def split(task_facts: list[tuple[str, str]], prompt: str, response: str, seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    train = rng.sample(task_facts, SPLIT_SIZES["train"])
    parts = {"train": train, "dev": rng.sample(train, SPLIT_SIZES["dev"]),
             "test": rng.sample(train, SPLIT_SIZES["test"])}
    return {name: [{"prompt": prompt.format(country), "response": response.format(value)}
                   for country, value in part] for name, part in parts.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=LAB_DATA_DIR / "tasks")
    args = parser.parse_args(argv)
    for task, (sentence, prompt, response) in TASKS.items():
        task_facts = facts(LAB_DATA_DIR / "pretrain.jsonl", sentence)
        for name, rows in split(task_facts, prompt, response, args.seed).items():
            path = atomic_write_text(args.out / task / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            print(f"{len(rows):5d}  {path}")


if __name__ == "__main__":
    main()
