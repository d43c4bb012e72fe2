"""Bad inputs and faults, as a user meets them: the real CLI, its exit status, its message, and the disk.

Each row of CASES builds its inputs in a fresh workspace and names the command line, the exit
status (2: a user error, explained; 1: a bug, with a traceback), a fragment of the message, and
what may appear on disk. Nothing that existed before the command may change (the workspace's
inputs, an earlier run in the output directory, the model directories), and a failure creates
nothing. Most rows call `retain.cli.main` in this process; the rows marked `subprocess` run
`python -m retain` as a user would. A row's `fault` stands in for what the machine refuses (a
full disk, no GPU), patched into this process.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from retain import cli
from conftest import write_jsonl

QA = [{"prompt": f"what is {a} plus {b} ?", "response": f" {a + b}"} for a in range(3) for b in range(3)]
NO_SYSTEM_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                      "{{ raise_exception('System role not supported') }}{% endif %}"
                      "{{ '<|' + m['role'] + '|>\\n' + m['content'] + '\\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


class Workspace:
    """A fresh directory with the inputs of one row; `model` is the shared tiny model (outside it)."""

    def __init__(self, root: Path, model: Path):
        self.root, self.model = root, model
        self.data = write_jsonl(root / "qa.jsonl", QA)
        # MMLU's data is a separate wheel: every row's RETAIN_MMLU_FILE is this one question
        self.mmlu = write_jsonl(root / "mmlu.jsonl", [{"question": "q", "answer_a": "a", "answer_b": "b",
                                                        "answer_c": "c", "answer_d": "d", "correct_answer": "A",
                                                        "topic": "astronomy"}])
        (root / "out").mkdir()
        (root / "out" / "notes.txt").write_text("a user's file in the output directory\n")

    def path(self, rel: str) -> str:
        return str(self.root / rel)

    def write(self, rel: str, content: str | bytes) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def jsonl(self, rel: str, rows: list) -> str:
        return str(write_jsonl(self.root / rel, rows))

    def config_dict(self, **sections) -> dict:
        config = {"model": {"name": str(self.model)}, "data": {"train": str(self.data), "max_length": 64},
                  "training": {"lr": 1e-3, "max_steps": 1, "batch_size": 4, "log_every": 1},
                  "output": {"dir": self.path("out")}}
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values} if isinstance(values, dict) else values
        return config

    def config(self, rel: str = "c.yaml", **sections) -> str:
        return self.write(rel, yaml.safe_dump(self.config_dict(**sections), sort_keys=False))

    def train(self, **sections) -> list[str]:
        return ["train", self.config(**sections)]

    def model_copy(self, rel: str = "model") -> Path:
        return Path(shutil.copytree(self.model, self.root / rel))

    def train_model(self, model: Path | str, **sections) -> list[str]:
        return self.train(model={"name": str(model)}, **sections)

    def task(self, rows: list, kind: str = "multiple_choice", extra: str = "") -> str:
        self.jsonl("task/d.jsonl", rows)
        return self.write("task/t.yaml", f"name: t\nkind: {kind}\ndata: {{test: d.jsonl}}\n{extra}")

    def eval(self, suite: str, model: str | None = None, *extra: str) -> list[str]:
        return ["eval", model or str(self.model), "--suite", suite, "--limit", "2", "--out", self.path("r.json"),
                *extra]

    def results(self, rel: str, split: str = "test", limit: int | None = None, tasks: tuple = ("facts",),
                n: int = 20, **edits) -> str:
        data = results(split, limit, tasks, n)
        data.update(edits)
        return self.write(rel, json.dumps(data))


def results(split="test", limit=None, tasks=("facts",), n=20) -> dict:
    """A results file as `retain eval` writes it: generation tasks scored on n items each."""
    scored = {}
    for name in tasks:
        items = [{"id": i, "exact_match": float(i % 2), "contains": float(i % 2), "prediction": "x"} for i in range(n)]
        scored[name] = {"kind": "generation", "capability": name, "primary_metric": "exact_match",
                        "lower_is_better": False, "chance": 0.0, "n": n, "seconds": 0.1,
                        "metrics": {"exact_match": 0.5, "contains": 0.5}, "items": items}
    return {"model": "m", "suite": ",".join(tasks), "limit": limit, "dtype": "float32", "split": split,
            "tasks": scored}


def mutate_json(path: str, change: Callable[[dict], None]) -> str:
    data = json.loads(Path(path).read_text())
    change(data)
    Path(path).write_text(json.dumps(data))
    return path


# --- rows whose setup needs more than one line ---------------------------------------------------------

def broken_model(kind: str) -> Callable[[Workspace], list[str]]:
    def setup(ws: Workspace) -> list[str]:
        model = ws.model_copy()
        weights = model / "model.safetensors"
        if kind == "truncated":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        elif kind == "garbage":
            weights.write_bytes(b"<html>502 Bad Gateway</html>" * 40)
        elif kind == "no_weights":
            weights.unlink()
        elif kind == "bin_only":
            weights.rename(model / "pytorch_model.bin")
        elif kind == "config_not_json":
            (model / "config.json").write_text('{"model_type": "llama", ')
        elif kind == "no_tokenizer":
            for name in ("tokenizer.json", "tokenizer_config.json"):
                (model / name).unlink()
        elif kind == "no_pad_no_eos":
            mutate_json(str(model / "tokenizer_config.json"),
                        lambda c: [c.pop(k, None) for k in ("eos_token", "bos_token", "pad_token")])
        elif kind == "adapter":
            for p in list(model.iterdir()):
                p.unlink()
            (model / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(ws.model)}))
        return ws.train_model(model)

    return setup


def chat_template_refusing_system(ws: Workspace) -> list[str]:
    model = ws.model_copy()
    (model / "chat_template.jinja").write_text(NO_SYSTEM_TEMPLATE)
    data = ws.jsonl("chat.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "hello"}]},
                                   {"messages": [{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "hello"}]}])
    return ws.train(model={"name": str(model)}, data={"train": data, "format": "chat"})


def chat_without_template(ws: Workspace) -> list[str]:
    model = ws.model_copy()
    (model / "chat_template.jinja").unlink()
    return ws.train(model={"name": str(model)}, data={"chat": True})


def task_chat_refusing_system(ws: Workspace) -> list[str]:
    model = ws.model_copy()
    (model / "chat_template.jinja").write_text(NO_SYSTEM_TEMPLATE)
    task = ws.task([{"context": "2+2=", "target": "4"}], "generation", "chat: true\nsystem: Be brief.\n")
    return ws.eval(task, str(model))


def lm_eval_sampling(ws: Workspace) -> list[str]:
    """An lm-eval task YAML that samples: retain's scorer decodes greedily only."""
    data = ws.jsonl("task/d.jsonl", [{"q": "2+2=", "a": "4"}])
    return ws.eval(ws.write("task/lm.yaml", f"task: sampled\ndataset_path: json\n"
                            f"dataset_kwargs: {{data_files: {{test: {json.dumps(str(data))}}}}}\n"
                            "test_split: test\noutput_type: generate_until\ndoc_to_text: '{{q}}'\n"
                            "doc_to_target: '{{a}}'\ngeneration_kwargs: {until: ['\\n'], do_sample: true}\n"))


