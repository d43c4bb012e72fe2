"""What one record says, whatever shape it came in: a text, a completion, a conversation, or a preference pair.

Record shapes (`data.format: auto` picks by the keys of each record, in this order):
  chat             {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}  (OpenAI's format:
                   content may also be a list of {"type": "text", "text": ...} parts; an assistant message
                   with "weight": 0 is shown but not learned)
  sharegpt         {"conversations": [{"from": "human"|"gpt"|"system"|..., "value": str}, ...], "system"?: str}
  preference       {"prompt", "chosen", "rejected"}: strings, or lists of messages (TRL's conversational form)
  alpaca           {"instruction": str, "input": str (optional), "output": str}
  prompt_response  {"prompt": str, "response": str}, or TRL's {"prompt", "completion"} (both strings, or both
                   lists of messages: then only the completion's assistant turns are learned)
  text             {"text": str}

A field that is null counts as absent (tables fill absent fields with nulls). Every problem is a
DataError `WHERE: field 'NAME': what is wrong`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from retain.core.errors import DataError

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
ROLES = ("system", "user", "assistant")
# ShareGPT's speaker names -> roles: the names FastChat's ShareGPT dumps use, and axolotl's default mapping
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
FORMATS = ("auto", "prompt_response", "alpaca", "chat", "sharegpt", "text")


@dataclass(frozen=True)
class Text:
    """Plain text; every token carries the loss."""

    text: str


@dataclass(frozen=True)
class Completion:
    """A prompt and the completion to learn, joined as given (the prompt carries no loss)."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class Turn:
    role: str  # system | user | assistant
    content: str
    learn: bool = True  # for an assistant turn: whether its tokens carry the loss


