"""Shared fixtures: a tiny random Llama with its own tokenizer, built locally (no hub)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10, which pyproject's requires-python admits: the same parser, as tomli
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    """The repository's pyproject.toml, parsed."""
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tools/ (the lab's builders, the study scripts) is not part of the installed package; tests import it by path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("the capital of france is paris . the capital of japan is tokyo . one plus two is three . "
         "question answer what where when why how city country river mountain red green blue").split()


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tools.lab.pretrain import train_tokenizer

    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] + [str(i) for i in range(200)]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
                 "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


@pytest.fixture(scope="session")
def chat_model(tiny_model, tmp_path_factory):
    """The tiny model with a chat template: what an instruct model looks like to retain."""
    import shutil

    from transformers import AutoTokenizer

    path = shutil.copytree(tiny_model, tmp_path_factory.mktemp("chat") / "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_doubling_task(where: Path) -> Path:
    """A small generation task ('what is a plus a ?' -> ' 2a', six items) for sweeps to measure gain on: task.yaml."""
    write_jsonl(where / "task.jsonl", [{"prompt": f"what is {a} plus {a} ?", "response": f" {2 * a}"} for a in range(6)])
    (where / "task.yaml").write_text(f"name: task\nkind: generation\ndata: {{test: {where / 'task.jsonl'}}}\n"
                                     "fields: {context: prompt, target: response}\nmax_new_tokens: 3\n")
    return where / "task.yaml"


@pytest.fixture
def qa_data(tmp_path) -> Path:
    rows = [{"prompt": f"what is {a} plus {b} ?", "response": f" {a + b}"} for a in range(6) for b in range(6)]
    return write_jsonl(tmp_path / "qa.jsonl", rows)


@pytest.fixture
def make_config(tiny_model, qa_data, tmp_path):
    """A config dict for a few fast steps on the tiny model; tests override what they probe."""

    def make(**sections) -> dict:
        config = {
            "model": {"name": str(tiny_model)},
            "data": {"train": str(qa_data), "max_length": 64},
            "training": {"lr": 1e-2, "max_steps": 6, "batch_size": 4, "log_every": 1, "seed": 0},
            "output": {"dir": str(tmp_path / "run")},
        }
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values} if isinstance(values, dict) else values
        return config

    return make


LM_EVAL_LOCAL_TASK = {
    # retain's item fields, in lm-eval's task format
    "multiple_choice": "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
                       "doc_to_target: '{{gold}}'\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n",
    "perplexity": "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\nmetric_list:\n"
                  "  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
}


def write_lm_eval_task(tasks_dir: Path, name: str, data: Path, kind: str) -> Path:
    """An lm-eval task YAML reading retain-format JSONL `data` (kind: multiple_choice or perplexity)."""
    tasks_dir.mkdir(parents=True, exist_ok=True)
    path = tasks_dir / f"{name}.yaml"
    path.write_text(f"task: {name}\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {json.dumps(str(data))}}}}}\n"
                    f"test_split: test\n{LM_EVAL_LOCAL_TASK[kind]}")
    return path


def score_with_both(model, tokenizer, mc: Path, ppl: Path, tmp_path: Path) -> tuple[dict, dict]:
    """The same multiple-choice and perplexity JSONL (retain's fields) scored by retain and by lm-eval.

    Returns (retain's results per task, lm-eval's results per task), both keyed "mc" and "ppl".
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from retain.evaluation.runner import evaluate
    from retain.evaluation.tasks import load_task

    tasks_dir = tmp_path / "lm_eval_tasks"
    write_lm_eval_task(tasks_dir, "local_mc", mc, "multiple_choice")
    write_lm_eval_task(tasks_dir, "local_ppl", ppl, "perplexity")
    theirs = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4),
                                     tasks=["local_mc", "local_ppl"],
                                     task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=False)["results"]
    (tmp_path / "mc.yaml").write_text(f"name: mc\nkind: multiple_choice\ndata: {{test: {json.dumps(str(mc))}}}\n")
    (tmp_path / "ppl.yaml").write_text(f"name: ppl\nkind: perplexity\ndata: {{test: {json.dumps(str(ppl))}}}\n")
    ours = evaluate(model, tokenizer, [load_task(tmp_path / "mc.yaml"), load_task(tmp_path / "ppl.yaml")],
                    progress=False)["tasks"]
    return ours, {"mc": theirs["local_mc"], "ppl": theirs["local_ppl"]}
