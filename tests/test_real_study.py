"""tools/real_study.py on a small synthetic seeded sweep, and the target it judges (retain.sweep.target)."""

import json
from pathlib import Path

import pytest

from retain.sweep.target import judge_target
from tools.real_study import main

REPO = Path(__file__).resolve().parent.parent
N = 100  # items per task
SEEDS = (0, 1, 2)


def _generation(correct: set[int], capability: str, answer: str) -> dict:
    items = [{"id": i, "contains": float(i in correct), "exact_match": float(i in correct),
              "prediction": answer if i in correct else "no idea", "context": f"question {i}", "target": answer}
             for i in range(N)]
    return {"kind": "generation", "capability": capability, "primary_metric": "contains", "lower_is_better": False,
            "chance": 0.0, "n": N, "metrics": {"contains": len(correct) / N, "exact_match": len(correct) / N},
            "items": items}


def _results(task: set[int], chat: set[int], text_loglikelihood: float = -20.0) -> dict:
    # MMLU-like: the top choice is always A, right on half the items (letter bias)
    choice = [{"id": i, "acc": float(i % 2 == 0), "acc_norm": float(i % 2 == 0),
               "loglikelihoods": [-1.0, -2.0, -3.0, -4.0]} for i in range(N)]
    text = [{"id": i, "loglikelihood": text_loglikelihood, "words": 5, "bytes": 25, "tokens": 7} for i in range(N)]
    return {"model": "tiny", "dtype": "float32", "split": "test", "tasks": {
        "mmlu": {"kind": "multiple_choice", "capability": "choice facts", "primary_metric": "acc",
                   "lower_is_better": False, "chance": 0.25, "n": N, "metrics": {"acc": 0.5, "acc_norm": 0.5},
                   "items": choice},
        "text": {"kind": "perplexity", "capability": "plain text", "primary_metric": "word_perplexity",
                 "lower_is_better": True, "chance": None, "n": N, "metrics": {"word_perplexity": 54.6},
                 "items": text},
        "chat": _generation(chat, "chat answers", "Paris"),
        "task": _generation(task, "task: city -> country", "France")}}


def _seeded(strategy: str, seed: int) -> dict:
    """Per seed: the unprotected run learns 20 + seed task items and forgets 60 + seed of the 100 chat answers; the
    recipes learn the same items and forget fewer answers; "bad" also loses plain text (perplexity ×2.2)."""
    learned = set(range(20 + seed))
    lost = {"unprotected": 60 + seed, "good": 1, "bad": 30, "uneven": (0, 0, 9)[seed]}[strategy]
    return _results(task=learned, chat=set(range(lost, N)), text_loglikelihood=-24.0 if strategy == "bad" else -20.0)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    out = tmp_path / "sweep"
    (out / "results").mkdir(parents=True)
    (out / "base.json").write_text(json.dumps(_results(task=set(), chat=set(range(N)))))
    strategies = ("unprotected", "good", "bad", "uneven")
    for name in strategies:
        for seed in SEEDS:
            (out / "results" / f"{name}.seed{seed}.json").write_text(json.dumps(_seeded(name, seed)))
    (out / "start").write_text("1000\n")
    (out / "end").write_text("8200\n")
    path = tmp_path / "sweep.yaml"
    # the sweep's files are read from --sweep-dir (a copy of the study's), not from its `output`
    path.write_text(f"base: {REPO / 'configs/real/smollm2-city.yaml'}\ntask: task\nsuite: tiny\n"
                    f"output: {tmp_path / 'gone'}\n"
                    f"limit: {N}\nseeds: [0, 1, 2]\nstrategies:\n"
                    + "".join(f"  {n}: {{training.lr: {1e-4 / (k + 1)}}}\n" for k, n in enumerate(strategies)))
    return path


def test_the_target_holds_by_hand_shares_and_margins():
    base = _results(task=set(), chat=set(range(N)))
    reference = [_seeded("unprotected", s) for s in SEEDS]
    good = judge_target(base, reference, [_seeded("good", s) for s in SEEDS], "task")
    # the same task items learned: 100% of the gain; forgetting over the pooled 200 retained items
    assert good.gain.share == pytest.approx(1.0)
    assert good.gain.per_seed_share == pytest.approx((1.0, 1.0, 1.0))
    assert good.forgetting.per_seed_share == pytest.approx((1 / 60, 1 / 61, 1 / 62))
    assert good.forgetting.margin == pytest.approx((0.1 * 61 - 1) / 200)  # 0.1 · mean reference loss - recipe's
    assert good.verdict == "met", good.reason
    bad = judge_target(base, reference, [_seeded("bad", s) for s in SEEDS], "task")
    assert bad.forgetting.share == pytest.approx(30 / 61)
    assert bad.verdict == "not met" and "forgetting: 49% of the reference's forgetting" in bad.reason
    uneven = judge_target(base, reference, [_seeded("uneven", s) for s in SEEDS], "task")
    assert uneven.forgetting.met  # 3 answers lost on average, under a tenth of 61 (seed 2: 9, over 6.2)
    assert uneven.verdict == "not shown" and "seed 2 misses the forgetting line" in uneven.reason
    nothing = judge_target(base, [base] * 3, reference, "task")
    assert nothing.verdict == "cannot be judged"


def test_the_study_doc_has_the_target_per_recipe_and_every_seed(sweep: Path, tmp_path: Path):
    doc = main([str(sweep), "--out", str(tmp_path / "docs"), "--no-screenshot", "--sweep-dir", str(tmp_path / "sweep")]
               ).read_text()
    section = doc.split("## The target")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert "| **met** |" in rows["good"]
    assert "**not met**: forgetting: 49% of the reference's forgetting" in rows["bad"]
    assert rows["bad"].endswith("| plain text ×2 (severe) |") and rows["good"].endswith("| none |")
    assert "**not shown**: " in rows["uneven"] and "seed 2 misses the forgetting line" in rows["uneven"]
    # shares of the reference's gain and forgetting, then each seed's: 9 of seed 2's 62 answers is 15%
    assert "| 100%, 100%, 100% | 5% [" in rows["uneven"] and "| 0%, 0%, 15% |" in rows["uneven"]
    assert "Recipes that meet it: good." in doc
    # per capability: the mean over seeds, then each seed's change (unprotected loses 60, 61, 62 of 100 chat answers)
    chat = next(line for line in doc.splitlines() if line.startswith("| unprotected | chat answers |"))
    assert "-61.0 pts" in chat and "| -60.0, -61.0, -62.0 | supported (worse) |" in chat
    uneven = next(line for line in doc.splitlines() if line.startswith("| uneven | chat answers | 100 |"))
    assert "| +0.0, +0.0, -9.0 | not shown (" in uneven
    assert "install excluded): 2 h 00 min." in doc
    assert "this study ran one" in doc
    assert "### unprotected: answers that changed" in doc
    assert "**MMLU here measures letter bias, not knowledge**: base picks A on 100 of 100" in doc