@dataclass(frozen=True)
class Conversation:
    """Turns rendered through a chat template; the assistant turns that `learn` carry the loss."""

    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt with a preferred and a dispreferred answer (for a preference stage such as DPO).

    Either all three are strings (joined to the prompt as given), or all are turns (rendered through the chat
    template): `prompt` the conversation so far, `chosen` / `rejected` the assistant's answers.
    """

    prompt: str | tuple[Turn, ...]
    chosen: str | tuple[Turn, ...]
    rejected: str | tuple[Turn, ...]
    where: str  # the source and row it came from

    @property
    def conversational(self) -> bool:
        return not isinstance(self.prompt, str)


Shape = Union[Text, Completion, Conversation, PreferenceExample]


def detect_format(record: dict) -> str:
    present = {k for k, v in record.items() if v is not None}
    if "messages" in present:
        return "chat"
    if "conversations" in present:
        return "sharegpt"
    if "chosen" in present or "rejected" in present:
        return "preference"
    if "instruction" in present:
        return "alpaca"
    if present & {"prompt", "response", "completion"}:
        return "prompt_response"
    if "text" in present:
        return "text"
    raise DataError("no known fields (expected prompt/response, instruction/output, messages, conversations, "
                    f"prompt/chosen/rejected, or text; found: {', '.join(sorted(record)) or 'none'})")


def string_field(record: dict, name: str, where: str, optional: bool = False) -> str:
    value = record.get(name)
    if value is None:
        if optional:
            return ""
        raise DataError(f"{where}: field '{name}': missing")
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}': expected a string, got {type(value).__name__}")
    return value


def parse_record(record: dict, fmt: str, where: str) -> Shape:
    """The shape of one record of format `fmt` ('auto': by its keys)."""
    if fmt == "auto":
        try:
            fmt = detect_format(record)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
    if fmt == "text":
        return Text(string_field(record, "text", where))
    if fmt in ("chat", "sharegpt"):
        key = "messages" if fmt == "chat" else "conversations"
        turns = parse_messages(record.get(key), key, where)
        system = string_field(record, "system", where, optional=True) if fmt == "sharegpt" else ""
        if system and turns[0].role != "system":
            turns = (Turn("system", system), *turns)
        return conversation(turns, key, where)
    if fmt == "preference":
        return parse_preference(record, where)
    if fmt == "alpaca":
        extra = string_field(record, "input", where, optional=True)
        prompt = ALPACA_PROMPT.format(instruction=string_field(record, "instruction", where),
                                      input_block=f"### Input:\n{extra}\n\n" if extra else "")
        return Completion(prompt, target(record, "output", where))
    return parse_prompt_completion(record, where)


def target(record: dict, name: str, where: str) -> str:
    value = string_field(record, name, where)
    if not value:
        raise DataError(f"{where}: field '{name}': empty")
    return value


def parse_prompt_completion(record: dict, where: str) -> Completion | Conversation:
    name = "completion" if record.get("completion") is not None else "response"
    prompt, answer = record.get("prompt"), record.get(name)
    if isinstance(prompt, list) and isinstance(answer, list):  # TRL's conversational prompt-completion
        shown = tuple(Turn(t.role, t.content, learn=False) for t in parse_messages(prompt, "prompt", where))
        return conversation(shown + parse_messages(answer, name, where), name, where)
    return Completion(string_field(record, "prompt", where), target(record, name, where))


def conversation(turns: tuple[Turn, ...], key: str, where: str) -> Conversation:
    if not any(t.role == "assistant" and t.learn for t in turns):
        raise DataError(f"{where}: field '{key}': no assistant turn to learn from")
    return Conversation(turns)


def parse_messages(messages: Any, key: str, where: str) -> tuple[Turn, ...]:
    """Turns of a message list: OpenAI messages ({role, content}) or ShareGPT ones ({from, value})."""
    if messages is None:
        raise DataError(f"{where}: field '{key}': missing")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field '{key}': expected a non-empty list")
    return tuple(parse_message(m, f"{key}[{i}]", where) for i, m in enumerate(messages))


def parse_message(message: Any, key: str, where: str) -> Turn:
    if isinstance(message, dict) and "from" in message:
        speaker, content = message["from"], message.get("value")
        if speaker not in SHAREGPT_ROLES:
            raise DataError(f"{where}: field '{key}.from': unknown role {speaker!r} (known: "
                            f"{', '.join(SHAREGPT_ROLES)}){tool_hint(speaker)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: field '{key}.value': expected a string, got {type(content).__name__}")
        return Turn(SHAREGPT_ROLES[speaker], content)
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        role = message.get("role") if isinstance(message, dict) else None
        raise DataError(f"{where}: field '{key}': expected {{role: system|user|assistant, content: string}}"
                        + (f", got role {role!r}{tool_hint(role)}" if isinstance(role, str) else ""))
    content = message_text(message.get("content"), key, where)
    weight = message.get("weight", 1)
    if weight not in (0, 1) or isinstance(weight, bool):
        raise DataError(f"{where}: field '{key}.weight': expected 0 or 1, got {weight!r}")
    if weight == 0 and message["role"] != "assistant":
        raise DataError(f"{where}: field '{key}.weight': only an assistant message can be left unlearned")
    return Turn(message["role"], content, learn=weight == 1)


def tool_hint(role: Any) -> str:
    if role in ("tool", "function", "function_call", "observation", "ipython"):
        return " — tool calls and tool results are not supported yet"
    return ""


def message_text(content: Any, key: str, where: str) -> str:
    """A message's content: a string, or OpenAI's list of text parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    if isinstance(content, list):
        raise DataError(f"{where}: field '{key}.content': only text parts ({{type: text, text: ...}}) are "
                        "supported (images and audio are not)")
    raise DataError(f"{where}: field '{key}': expected {{role: system|user|assistant, content: string}}")


def parse_preference(record: dict, where: str) -> PreferenceExample:
    """{prompt, chosen, rejected}: three strings, or a prompt (string or messages) with two message lists."""
    for name in ("prompt", "chosen", "rejected"):
        if record.get(name) is None:
            raise DataError(f"{where}: field '{name}': missing (a preference pair needs prompt, chosen and rejected)")
    prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
    if all(isinstance(v, str) for v in (prompt, chosen, rejected)):
        for name in ("chosen", "rejected"):
            target(record, name, where)
        return PreferenceExample(prompt, chosen, rejected, where)
    if isinstance(chosen, list) and isinstance(rejected, list):
        prompt_turns = (Turn("user", prompt),) if isinstance(prompt, str) else parse_messages(prompt, "prompt", where)
        answers = []
        for name, value in (("chosen", chosen), ("rejected", rejected)):
            turns = parse_messages(value, name, where)
            if isinstance(prompt, str) and turns[0] == Turn("user", prompt):
                turns = turns[1:]  # the answer repeats the prompt (UltraFeedback's layout): keep it once
            if not any(t.role == "assistant" for t in turns):
                raise DataError(f"{where}: field '{name}': no assistant turn")
            answers.append(turns)
        return PreferenceExample(prompt_turns, answers[0], answers[1], where)
    kinds = ", ".join(f"{n}: {type(record[n]).__name__}" for n in ("prompt", "chosen", "rejected"))
    raise DataError(f"{where}: field 'chosen': expected prompt, chosen and rejected all strings, or chosen and "
                    f"rejected both lists of messages (got {kinds})")
