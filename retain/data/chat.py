"""A conversation -> its text and the character spans that carry the loss, through a chat template.

Which template: `data.chat_template` (a Jinja file) when set, else the tokenizer's, else a plain one:
    <|user|>\\n{content}\\n<|assistant|>\\n{content}<eos>\\n

Which characters are the assistant's:
  - a template that marks them, `{% generation %}...{% endgeneration %}`, says so itself (transformers'
    apply_chat_template(..., return_assistant_tokens_mask=True)); the marked runs are the assistant turns,
    in order;
  - otherwise, by rendering prefixes: assistant turn i runs from the end of the conversation before it
    (with the generation prompt) to the end of the conversation up to it. That holds only for a template
    that renders the beginning of a conversation the same way alone as inside the whole; for one that does
    not (one that rewrites earlier turns, as reasoning templates drop old thoughts) the spans would be
    wrong, so it is an error that says to use a template with generation markers.

A template that refuses a conversation (e.g. "System role not supported") is a DataError naming the
template and the row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.ext import Extension

from retain.data.shapes import Turn
from retain.core.errors import DataError

GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(frozen=True)
class ChatTemplate:
    text: str | None  # the Jinja source; None: the tokenizer's own (or, when it has none, the plain one)
    origin: str  # how messages name it: "the tokenizer's chat template" or "chat template FILE"
    marks_generation: bool  # has {% generation %} markers
    plain: bool = False  # no template at all: the plain one, rendered here (_plain)


def resolve_chat_template(tokenizer, file: str | Path | None = None) -> ChatTemplate:
    """The template conversations are rendered with: `file` when given, else the tokenizer's."""
    if file is not None:
        path = Path(file)
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"{path}: chat template file not found") from None
        except IsADirectoryError:
            raise DataError(f"{path}: is a directory, not a chat template file") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text — save the template as UTF-8") from None
        _check_syntax(text, str(path))
        return ChatTemplate(text, f"chat template {path}", bool(GENERATION_MARKER.search(text)))
    if not getattr(tokenizer, "chat_template", None):
        return ChatTemplate(None, "the plain chat template", False, plain=True)
    try:
        own = tokenizer.get_chat_template()
    except Exception:  # a template dict without a default: apply_chat_template will say so per row
        own = ""
    return ChatTemplate(None, "the tokenizer's chat template", bool(GENERATION_MARKER.search(own or "")))


def _check_syntax(text: str, name: str) -> None:
    """A syntax error in a template file names the file and line, before any row is rendered."""

    class Generation(Extension):  # parses {% generation %} as transformers' environment does
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body, lineno=lineno)

    try:
        jinja2.Environment(extensions=[Generation, "jinja2.ext.loopcontrols"]).parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"{name}:{e.lineno}: not a valid Jinja template ({e.message})") from None


def render_conversation(turns: tuple[Turn, ...], tokenizer, template: ChatTemplate,
                        where: str) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, and the character spans of the assistant turns it learns."""
    messages = [{"role": t.role, "content": t.content} for t in turns]
    assistant = [i for i, t in enumerate(turns) if t.role == "assistant"]

    def render(prefix, generation_prompt=False, **encode):
        """The text of `prefix` (or, with `encode` options, the template's own tokenization of it)."""
        if template.plain:
            return _plain(prefix, tokenizer.eos_token or "") + ("<|assistant|>\n" if generation_prompt else "")
        try:
            return tokenizer.apply_chat_template(prefix, chat_template=template.text,
                                                 add_generation_prompt=generation_prompt,
                                                 **(encode or {"tokenize": False}))
        except Exception as e:  # templates raise their own errors, e.g. "System role not supported"
            roles = "/".join(dict.fromkeys(m["role"] for m in messages))
            raise DataError(f"{where}: {template.origin} rejected this conversation ({roles}): {_first_line(e)} — "
                            "remove what it refuses (e.g. a system turn) from the data, or use a template that "
                            "accepts it (data.chat_template)") from None

    text = render(messages)
    if template.marks_generation:
        encoding = render(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                          tokenizer_kwargs={"return_offsets_mapping": True})
        spans = _marked_spans(encoding, len(assistant), template, where)
    else:
        spans = []
        for i in assistant:
            # an opening assistant turn has no conversation before it to render: its span starts at 0
            before = render(messages[:i], generation_prompt=True) if i else ""
            through = render(messages[: i + 1])
            if not (text.startswith(through) and through.startswith(before)):
                raise DataError(f"{where}: {template.origin} renders the start of this conversation differently "
                                "alone than inside the whole (it rewrites earlier turns), so the assistant's "
                                "characters cannot be found by prefix — use a template with {% generation %} "
                                "markers (data.chat_template: FILE.jinja)")
            spans.append((len(before), len(through)))
    return text, [span for span, i in zip(spans, assistant) if turns[i].learn]


def _marked_spans(encoding, n_assistant: int, template: ChatTemplate, where: str) -> list[tuple[int, int]]:
    """Character spans of the runs of tokens the template marked as generated, one per assistant turn."""
    runs: list[tuple[int, int]] = []
    previous = False
    for marked, (start, end) in zip(encoding["assistant_masks"], encoding["offset_mapping"]):
        if marked and end > start:
            if previous:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
        previous = bool(marked)
    if len(runs) != n_assistant:
        raise DataError(f"{where}: {template.origin} marks {len(runs)} generated span(s) for {n_assistant} "
                        "assistant turn(s) — its {% generation %} markers must wrap each assistant message")
    return runs


def _plain(messages: list[dict], eos: str) -> str:
    return "".join(f"<|{m['role']}|>\n{m['content']}" + (eos if m["role"] == "assistant" else "") + "\n"
                   for m in messages)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
