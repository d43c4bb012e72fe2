"""LLaMA-Factory's dataset_info.json: `data.train: DIR/dataset_info.json#NAME` reads the entry NAME.

An entry says where the rows are (`file_name`, relative to the folder of dataset_info.json, or
`hf_hub_url` with `subset`, `split`, `folder`, `revision`) and how to read them (`formatting`: alpaca
or sharegpt; `ranking` for preference pairs; `columns` and `tags` naming the fields). As in
LLaMA-Factory: an `alpaca` row becomes a conversation — the system column, the history pairs, then one user
turn "prompt\\nquery" and the response — rendered through the chat template; a `sharegpt` row's first
message may be the system prompt; when `columns` (or `tags`) is given, only the keys it lists are used,
the others have no column; an alpaca entry whose only column is `prompt` is plain text (its pretraining
form). Tool turns, tool descriptions, images, video and audio are not supported: a row that has them is
an error; so are `num_samples`, `script_url`, `cloud_file_name` and an entry only on ModelScope/Modelers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from retain.data.shapes import PreferenceExample, Shape, Text, Turn, conversation, message_text, string_field
from retain.core.errors import DataError

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}  # when `columns` is absent
SHAREGPT_COLUMNS = {"messages": "conversations"}
TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
        "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
UNSUPPORTED_COLUMNS = {"tools": "tool descriptions", "images": "images", "videos": "video", "audios": "audio",
                       "kto_tag": "KTO labels"}
UNSUPPORTED_KEYS = {"num_samples": "take the rows you want into a file of their own",
                    "script_url": "loading scripts are not run; point file_name at the data",
                    "cloud_file_name": "download the file and name it in file_name"}


@dataclass(frozen=True)
class Entry:
    name: str  # DIR/dataset_info.json#NAME, for messages
    file: Path | None  # the local file or folder of rows, or None for a hub dataset
    hub: dict | None  # {repo, config, split, data_dir, revision} for a hub dataset
    parse: Callable[[dict, str], Shape]  # one row (and its place) -> its shape


def read_entry(info_path: Path, name: str) -> Entry:
    """The entry `name` of a dataset_info.json; DataError naming the file and entry when it cannot be used."""
    where = f"{info_path}#{name}"
    try:
        text = info_path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{info_path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{info_path}: not UTF-8 text — save the file as UTF-8") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{info_path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(info, dict):
        raise DataError(f"{info_path}: expected a JSON object of named datasets")
    if name not in info:
        raise DataError(f"{where}: no dataset named {name!r} in {info_path.name} (it has: "
                        f"{', '.join(sorted(info)) or 'none'})")
    entry = info[name]
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object describing the dataset, got {type(entry).__name__}")
    for key, advice in UNSUPPORTED_KEYS.items():
        if entry.get(key) is not None and not (key == "script_url" and "file_name" in entry):
            raise DataError(f"{where}: key '{key}' is not supported by retain — {advice}")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise DataError(f"{where}: formatting: {formatting!r} is not one of 'alpaca', 'sharegpt'")
    columns, tags = _mapping(entry, "columns", where), _mapping(entry, "tags", where)
    ranking = bool(entry.get("ranking", False))
    if formatting == "alpaca":
        parse = alpaca_parser(columns if "columns" in entry else dict(ALPACA_COLUMNS), ranking, where)
    else:
        parse = sharegpt_parser(columns if "columns" in entry else dict(SHAREGPT_COLUMNS),
                                tags if "tags" in entry else dict(TAGS), ranking, where)
    if entry.get("hf_hub_url"):
        hub = {"repo": entry["hf_hub_url"], "config": entry.get("subset"), "split": entry.get("split", "train"),
               "data_dir": entry.get("folder"), "revision": entry.get("revision")}
        return Entry(where, None, hub, parse)
    if entry.get("file_name"):
        return Entry(where, info_path.parent / entry["file_name"], None, parse)
    other = [k for k in ("ms_hub_url", "om_hub_url") if entry.get(k)]
    raise DataError(f"{where}: no file_name or hf_hub_url" + (f" ({other[0]} is not supported: retain reads "
                                                              "the Hugging Face hub)" if other else ""))


def _mapping(entry: dict, key: str, where: str) -> dict:
    value = entry.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise DataError(f"{where}: {key}: expected an object of names, got {value!r}")
    return value


def _check_unsupported(record: dict, columns: dict, where: str) -> None:
    for role, what in UNSUPPORTED_COLUMNS.items():
        column = columns.get(role)
        if column and record.get(column) not in (None, "", [], {}):
            raise DataError(f"{where}: field '{column}': {what} are not supported by retain")


def alpaca_parser(columns: dict, ranking: bool, entry: str) -> Callable[[dict, str], Shape]:
    if set(columns) == {"prompt"} and not ranking:  # the pretraining form: one text column
        return lambda record, where: Text(string_field(record, columns["prompt"], where))
    needed = ("chosen", "rejected") if ranking else ("response",)
    for role in needed:
        if not columns.get(role):
            raise DataError(f"{entry}: columns: no '{role}' column — "
                            + ("a ranking entry names chosen and rejected" if ranking else "nothing to learn"))

    def parse(record: dict, where: str) -> Shape:
        _check_unsupported(record, columns, where)
        turns = []
        if columns.get("system") and string_field(record, columns["system"], where, optional=True):
            turns.append(Turn("system", record[columns["system"]]))
        turns += _history(record, columns.get("history"), where)
        query = [string_field(record, columns[k], where, optional=True) for k in ("prompt", "query") if columns.get(k)]
        turns.append(Turn("user", "\n".join(q for q in query if q)))
        if ranking:
            answers = [_answer(string_field(record, columns[k], where), columns[k], where) for k in needed]
            return PreferenceExample(tuple(turns), *answers, where=where)
        response = string_field(record, columns["response"], where)
        if not response:
            raise DataError(f"{where}: field '{columns['response']}': empty")
        return conversation((*turns, Turn("assistant", response)), columns["response"], where)

    return parse


def _answer(text: str, column: str, where: str) -> tuple[Turn, ...]:
    if not text:
        raise DataError(f"{where}: field '{column}': empty")
    return (Turn("assistant", text),)


def _history(record: dict, column: str | None, where: str) -> list[Turn]:
    history = record.get(column) if column else None
    if history is None:
        return []
    if not isinstance(history, list):
        raise DataError(f"{where}: field '{column}': expected a list of [prompt, response] pairs")
    turns = []
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise DataError(f"{where}: field '{column}[{i}]': expected a [prompt, response] pair of strings")
        turns += [Turn("user", pair[0]), Turn("assistant", pair[1])]
    return turns


def sharegpt_parser(columns: dict, tags: dict, ranking: bool, entry: str) -> Callable[[dict, str], Shape]:
    messages_column = columns.get("messages")
    if not messages_column:
        raise DataError(f"{entry}: columns: no 'messages' column")
    if ranking and not (columns.get("chosen") and columns.get("rejected")):
        raise DataError(f"{entry}: columns: a ranking entry names chosen and rejected")
    roles = {tags[t]: role for t, role in (("user_tag", "user"), ("assistant_tag", "assistant"),
                                            ("system_tag", "system")) if tags.get(t)}
    tools = {tags[t] for t in ("observation_tag", "function_tag") if tags.get(t)}
    role_key, content_key = tags.get("role_tag"), tags.get("content_tag")
    if not role_key or not content_key:
        raise DataError(f"{entry}: tags: role_tag and content_tag are needed to read the messages")

    def turn(message: Any, key: str, where: str) -> Turn:
        if not isinstance(message, dict):
            raise DataError(f"{where}: field '{key}': expected an object with '{role_key}' and '{content_key}'")
        speaker = message.get(role_key)
        if speaker in tools:
            raise DataError(f"{where}: field '{key}.{role_key}': {speaker!r} — tool calls and tool results are not "
                            "supported yet")
        if speaker not in roles:
            raise DataError(f"{where}: field '{key}.{role_key}': unknown role {speaker!r} (this entry's tags name: "
                            f"{', '.join(map(repr, roles))})")
        return Turn(roles[speaker], message_text(message.get(content_key), f"{key}.{content_key}", where))

    def parse(record: dict, where: str) -> Shape:
        _check_unsupported(record, columns, where)
        messages = record.get(messages_column)
        if not isinstance(messages, list):
            raise DataError(f"{where}: field '{messages_column}': " + ("missing" if messages is None else
                                                                       "expected a list of messages"))
        turns = [turn(m, f"{messages_column}[{i}]", where) for i, m in enumerate(messages)]
        for i, t in enumerate(turns[1:], 1):
            if t.role == "system":
                raise DataError(f"{where}: field '{messages_column}[{i}]': a system message is only read first")
        if columns.get("system") and not (turns and turns[0].role == "system"):
            system = string_field(record, columns["system"], where, optional=True)
            turns = ([Turn("system", system)] if system else []) + turns
        if ranking:
            answers = tuple((turn(record.get(columns[k]), columns[k], where),) for k in ("chosen", "rejected"))
            if any(a[0].role != "assistant" for a in answers):
                raise DataError(f"{where}: field '{columns['chosen']}': chosen and rejected must be assistant "
                                "messages")
            return PreferenceExample(tuple(turns), *answers, where=where)
        return conversation(tuple(turns), messages_column, where)

    return parse
