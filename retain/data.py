"""JSONL data in the shapes people have, turned into token ids and loss labels.

Shapes (one JSON object per line; `format: auto` picks by the keys of each record):
  prompt_response  {"prompt": str, "response": str}
  alpaca           {"instruction": str, "input": str (optional), "output": str}
  chat             {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
  text             {"text": str}

Each record becomes one string plus the character spans that carry the loss (the response,
the output, the assistant turns; everything for `text`, or for `loss_on: all`). Tokenizing the
whole string once and labelling tokens by their character offsets keeps the ids identical to
what the model sees at inference, whatever the tokenizer does at segment boundaries.

Chat uses the tokenizer's chat template when it has one, otherwise PLAIN_CHAT_TEMPLATE:
    <|user|>\\n{content}\\n<|assistant|>\\n{content}<eos>\\n

Files are UTF-8 (a BOM is fine). A line longer than 1 MB ($RETAIN_MAX_LINE_BYTES changes it) is an
error found before the line is parsed: a record that long is not one training example, and
parsing and tokenizing it first would take minutes and gigabytes.
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from retain.errors import DataError

IGNORE_INDEX = -100  # label value the cross-entropy skips
ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss
    replay: bool = False  # general data mixed in by the replay mitigation, not task data


@dataclass
class Dataset:
    examples: list[Example]
    path: Path
    truncated: int  # examples cut at max_length
    dropped: int  # examples with no loss-carrying token left after truncation

    def __len__(self) -> int:
        return len(self.examples)


def max_line_bytes() -> int:
    """The longest JSONL line read: $RETAIN_MAX_LINE_BYTES, else 1 MB."""
    value = os.environ.get("RETAIN_MAX_LINE_BYTES", "")
    try:
        return int(value) if value else 1 << 20
    except ValueError:
        raise DataError(f"RETAIN_MAX_LINE_BYTES={value!r}: expected a number of bytes") from None


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line; a bad line raises DataError naming it."""
    path = Path(path)
    limit = max_line_bytes()
    records = []
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a JSONL file") from None
    with f:
        for lineno, raw in enumerate(iter(lambda: f.readline(limit + 1), b""), 1):
            where = f"{path}:{lineno}"
            if len(raw) > limit and not raw.endswith(b"\n"):  # checked before anything parses the line
                raise DataError(f"{where}: line longer than {limit:,} bytes — one record per line (is the whole "
                                "file on one line?); split it, or raise the limit with RETAIN_MAX_LINE_BYTES")
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}) — "
                                "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__} "
                                "(JSONL: one object per line)")
            records.append((lineno, record))
    if not records:
        raise DataError(f"{path}: no records")
    return records


def detect_format(record: dict) -> str:
    if "messages" in record:
        return "chat"
    if "instruction" in record:
        return "alpaca"
    if "prompt" in record or "response" in record:
        return "prompt_response"
    if "text" in record:
        return "text"
    raise KeyError("no known fields (expected prompt/response, instruction/output, messages, or text)")


def _field(record: dict, name: str, where: str, optional: bool = False) -> str:
    if name not in record:
        if optional:
            return ""
        raise DataError(f"{where}: field '{name}': missing")
    value = record[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}': expected a string, got {type(value).__name__}")
    return value


def render_chat(messages: list[dict], tokenizer, where: str) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, and the character spans of the assistant turns."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages': expected a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(
                f"{where}: field 'messages[{i}]': expected {{role: system|user|assistant, content: string}}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: field 'messages': no assistant turn to learn from")
    if getattr(tokenizer, "chat_template", None):
        def render(prefix, generation_prompt=False):
            try:
                return tokenizer.apply_chat_template(prefix, tokenize=False, add_generation_prompt=generation_prompt)
            except Exception as e:  # templates raise their own errors, e.g. "System role not supported"
                roles = "/".join(dict.fromkeys(m["role"] for m in messages))
                raise DataError(f"{where}: the tokenizer's chat template rejected this conversation ({roles}): "
                                f"{e} — remove what it refuses (e.g. a system turn) from the data, or use a "
                                "model whose template accepts it") from None
    else:
        def render(prefix, generation_prompt=False):
            text = "".join(
                f"<|{m['role']}|>\n{m['content']}"
                + ((tokenizer.eos_token or "") if m["role"] == "assistant" else "")
                + "\n" for m in prefix)
            return text + ("<|assistant|>\n" if generation_prompt else "")
    spans = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start = len(render(messages[:i], generation_prompt=True))
            spans.append((start, len(render(messages[: i + 1]))))
    text = render(messages)
    return text, spans