def adapter_dir(ws: Workspace, config: str | None, base: str | None = None) -> list[str]:
    adapter = ws.root / "adapter"
    adapter.mkdir()
    if config is not None:
        (adapter / "adapter_config.json").write_text(config)
    else:
        (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    return ws.eval("english", str(adapter))


def empty_model_dir(ws: Workspace) -> list[str]:
    (ws.root / "empty").mkdir()
    return ws.train_model(ws.root / "empty")


def task_data_not_utf8(ws: Workspace) -> list[str]:
    ws.write("task/d.jsonl", b'{"text": "a"}\n{"text": "\xff"}\n')
    return ws.eval(ws.write("task/t.yaml", "name: t\nkind: perplexity\ndata: {test: d.jsonl}\n"))


def parquet(ws: Workspace, rel: str, rows: list[dict]) -> str:
    import datasets

    path = ws.root / rel
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


def dataset_info(ws: Workspace, entry: str) -> str:
    """A LLaMA-Factory data folder with one entry, `qa`, and data.train naming the entry `entry`."""
    ws.write("lf/qa.json", json.dumps(QA, indent=2))
    info = ws.write("lf/dataset_info.json", json.dumps({"qa": {"file_name": "qa.json",
                                                              "columns": {"prompt": "prompt", "response": "response"}}}))
    return f"{info}#{entry}"


def existing_run(ws: Workspace) -> list[str]:
    ws.write("out/metrics.jsonl", '{"step": 1, "loss": 2.0}\n')
    ws.write("out/final/model.safetensors", b"weights of an earlier run")
    return ws.train()


def gguf(ws: Workspace, content: bytes | None) -> list[str]:
    folder = ws.root / "gguf"
    folder.mkdir()
    if content is not None:
        (folder / "m.gguf").write_bytes(content)
    return ws.train(model={"name": str(folder), "gguf_file": "m.gguf"})


def suite_with_duplicate_key(ws: Workspace) -> list[str]:
    ws.task([{"context": "q", "choices": ["a", "b"], "gold": 0}])
    return ws.eval(ws.write("suite.yaml", "name: s\ntasks: [task/t.yaml]\ntasks: [task/t.yaml]\n"))


def report(ws: Workspace, *paths: str, extra: tuple = ()) -> list[str]:
    return ["report", *paths, "--out", ws.path("report"), *extra]


def report_pair(base: dict, other: dict) -> Callable[[Workspace], list[str]]:
    def setup(ws: Workspace) -> list[str]:
        return report(ws, ws.results("base.json", **base), ws.results("tuned.json", **other))

    return setup


def sweep(ws: Workspace, text: str) -> list[str]:
    return ["sweep", ws.write("sweep.yaml", text)]


def sweep_text(ws: Workspace, base: str, strategies: str = "plain: {}") -> str:
    return (f"base: {base}\ntask: capital_recall\nsuite: english\noutput: {ws.path('sweep')}\nlimit: 2\n"
            f"strategies:\n  {strategies}\n")


def merge(ws: Workspace, *models: str, method: str = "task_arithmetic") -> list[str]:
    return ["merge", *models, "--method", method, "--out", ws.path("merged")]


def needs_remote_code(ws: Workspace, part: str = "model") -> str:
    """A copy of the model whose config.json (or tokenizer_config.json) maps it to Python files of its own, as
    many hub repos do."""
    model = ws.model_copy()
    if part == "model":
        mutate_json(str(model / "config.json"), lambda c: c.update(model_type="my_llama", auto_map={
            "AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyForCausalLM"}))
    else:
        mutate_json(str(model / "tokenizer_config.json"), lambda c: c.update(
            tokenizer_class="MyTokenizer", auto_map={"AutoTokenizer": ["tokenization_my.MyTokenizer", None]}))
    return str(model)


# --- faults: what the machine refuses, as the libraries that meet it say so -----------------------------------
# Measured on a full tmpfs (torch 2.13, safetensors 0.8): torch's zip writer and safetensors' writer raise these,
# not an OSError with ENOSPC.
TORCH_DISK_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 5312 vs 5204"
SAFETENSORS_DISK_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def torch_disk_full_in(part: str) -> Callable[[pytest.MonkeyPatch], None]:
    """torch.save writes half a file, then fails as on a full disk, for paths containing `part`."""
    def fault(monkeypatch: pytest.MonkeyPatch) -> None:
        import torch

        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if part in str(f):
                Path(f).write_bytes(b"half a file")
                raise RuntimeError(TORCH_DISK_FULL)
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    return fault


def safetensors_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """save_pretrained's safetensors writer writes half a file, then fails as on a full disk."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def save_file(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise SafetensorError(SAFETENSORS_DISK_FULL)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)


def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# a checkpoint at step 1 and its run's files, nothing else: no temp folder, no final/
STEP_1_ONLY = ("out/config.yaml", "out/metrics.jsonl", "out/run.lock", "out/tensorboard*", "out/checkpoints",
               "out/checkpoints/step-1", "out/checkpoints/step-1/*")


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Workspace], list[str]]
    code: int
    fragment: str
    creates: tuple[str, ...] = ()  # globs (relative to the workspace) of what may appear; nothing else may
    subprocess: bool = False  # run `python -m retain` instead of retain.cli.main
    fault: Callable[[pytest.MonkeyPatch], None] | None = None  # patched in before the command runs (in-process)


MC = "multiple_choice"
CASES = [
    # --- run configs ---------------------------------------------------------------------------------
    Case("config-missing", lambda ws: ["train", ws.path("nope.yaml")], 2, "nope.yaml: config file not found"),
    Case("config-is-a-directory", lambda ws: ["train", ws.path("out")], 2, "out: is a directory, not a config file"),
    Case("config-not-utf8", lambda ws: ["train", ws.write("c.yaml", b"model:\n  name: m\n# caf\xe9\n")], 2,
         "c.yaml:3: not UTF-8 text (byte 0xe9 at column 6)", subprocess=True),
    Case("config-yaml-syntax", lambda ws: ["train", ws.write("c.yaml", "model:\n  name: [m\ndata: {}\n")], 2,
         "c.yaml:3: not valid YAML"),
    Case("config-duplicate-section", lambda ws: ["train", ws.write(
        "c.yaml", "training:\n  lr: 1.0\nmodel: {name: m}\ntraining:\n  lr: 2.0\n")], 2,
         "c.yaml:4: key 'training' given twice (first on line 1)"),
    Case("config-duplicate-key", lambda ws: ["train", ws.write(
        "c.yaml", Path(ws.config()).read_text().replace("  lr: 0.001\n", "  lr: 0.001\n  lr: 0.1\n"))], 2,
         "key 'lr' given twice"),
    Case("config-not-a-mapping", lambda ws: ["train", ws.write("c.yaml", "- model\n- data\n")], 2,
         "expected a mapping of sections"),
    Case("config-unknown-key", lambda ws: ws.train(training={"lrr": 1}), 2, "training.lrr: unknown key"),
    Case("config-wrong-type", lambda ws: ws.train(training={"batch_size": 2.5}), 2,
         "training.batch_size: expected an integer"),
    Case("config-bad-value", lambda ws: ws.train(training={"lr": 0}), 2, "training.lr: must be > 0"),
    Case("config-required-missing", lambda ws: ["train", ws.write(
        "c.yaml", yaml.safe_dump({k: v for k, v in ws.config_dict().items() if k != "output"}))], 2,
         "output: required key is missing"),
    Case("override-without-equals", lambda ws: ws.train() + ["training.lr"], 2, "expected key=value"),
    Case("override-unknown-key", lambda ws: ws.train() + ["training.nope=1"], 2, "training.nope: unknown key"),
    Case("override-duplicate-key", lambda ws: ws.train() + ["mitigations.lora={r: 1, r: 2}"], 2,
         "key 'r' given twice"),
    Case("override-bad-yaml", lambda ws: ws.train() + ["training.lr=[1"], 2, "not valid YAML"),
    Case("train-data-missing", lambda ws: ws.train(data={"train": ws.path("none.jsonl")}), 2,
         "data.train: file not found"),
    Case("output-dir-is-a-file", lambda ws: ws.train(output={"dir": ws.write("taken", "x")}), 2,
         "is a file, not a directory"),
    Case("output-dir-under-a-file", lambda ws: ws.train(output={"dir": ws.write("taken", "x") + "/run"}), 2,
         "taken is a file, not a directory"),
    Case("output-dir-holds-a-run", existing_run, 2, "already holds a run"),
    Case("unknown-mitigation", lambda ws: ws.train(mitigations={"lorra": {}}), 2,
         "mitigations.lorra: unknown mitigation"),
    Case("two-peft-methods", lambda ws: ws.train(mitigations={"lora": {}, "ia3": {}}), 2,
         "only one PEFT method"),
    Case("replay-without-file", lambda ws: ws.train(mitigations={"replay": {}}), 2,
         "mitigations.replay.file: required for model"),
    Case("ewc-without-file", lambda ws: ws.train(mitigations={"ewc": {"weight": 0.1}}), 2,
         "mitigations.ewc.file: required for model"),
    Case("si-without-file", lambda ws: ws.train(mitigations={"si": {}}), 2, "mitigations.si.file: required"),
    Case("retention-without-suite", lambda ws: ws.train(mitigations={"retention": {"every": 1}}), 2,
         "mitigations.retention.suite: required for model"),
    Case("retention-confidence-out-of-range",
         lambda ws: ws.train(mitigations={"retention": {"suite": "lab", "confidence": 1.5}}), 2,
         "mitigations.retention.confidence: must be in [0.5, 1) or null, got 1.5"),
    Case("replay-openings-missing", lambda ws: ws.train(mitigations={"replay": {
        "source": "self", "openings": ws.path("openings.txt")}}), 2, "mitigations.replay.openings: file not found"),
    Case("replay-openings-without-self", lambda ws: ws.train(mitigations={"replay": {
        "file": str(ws.data), "openings": ws.write("openings.txt", "The river\n")}}), 2,
         "mitigations.replay.openings: only for source: self"),
    Case("replay-openings-empty", lambda ws: ws.train(mitigations={"replay": {
        "source": "self", "openings": ws.write("openings.txt", "\n  \n"), "cache_dir": ws.path("cache")}}), 2,
         "openings.txt: no opening in the file"),
    Case("replay-openings-bad-json", lambda ws: ws.train(mitigations={"replay": {
        "source": "self", "openings": ws.write("openings.txt", 'The river\n{"text": "a\n'),
        "cache_dir": ws.path("cache")}}), 2, "openings.txt:2: not valid JSON"),
    Case("replay-openings-not-utf8", lambda ws: ws.train(mitigations={"replay": {
        "source": "self", "openings": ws.write("openings.txt", b"caf\xe9\n"), "cache_dir": ws.path("cache")}}), 2,
         "openings.txt: not UTF-8 text"),
    Case("replay-file-missing", lambda ws: ws.train(mitigations={"replay": {"file": ws.path("g.jsonl")}}), 2,
         "mitigations.replay.file: file not found"),
    Case("debug-shows-the-traceback", lambda ws: ["--debug"] + ws.train(training={"lrr": 1}), 2,
         "Traceback (most recent call last)"),
    # --- models and tokenizers -----------------------------------------------------------------------
    Case("hub-id-offline", lambda ws: ws.train_model("retain-test-org/no-such-model"), 2,
         "not in the Hugging Face cache (HF_HUB_OFFLINE is set"),
    Case("relative-model-path-missing", lambda ws: ws.train_model("./models/nope"), 2,
         "model ./models/nope: no such directory (relative to the working directory"),
    Case("nested-model-path-missing", lambda ws: ws.train_model("models/run/final"), 2, "no such directory"),
    Case("path-or-hub-id-missing", lambda ws: ws.train_model("models/nope"), 2,
         "model models/nope: not a local directory, and not in the Hugging Face cache"),
    Case("model-dir-not-a-model", lambda ws: ws.train_model(Path(ws.write("photos/cat.jpg", b"\xff\xd8")).parent), 2,
         "photos: no config.json (found: cat.jpg) — not a model directory"),
    Case("model-dir-really-empty", empty_model_dir, 2, "empty: empty directory, not a model"),
    Case("safetensors-truncated", broken_model("truncated"), 2,
         "model.safetensors: not a readable safetensors file (cut short"),
    Case("safetensors-garbage", broken_model("garbage"), 2, "model.safetensors: not a readable safetensors file"),
    Case("no-weights", broken_model("no_weights"), 2, "model: no model.safetensors"),
    Case("pickle-weights-only", broken_model("bin_only"), 2, "weights only in pytorch_model.bin (a pickle"),
    Case("config-json-not-json", broken_model("config_not_json"), 2, "config.json: not valid JSON"),
    Case("model-path-is-a-file", lambda ws: ws.train_model(ws.model / "config.json"), 2,
         "config.json: a file, not a model directory"),
    Case("no-tokenizer", broken_model("no_tokenizer"), 2, "model: no tokenizer files"),
    Case("tokenizer-without-pad-or-eos", broken_model("no_pad_no_eos"), 2,
         "model: the tokenizer has neither a pad token nor an EOS token"),
    Case("train-from-an-adapter", broken_model("adapter"), 2, "a PEFT adapter, not a full model"),
    Case("gguf-file-missing", lambda ws: gguf(ws, None), 2, "m.gguf: not found"),
    Case("gguf-file-not-gguf", lambda ws: gguf(ws, b"<html>not a model</html>"), 2, "m.gguf: not a GGUF file"),
    # --- training data -------------------------------------------------------------------------------
    Case("data-not-utf8", lambda ws: ws.train(data={"train": ws.write(
        "d.jsonl", b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n')}), 2,
         "d.jsonl:2: not UTF-8 text (byte 0xe9"),
    Case("data-line-of-10-mb", lambda ws: ws.train(data={"train": ws.write(
        "d.jsonl", '{"prompt": "' + "a" * 10_000_000 + '", "response": "b"}\n')}), 2,
         "d.jsonl:1: line longer than 1,048,576 bytes"),
    Case("data-bad-json", lambda ws: ws.train(data={"train": ws.jsonl("d.jsonl", [QA[0], "{not json"])}), 2,
         "d.jsonl:2: not valid JSON"),
    Case("data-array-line", lambda ws: ws.train(data={"train": ws.jsonl("d.jsonl", [[QA[0]]])}), 2,
         "d.jsonl:1: expected a JSON object, got list"),
    Case("data-empty", lambda ws: ws.train(data={"train": ws.write("d.jsonl", "\n\n")}), 2, "d.jsonl: no records"),
    Case("data-missing-field", lambda ws: ws.train(data={"train": ws.jsonl("d.jsonl", [{"prompt": "a"}])}), 2,
         "d.jsonl:1: field 'response': missing"),
    Case("data-field-not-string", lambda ws: ws.train(data={"train": ws.jsonl(
        "d.jsonl", [{"prompt": 3, "response": "b"}])}), 2, "field 'prompt': expected a string"),
    Case("data-empty-response", lambda ws: ws.train(data={"train": ws.jsonl(
        "d.jsonl", [{"prompt": "a", "response": ""}])}), 2, "field 'response': empty"),
    Case("data-unknown-shape", lambda ws: ws.train(data={"train": ws.jsonl("d.jsonl", [{"question": "a"}])}), 2,
         "d.jsonl:1: no known fields"),
    Case("chat-bad-role", lambda ws: ws.train(data={"train": ws.jsonl("d.jsonl", [{"messages": [
        {"role": "human", "content": "a"}]}])}), 2, "field 'messages[0]'"),
    Case("chat-no-assistant", lambda ws: ws.train(data={"train": ws.jsonl("d.jsonl", [{"messages": [
        {"role": "user", "content": "a"}]}])}), 2, "no assistant turn"),
    Case("chat-template-rejects-system", chat_template_refusing_system, 2,
         "chat.jsonl:2: the tokenizer's chat template rejected this conversation (system/user/assistant)"),
    Case("data-chat-without-template", chat_without_template, 2, "data.chat is set, but the tokenizer has no chat"),
    Case("data-parquet-missing-field", lambda ws: ws.train(data={"train": parquet(
        ws, "d.parquet", [QA[0], {"prompt": "a", "response": None}])}), 2, "d.parquet:row 2: field 'response': missing"),
    Case("data-parquet-not-parquet", lambda ws: ws.train(data={"train": ws.write("d.parquet", "prompt,response\n")}), 2,
         "d.parquet: could not be read as parquet"),
    Case("data-json-array-missing-field", lambda ws: ws.train(data={"train": ws.write(
        "d.json", '[\n  {"prompt": "a", "response": "b"},\n  {"prompt": "a"}\n]\n')}), 2,
         "d.json:3: field 'response': missing"),
    Case("sharegpt-unknown-role", lambda ws: ws.train(data={"train": ws.jsonl("d.jsonl", [{"conversations": [
        {"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]}])}), 2,
         "d.jsonl:1: field 'conversations[1].from': unknown role 'bot' (known: human, user, gpt, assistant, system)"),
    Case("dataset-info-missing-entry", lambda ws: ws.train(data={"train": dataset_info(ws, "q_a")}), 2,
         "dataset_info.json#q_a: no dataset named 'q_a' in dataset_info.json (it has: qa)"),
    Case("hub-dataset-offline", lambda ws: ws.train(data={"train": "hub:retain-test-org/no-such-data:train"}), 2,
         "hub:retain-test-org/no-such-data:train: not in the Hugging Face datasets cache, and downloads are off"),
    Case("hub-dataset-without-split", lambda ws: ws.train(data={"train": "hub:retain-test-org/data"}), 2,
         "data.train: hub:retain-test-org/data: expected hub:ORG/NAME:SPLIT"),
    Case("python-rows-from-the-cli", lambda ws: ws.train(data={"train": "python:0123abcd"}), 2,
         "data.train: python:0123abcd: rows that were passed from Python"),
    Case("preference-pairs-for-sft", lambda ws: ws.train(data={"train": ws.jsonl("p.jsonl", [
        {"prompt": "a", "chosen": "b", "rejected": "c"}])}), 2, "p.jsonl:1: a preference pair (prompt, chosen, rejected)"),
    Case("chat-template-file-missing", lambda ws: ws.train(data={"chat_template": ws.path("t.jinja")}), 2,
         "data.chat_template: file not found"),
    Case("chat-template-file-syntax", lambda ws: ws.train(data={"chat": True, "chat_template": ws.write(
        "t.jinja", "{% for m in messages %}\n{{ m['content'] }\n")}), 2, "t.jinja:2: not a valid Jinja template"),
    Case("everything-truncated", lambda ws: ws.train(data={"max_length": 2}), 2, "no example has a target token"),
    Case("dev-bad-line", lambda ws: ws.train(data={"dev": ws.jsonl("dev.jsonl", ["{"])}), 2,
         "dev.jsonl:1: not valid JSON"),
    Case("replay-data-bad-line", lambda ws: ws.train(mitigations={"replay": {"file": ws.jsonl(
        "general.jsonl", [{"text": "a"}, "[1,"])}}), 2, "general.jsonl:2: not valid JSON"),
    # --- evaluation: suites, tasks, items --------------------------------------------------------------
    Case("suite-unknown", lambda ws: ws.eval("no_such_suite"), 2, "'no_such_suite': not a file and not bundled"),
    Case("task-yaml-syntax", lambda ws: ws.eval(ws.write("t.yaml", "name: t\nkind: generation\ndata: {test: [\n")), 2,
         "t.yaml:4: not valid YAML"),
    Case("task-yaml-duplicate-key", lambda ws: ws.eval(ws.write(
        "t.yaml", "name: t\nkind: generation\nkind: perplexity\ndata: {test: d.jsonl}\n")), 2,
         "t.yaml:3: key 'kind' given twice (first on line 2)"),
    Case("task-yaml-not-utf8", lambda ws: ws.eval(ws.write("t.yaml", b"name: t\ndescription: caf\xe9\n")), 2,
         "t.yaml:2: not UTF-8 text"),
    Case("suite-yaml-duplicate-key", suite_with_duplicate_key, 2, "suite.yaml:3: key 'tasks' given twice"),
    Case("suite-tasks-not-a-list", lambda ws: ws.eval(ws.write("suite.yaml", "name: s\ntasks: capital_recall\n")), 2,
         "tasks: expected a list"),
    Case("task-unknown-kind", lambda ws: ws.eval(ws.task([{"text": "a"}], "essay")), 2,
         "kind: 'essay' is not one of"),
    Case("task-data-missing", lambda ws: ws.eval(ws.write("t.yaml", "name: t\nkind: perplexity\n"
                                                           "data: {test: none.jsonl}\n")), 2,
         "test data file not found"),
    Case("gold-out-of-range", lambda ws: ws.eval(ws.task([{"context": "q", "choices": ["a", "b", "c"], "gold": 3}])),
         2, "d.jsonl:1: field 'gold': expected an index in 0..2 or the text of a choice, got 3"),
    Case("gold-negative", lambda ws: ws.eval(ws.task([{"context": "q", "choices": ["a", "b"], "gold": -1}])), 2,
         "got -1"),
    Case("gold-bool", lambda ws: ws.eval(ws.task([{"context": "q", "choices": ["a", "b"], "gold": True}])), 2,
         "got True"),
    Case("gold-text-not-a-choice", lambda ws: ws.eval(ws.task([{"context": "q", "choices": ["a", "b"],
                                                              "gold": "z"}])), 2, "got 'z'"),
    Case("choices-as-a-string", lambda ws: ws.eval(ws.task([{"context": "q", "choices": "abc", "gold": 1}])), 2,
         "field 'choices': expected a non-empty list of strings, got 'abc'"),
    Case("task-item-missing-field", lambda ws: ws.eval(ws.task([{"context": "q"}], "generation")), 2,
         "d.jsonl:1: field 'target': missing"),
    Case("task-data-not-utf8", task_data_not_utf8, 2, "d.jsonl:2: not UTF-8 text (byte 0xff"),
    Case("task-chat-template-rejects-system", task_chat_refusing_system, 2,
         "task t: the model's chat template rejected the prompt"),
    Case("task-metric-of-another-kind", lambda ws: ws.eval(ws.task([{"context": "q", "target": "a"}], "generation",
                                                                    "metric: acc\n")), 2,
         "metric: 'acc' is not a generation metric"),
    Case("task-regex-metric-without-regex", lambda ws: ws.eval(ws.task(
        [{"context": "q", "target": "a"}], "generation", "metric: regex_match\n")), 2,
         "answer_regex: required by metric: regex_match"),
    Case("task-answer-regex-invalid", lambda ws: ws.eval(ws.task(
        [{"context": "q", "target": "a"}], "generation", "answer_regex: '(unclosed'\n")), 2,
         "answer_regex: not a valid regular expression"),
    Case("task-system-without-chat", lambda ws: ws.eval(ws.task(
        [{"context": "q", "target": "a"}], "generation", "system: Be brief.\n")), 2, "system: needs chat: true"),
    Case("task-data-file-missing", lambda ws: ws.eval(ws.write(
        "task/t.yaml", "name: t\nkind: generation\ndata: {test: gone.jsonl}\n")), 2, "test data file not found"),
    Case("mmlu-unknown-subject", lambda ws: ws.eval("mmlu:geology"), 2, "unknown subject 'geology'"),
    Case("mmlu-shots-not-a-number", lambda ws: ws.eval("mmlu@five"), 2, "K a number of shots"),
    Case("mmlu-dev-split", lambda ws: ws.eval("mmlu") + ["--split", "dev"], 2, "MMLU has only a test split"),
    Case("lm-eval-unknown-task", lambda ws: ws.eval("lm-eval:arc_eazy"), 2, "not a task, group or tag"),
    Case("lm-eval-yaml-sampling", lm_eval_sampling, 2, "generation_kwargs.do_sample"),
    Case("lm-eval-yaml-data-missing", lambda ws: ws.eval(ws.write(
        "task/lm.yaml", "task: nodata\ndataset_path: json\ndataset_kwargs: {data_files: {test: gone.jsonl}}\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n")), 2,
         "lm-eval could not build the task"),
    Case("eval-limit-zero", lambda ws: ws.eval("english") + ["--limit", "0"], 2, "--limit: must be >= 1"),
    Case("eval-out-is-a-directory", lambda ws: ["eval", str(ws.model), "--suite", "english", "--out",
                                                ws.path("out")], 2, "a directory — give the results file's path"),
    Case("eval-model-missing", lambda ws: ws.eval("english", "./nope"), 2, "model ./nope: no such directory"),
    Case("eval-adapter-config-corrupt", lambda ws: adapter_dir(ws, "{"), 2,
         "adapter_config.json: not a valid adapter config"),
    Case("eval-adapter-base-missing", lambda ws: adapter_dir(ws, None, "/nonexistent/base"), 2,
         "the base model its adapter_config.json names cannot be loaded: model /nonexistent/base: no such directory"),
    # --- report ------------------------------------------------------------------------------------------
    Case("results-missing", lambda ws: report(ws, ws.path("a.json"), ws.results("b.json")), 2,
         "a.json: results file not found"),
    Case("results-garbage", lambda ws: report(ws, ws.write("a.json", "<html>"), ws.results("b.json")), 2,
         "a.json:1: not valid JSON", subprocess=True),
    Case("results-truncated", lambda ws: report(ws, ws.write(
        "a.json", json.dumps(results(), indent=1)[:700]), ws.results("b.json")), 2,
         "the file ends early"),
    Case("results-not-utf8", lambda ws: report(ws, ws.write("a.json", b"\xff\xfe{}"), ws.results("b.json")), 2,
         "a.json: not a results file (byte 0 is not UTF-8)"),
    Case("results-not-an-object", lambda ws: report(ws, ws.write("a.json", "[]"), ws.results("b.json")), 2,
         "a.json: not a results file of `retain eval` (no 'tasks' mapping)"),
    Case("results-without-items", lambda ws: report(ws, mutate_json(
        ws.results("a.json"), lambda r: r["tasks"]["facts"].pop("items")), ws.results("b.json")), 2,
         "a.json: tasks.facts.items: missing or not a list"),
    Case("results-item-without-metric", lambda ws: report(ws, ws.results("a.json"), mutate_json(
        ws.results("b.json"), lambda r: r["tasks"]["facts"]["items"][3].pop("exact_match"))), 2,
         "b.json: tasks.facts.items[3].exact_match: missing"),
    Case("results-incomplete", lambda ws: report(ws, ws.results("a.json"), mutate_json(
        ws.results("b.json"), lambda r: r["tasks"]["facts"]["items"].pop())), 2, "19 items, but n says 20"),
    Case("report-different-splits", report_pair({}, {"split": "dev"}), 2,
         "scored on the dev split, the base on the test split"),
    Case("report-different-suites", report_pair({"tasks": ("facts", "sums")}, {"tasks": ("facts", "poems")}), 2,
         "different tasks (suites 'facts,sums' and 'facts,poems'); only in the base: sums; only here: poems"),
    Case("report-same-file-twice", lambda ws: report(ws, ws.results("a.json"), ws.path("a.json")), 2,
         "a.json: given twice (results 1 and 2)"),
    Case("report-different-limits", report_pair({"limit": 20}, {"limit": 10, "n": 10}), 2,
         "scored with --limit 10, the base with --limit 20"),
    Case("report-different-items", report_pair({}, {"n": 15}), 2, "task facts scored different items (15 here, 20"),
    Case("report-one-file", lambda ws: report(ws, ws.results("a.json")), 2, "at least one fine-tune"),
    Case("report-too-few-labels", lambda ws: report(ws, ws.results("a.json"), ws.results("b.json"),
                                                    extra=("--label", "base")), 2, "--label"),
    Case("report-run-file-corrupt", lambda ws: report(ws, ws.results("a.json"), ws.results("b.json"), extra=(
        "--run", str(Path(ws.write("run/retention.json", '{"max_drop": 0.01, "checks": [')).parent))), 2,
         "run/retention.json: not valid JSON"),
    Case("report-out-is-a-file", lambda ws: ["report", ws.results("a.json"), ws.results("b.json"), "--out",
                                             ws.write("taken", "x")], 2, "taken: a file, not a directory"),
    # --- sweep ---------------------------------------------------------------------------------------------
    Case("sweep-duplicate-key", lambda ws: sweep(ws, sweep_text(ws, ws.config()) + "strategies: {}\n"), 2,
         "sweep.yaml:8: key 'strategies' given twice (first on line 6)"),
    Case("sweep-not-utf8", lambda ws: sweep(ws, sweep_text(ws, ws.config()).encode() + b"# \xff\n"), 2,
         "sweep.yaml:8: not UTF-8"),
    Case("sweep-base-missing", lambda ws: sweep(ws, sweep_text(ws, ws.path("none.yaml"))), 2,
         "sweep.yaml: base: "),
    Case("sweep-base-duplicate-key", lambda ws: sweep(ws, sweep_text(ws, ws.write(
        "base.yaml", Path(ws.config()).read_text() + "model: {name: other}\n"))), 2, "key 'model' given twice"),
    Case("sweep-bad-strategy", lambda ws: sweep(ws, sweep_text(ws, ws.config(), "bad: {training.lrr: 1}")), 2,
         "strategies.bad: training.lrr: unknown key"),
    Case("sweep-line-weight-not-between", lambda ws: sweep(ws, sweep_text(ws, ws.config()) + "line: [0.5, 1.0]\n"), 2,
         "sweep.yaml: line: expected distinct weights strictly between 0 and 1, got [0.5, 1.0]"),
    # --- merge, the command line ----------------------------------------------------------------------------
    Case("merge-interpolate-two", lambda ws: merge(ws, str(ws.model), str(ws.model), str(ws.model),
                                                   method="interpolate"), 2, "takes exactly one fine-tuned model"),
    Case("merge-base-missing", lambda ws: merge(ws, "./nope", str(ws.model)), 2, "model ./nope: no such directory"),
    Case("unknown-command", lambda ws: ["trian", ws.config()], 2, "invalid choice: 'trian'", subprocess=True),
    # --- what the machine refuses, and runs that must not end "successfully" ---------------------------------
    Case("disk-full-checkpoint-torch", lambda ws: ws.train(training={"max_steps": 3, "save_every": 1}), 2,
         "disk full while writing checkpoint", creates=STEP_1_ONLY, fault=torch_disk_full_in(".step-2.tmp")),
    Case("disk-full-final-safetensors", lambda ws: ws.train(training={"max_steps": 2, "save_every": 1}), 2,
         "earlier checkpoints are intact", creates=STEP_1_ONLY, fault=safetensors_disk_full),
    Case("device-cuda-without-cuda", lambda ws: ws.eval("english") + ["--device", "cuda"], 2,
         "--device cuda: this machine has no CUDA GPU", fault=no_cuda),
    Case("device-not-a-device", lambda ws: ws.eval("english") + ["--device", "gpu"], 2, "--device gpu: not a device"),
    Case("model-needs-remote-code", lambda ws: ws.train_model(needs_remote_code(ws)), 2,
         "modeling_my.py, named by auto_map in its config.json), and model.trust_remote_code is off"),
    Case("tokenizer-needs-remote-code", lambda ws: ws.train_model(needs_remote_code(ws, "tokenizer")), 2,
         "(tokenization_my.py, named by auto_map in its tokenizer_config.json), and model.trust_remote_code is off"),
    Case("eval-model-needs-remote-code", lambda ws: ws.eval("english", needs_remote_code(ws)), 2,
         "model.trust_remote_code is off"),
    Case("max-length-beyond-context", lambda ws: ws.train(data={"max_length": 1_000_000}), 2,
         "data.max_length: 1000000 is beyond the context of model"),
    # the issue's run: from step 2 the loss is ln(4096) with a zero gradient; its step-1 checkpoint is dead too
    Case("lr-collapse", lambda ws: ws.train_model("retain-tiny", training={"lr": 1000, "max_steps": 8,
                                                                          "save_every": 1}), 2,
         "training collapsed at step 2: from there the loss is ln(4096)",
         creates=("out/config.yaml", "out/metrics.jsonl", "out/run.lock", "out/tensorboard*", "out/checkpoints")),
    # --- what must work: a UTF-8 BOM is fine ------------------------------------------------------------------
    Case("bom-config-and-data", lambda ws: ["train", ws.write("c.yaml", "\ufeff" + Path(ws.config(
        data={"train": ws.write("bom.jsonl", "\ufeff" + Path(ws.data).read_text())})).read_text())],
         0, "trained 1 steps", creates=("out/*", "out/**/*")),
    Case("bom-results", lambda ws: report(ws, ws.write("a.json", "\ufeff" + json.dumps(results())),
                                          ws.results("b.json")), 0, "report:", creates=("report", "report/*")),
]


def test_the_table_is_large_and_its_ids_unique():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and directory under `roots`: its content hash, or 'dir'."""
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            state[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def run(argv: list[str], capsys, in_subprocess: bool, cwd: Path) -> tuple[int, str, str]:
    if in_subprocess:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        proc = subprocess.run([sys.executable, "-m", "retain", *argv], capture_output=True, text=True, env=env,
                              cwd=cwd, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tiny_model, tmp_path, capsys, monkeypatch):
    ws = Workspace(tmp_path / "ws", tiny_model)
    monkeypatch.chdir(ws.root)  # relative paths in a row are relative to its workspace
    monkeypatch.setenv("RETAIN_MMLU_FILE", str(ws.mmlu))
    argv = case.setup(ws)
    if case.fault is not None:
        assert not case.subprocess, "a fault is patched into this process"
        case.fault(monkeypatch)
    before = snapshot(ws.root, tiny_model)
    code, out, err = run(argv, capsys, case.subprocess, ws.root)
    after = snapshot(ws.root, tiny_model)

    assert code == case.code, f"exit {code}, expected {case.code}\n{err[-3000:]}"
    assert case.fragment in (err if case.code else out), err[-3000:]
    if case.code == 2 and argv[0] != "--debug":
        assert "Traceback" not in err, err[-3000:]
        assert "error: " in err
    changed = sorted(p for p in before if after.get(p) != before[p])
    assert not changed, f"changed or removed: {changed}"
    created = sorted(p for p in after if p not in before)
    allowed = [c for c in created if any(fnmatch.fnmatch(os.path.relpath(c, ws.root), g) for g in case.creates)]
    assert created == allowed, f"created: {sorted(set(created) - set(allowed))}"


@pytest.mark.parametrize("error, code, message", [
    (KeyError("tasks"), 1, "retain: internal error: KeyError: 'tasks'\n  this is a bug in retain"),
    (ValueError("shapes (2, 3) and (4,) differ"), 1, "this is a bug in retain"),
    (OSError(errno.ENOSPC, "No space left on device", "out/r.json"), 2,
     "retain: error: out/r.json: No space left on device — free some space, or write elsewhere"),
    (PermissionError(errno.EACCES, "Permission denied", "out"), 2,
     "retain: error: out: Permission denied — check the permissions"),
    (KeyboardInterrupt(), 130, "retain: interrupted"),
])
def test_the_boundary_tells_a_bug_from_a_user_error(error, code, message, capsys, monkeypatch):
    """A bug shows its traceback and asks to be reported (exit 1); a user's disk or permission problem
    is named without one (exit 2)."""
    import retain.evaluation.runner

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(retain.evaluation.runner, "evaluate_path", fail)
    assert cli.main(["eval", "retain-tiny", "--suite", "english"]) == code
    err = capsys.readouterr().err
    assert message in err
    assert ("Traceback (most recent call last)" in err) == (code == 1)


def test_gold_given_as_choice_text_is_that_choice(tmp_path):
    from retain.evaluation.tasks import load_task

    write_jsonl(tmp_path / "d.jsonl", [{"context": "q", "choices": ["a", "b", "c"], "gold": "c"},
                                      {"context": "q", "choices": ["a", "b", "c"], "gold": 1}])
    (tmp_path / "t.yaml").write_text("name: t\nkind: multiple_choice\ndata: {test: d.jsonl}\n")
    assert [item["gold"] for item in load_task(tmp_path / "t.yaml").items("test")] == [2, 1]


@pytest.mark.parametrize("name, key, lab_value", [
    ("replay", "file", "lab:general.jsonl"), ("ewc", "file", "lab:general.jsonl"),
    ("si", "file", "lab:general.jsonl"), ("retention", "suite", None)])
def test_lab_defaults_fill_in_for_retain_tiny_only(name, key, lab_value, tiny_model, qa_data, tmp_path):
    from retain.config import config_from_dict
    from retain.core.paths import LAB_MODEL_DIR
    from retain.core.schema import ConfigError
    from retain.lab.defaults import BUDGET_SUITE

    def config(model: str, options: dict):
        return config_from_dict({"model": {"name": model}, "data": {"train": str(qa_data)},
                                 "output": {"dir": str(tmp_path / "o")}, "mitigations": {name: options}})

    for lab_model in ("retain-tiny", str(LAB_MODEL_DIR)):
        assert getattr(config(lab_model, {}).mitigations[name], key) == (lab_value or BUDGET_SUITE)
    with pytest.raises(ConfigError, match=f"mitigations.{name}.{key}: required for model {tiny_model}"):
        config(str(tiny_model), {})
    given = str(qa_data) if key == "file" else "english"
    assert getattr(config(str(tiny_model), {key: given}).mitigations[name], key) == given


def test_an_adapter_records_a_base_peft_can_load_from_anywhere(tiny_model, tmp_path, capsys, monkeypatch):
    """A run from a relative model path: adapter_config.json names the base by its absolute path."""
    shutil.copytree(tiny_model, tmp_path / "models" / "tiny")
    write_jsonl(tmp_path / "qa.jsonl", QA)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "model": {"name": "./models/tiny"}, "data": {"train": "qa.jsonl", "max_length": 64},
        "training": {"max_steps": 1, "batch_size": 4}, "output": {"dir": "run"},
        "mitigations": {"lora": {"r": 2}}}))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "c.yaml"]) == 0, capsys.readouterr().err
    adapter = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((tmp_path / "models" / "tiny").resolve())
    monkeypatch.chdir(tmp_path / "run")  # where ./models/tiny does not exist
    from retain.model.loading import load_for_eval

    model, _ = load_for_eval("final")
    assert model.config.vocab_size == json.loads((tiny_model / "config.json").read_text())["vocab_size"]
