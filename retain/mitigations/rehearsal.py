"""Self-rehearsal: the base model writes its own replay data before training (`replay.source: self`).

What a fine-tune overwrites is the behaviour the model is used with: a chat model's answers in its chat
format, and plain language. Replaying text the base itself wrote holds exactly that distribution, with no
general data set to find. This follows three lines of work:

- Self-synthesized rehearsal (Huang et al., "Mitigating Catastrophic Forgetting in Large Language Models
  with Self-Synthesized Rehearsal", ACL 2024): the model generates the rehearsal data that stands in for
  its original training data.
- Magpie (Xu et al., "Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with
  Nothing", 2024): a chat model given its template's opening of a user turn writes a user query.
- "Retaining by Doing" (Chen et al., 2025): training on the model's own (on-policy) samples forgets less
  than training on other text; with `kl` on these tokens (`kl.apply_to: replay`) it is on-policy distillation.

Records: a chat exchange is {"messages": [user, assistant]} (the query written by the base from its
template's user-turn opening, or taken from a prompts file; the answer by the base, greedy unless
`answer_temperature` > 0); a plain-text record is {"text": ...}, a continuation sampled from the first
token, or from one of the openings a file gives (the opening and its continuation: to hold languages or kinds of
text the base's own sampling rarely writes). Kept only when unique, long enough, and ended by the model (an
end-of-turn or EOS token, not the length limit). Written once per base model and settings, as JSONL under the
cache, and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock
from tqdm.auto import tqdm

from retain.core.errors import ConfigError, DataError
from retain.model.gguf import cache_root, file_sha256
from retain.core.files import atomic_write_text
from retain.core.paths import resolve_path

FORMAT_VERSION = 1  # bump when what is generated changes: old caches are then not reused
MARKER = "\u2063retain-marker\u2063"  # stands in for a message's content to find the template around it
LATER_SETTINGS = ("openings",)  # RehearsalSettings fields added after FORMAT_VERSION 1's cache files
MIN_CHARS = 8  # shorter queries, answers or plain texts are dropped


@dataclass(frozen=True)
class RehearsalSettings:
    samples: int  # records wanted (chat + plain)
    chat_share: float  # of them, chat exchanges (a model with a chat template)
    max_new_tokens: int
    answer_temperature: float  # 0: greedy
    seed: int
    prompts: str | None = None  # a file of user prompts the base answers instead of writing its own
    openings: str | None = None  # a file of text openings the base continues instead of its first token
    batch_size: int = 16


def cache_dir(settings_dir: str | None) -> Path:
    return Path(settings_dir).expanduser() if settings_dir else cache_root() / "rehearsal"


def model_fingerprint(source: str, chat_template: str | None) -> str:
    """What identifies the base model's weights and template: for a local directory, every file's name and size
    plus the first and last MiB of each (a changed checkpoint changes them), and config.json whole; for a hub id,
    the id. The chat template the data is rendered with is part of it."""
    digest = hashlib.sha256(f"{source}\0{chat_template or ''}".encode())
    root = Path(source)
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(root)}:{path.stat().st_size}".encode())
            with path.open("rb") as f:
                digest.update(f.read(1 << 20))
                if path.stat().st_size > 2 << 20:
                    f.seek(-(1 << 20), os.SEEK_END)
                    digest.update(f.read())
    return digest.hexdigest()


def cache_file(root: Path, fingerprint: str, settings: RehearsalSettings) -> Path:
    described = {**asdict(settings), "version": FORMAT_VERSION, "batch_size": None}  # batching changes nothing
    for key in LATER_SETTINGS:  # unset, a setting added later keeps the key every earlier cache file was written under
        if described[key] is None:
            del described[key]
    for key in ("prompts", "openings"):  # the files' contents, not their names
        if described.get(key):
            described[key] = file_sha256(resolve_path(described[key]))
    key = hashlib.sha256(json.dumps([fingerprint, described], sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{key}.jsonl"


def read_prompts(path: str) -> list[str]:
    """User prompts or text openings: JSONL whose rows have `prompt` (or `instruction`, `question`, `text`), or one
    per line."""
    prompts = []
    try:
        content = resolve_path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}) — save the "
                        "file as UTF-8") from None
    for n, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            text = next((row[k] for k in ("prompt", "instruction", "question", "text") if k in row), None)
            if not isinstance(text, str):
                raise DataError(f"{path}:{n}: no prompt field (prompt, instruction, question or text)")
            prompts.append(text)
        else:
            prompts.append(line)
    return prompts


def template_parts(tokenizer) -> tuple[str, list[int]] | None:
    """(the text that opens a user turn, the token ids that close one or an assistant turn), from the chat
    template around a marker; None for a model without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    user = tokenizer.apply_chat_template([{"role": "user", "content": MARKER}], tokenize=False)
    opening, closing = user.split(MARKER, 1)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": MARKER}],
                                         tokenize=False)
    stops = {tokenizer.eos_token_id}
    for tail in (closing, chat.split(MARKER, 1)[1]):
        ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
        if ids:
            stops.add(ids[0])
    return opening, sorted(s for s in stops if s is not None)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], stops: list[int], settings: RehearsalSettings,
             temperature: float, desc: str, must_end: bool = True, with_prompt: bool = False) -> list[str | None]:
    """Continuations of `prompts` (batched, left-padded, seeded per batch); with `must_end`, None where the length
    limit, not a stop token, ended one; `with_prompt`: each prompt and its continuation, decoded as one text."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    out: list[str | None] = []
    bar = tqdm(total=len(prompts), desc=desc, unit="sample")
    for k in range(0, len(prompts), settings.batch_size):
        batch = prompts[k: k + settings.batch_size]
        encoded = [tokenizer(p, add_special_tokens=not p.startswith(tokenizer.bos_token or "\0"))["input_ids"]
                   or [tokenizer.bos_token_id or stops[0]] for p in batch]
        width = max(map(len, encoded))
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, e in enumerate(encoded):
            ids[j, width - len(e):], mask[j, width - len(e):] = torch.tensor(e), 1
        with torch.random.fork_rng(devices=[]):  # the training RNG stays as it was
            torch.manual_seed(settings.seed * 100_003 + k)
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       max_new_tokens=settings.max_new_tokens, do_sample=temperature > 0,
                                       temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                                       eos_token_id=stops, pad_token_id=pad)
        for prompt, row in zip(encoded, generated[:, width:].tolist()):
            ended = next((i for i, t in enumerate(row) if t in stops), None)
            if ended is None and must_end:
                out.append(None)
            else:
                ids = (prompt if with_prompt else []) + row[:ended]
                out.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        bar.update(len(batch))
    bar.close()
    return out


def unique(texts, limit: int) -> list[str]:
    seen, kept = set(), []
    for text in texts:
        key = " ".join((text or "").lower().split())
        if len(key) >= MIN_CHARS and key not in seen:
            seen.add(key)
            kept.append(text)
    return kept[:limit]


def write_records(model, tokenizer, settings: RehearsalSettings) -> list[dict]:
    """The rehearsal records the base `model` writes (see the module docstring)."""
    parts = template_parts(tokenizer)
    n_chat = round(settings.samples * settings.chat_share) if parts else 0
    records = []
    if n_chat:
        opening, stops = parts
        if settings.prompts:
            queries = unique(read_prompts(settings.prompts), n_chat)
        else:  # Magpie: sample at temperature 1 from the opening of a user turn; twice as many as kept
            queries = unique(generate(model, tokenizer, [opening] * (2 * n_chat), stops, settings, 1.0,
                                      "self-rehearsal: queries"), n_chat)
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q in queries]
        answers = generate(model, tokenizer, prompts, stops, settings, settings.answer_temperature,
                           "self-rehearsal: answers")
        records += [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                    for q, a in zip(queries, answers) if a is not None and len(a) >= MIN_CHARS]
    n_plain = settings.samples - n_chat
    if n_plain:
        stop = [tokenizer.eos_token_id]
        # a continuation the length limit cut is still plain text the model wrote: kept
        if settings.openings:  # each opening in turn, sampled again on its next turn; kept with its continuation
            openings = read_prompts(settings.openings)
            if not openings:
                raise DataError(f"{settings.openings}: replay.openings: no opening in the file")
            starts = [openings[k % len(openings)] for k in range(n_plain)]
            texts = generate(model, tokenizer, starts, stop, settings, 1.0, "self-rehearsal: plain text",
                             must_end=False, with_prompt=True)
        else:
            start = tokenizer.bos_token or tokenizer.decode([tokenizer.eos_token_id])
            texts = generate(model, tokenizer, [start] * n_plain, stop, settings, 1.0, "self-rehearsal: plain text",
                             must_end=False)
        records += [{"text": t} for t in unique(texts, n_plain)]
    return records


def self_rehearsal(settings: RehearsalSettings, source: str | None, tokenizer, load_model, settings_dir: str | None,
                   log=print) -> Path:
    """The JSONL of the base's rehearsal records for these settings: read from the cache, or written now by the
    model `load_model()` returns (loaded only then)."""

    if not source:
        raise ConfigError("replay.source self: the base model is not known here (retain's own run knows it) — "
                         "write the records with a retain run first, or use source: file")
    path = cache_file(cache_dir(settings_dir), model_fingerprint(source, tokenizer.chat_template), settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # the ranks of one run (or two runs) write it once; the others wait
        if path.is_file():
            log(f"self-rehearsal: {path} (cached)")
            return path
        return _write(path, settings, tokenizer, load_model, log)


def _write(path: Path, settings: RehearsalSettings, tokenizer, load_model, log) -> Path:
    model = load_model()
    model.eval()
    records = write_records(model, tokenizer, settings)
    del model
    if not records:
        raise ConfigError("replay.source self: the base model wrote no usable record (each was cut by "
                         "max_new_tokens or too short) — raise replay.max_new_tokens, or give replay.prompts")
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    chats = sum("messages" in r for r in records)
    log(f"self-rehearsal: {len(records)} records ({chats} chat exchanges, {len(records) - chats} plain texts) "
        f"written by the base to {path}")
    return path