def render_record(record: dict, fmt: str, tokenizer, where: str, chat: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """(text, loss spans) for one record of format `fmt`; the EOS ends every target.

    With `chat`, a prompt/response or Alpaca record becomes a user turn and an assistant turn of the
    tokenizer's chat template (the template then decides how the answer ends)."""
    eos = tokenizer.eos_token or ""
    if fmt == "auto":
        try:
            fmt = detect_format(record)
        except KeyError as e:
            raise DataError(f"{where}: {e.args[0]}") from None
    if fmt == "text":
        text = _field(record, "text", where) + eos
        return text, [(0, len(text))]
    if fmt == "chat":
        if "messages" not in record:
            raise DataError(f"{where}: field 'messages': missing")
        return render_chat(record["messages"], tokenizer, where)
    if fmt == "alpaca":
        extra = _field(record, "input", where, optional=True)
        prompt = ALPACA_PROMPT.format(
            instruction=_field(record, "instruction", where),
            input_block=f"### Input:\n{extra}\n\n" if extra else "")
        target = _field(record, "output", where)
    else:  # prompt_response
        prompt, target = _field(record, "prompt", where), _field(record, "response", where)
    if not target:
        raise DataError(f"{where}: field '{'output' if fmt == 'alpaca' else 'response'}': empty")
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(f"{where}: data.chat is set, but the tokenizer has no chat template")
        return render_chat([{"role": "user", "content": prompt.strip()},
                            {"role": "assistant", "content": target.strip()}], tokenizer, where)
    return prompt + target + eos, [(len(prompt), len(prompt) + len(target) + len(eos))]


def tokenize(text: str, spans: list[tuple[int, int]], tokenizer, loss_on: str) -> Example:
    """Ids and labels of `text`. The tokenizer adds its special tokens (a Llama tokenizer adds BOS)
    unless the text already begins with BOS, as a chat template that writes `{{ bos_token }}` makes
    it: one BOS either way, never two (the same rule as evaluation's LM.encode)."""
    bos = tokenizer.bos_token
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=not (bos and text.startswith(bos)))
    labels = []
    for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        # special tokens the tokenizer adds (BOS) have an empty span and never carry loss
        in_target = end > start and any(s <= start < e for s, e in spans)
        labels.append(token_id if (loss_on == "all" and end > start) or in_target else IGNORE_INDEX)
    return Example(list(enc["input_ids"]), labels)


def load_dataset(path: str | Path, tokenizer, fmt: str = "auto", max_length: int = 512,
                 loss_on: str = "response", chat: bool = False) -> Dataset:
    """Read and tokenize a whole file; raises DataError on the first bad line, before any training."""
    path = Path(path)
    examples, truncated, dropped = [], 0, 0
    for lineno, record in read_jsonl(path):
        text, spans = render_record(record, fmt, tokenizer, f"{path}:{lineno}", chat)
        ex = tokenize(text, spans, tokenizer, loss_on)
        if len(ex.input_ids) > max_length:
            truncated += 1
            ex = Example(ex.input_ids[:max_length], ex.labels[:max_length])
        if all(label == IGNORE_INDEX for label in ex.labels[1:]):
            dropped += 1  # nothing to learn after the shift: no target token survived
            continue
        examples.append(ex)
    if not examples:
        raise DataError(f"{path}: no example has a target token within max_length={max_length}")
    return Dataset(examples, path, truncated, dropped)


MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask, labels (B, T); replay (B,) bool.

    Only MODEL_INPUTS go to the model; the rest is for loss terms that treat examples differently.
    """
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    replay = torch.tensor([e.replay for e in examples], dtype=torch.bool)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "replay": replay}


class SeededOrder(torch.utils.data.Sampler):
    """Example indices for `epochs` passes, each a fresh permutation from (seed, epoch).

    The whole multi-epoch stream is fixed by the seed, so "where we were" is just the number of
    batches already consumed: resuming skips that many and sees exactly the same data.
    """

    def __init__(self, n: int, seed: int, epochs: int):
        self.n, self.seed, self.epochs = n, seed, epochs

    def __iter__(self):
        for epoch in range(self.epochs):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            yield from torch.randperm(self.n, generator=g).tolist()

    def __len__(self) -> int:
        return self.n * self.epochs
