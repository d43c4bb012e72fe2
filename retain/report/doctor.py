"""`retain doctor CONFIG`: before training, the causes of forgetting that practitioners' accounts of
fine-tuning name, looked for in a run config.

    diagnose(config, probe=32) -> Diagnosis      findings (cause, evidence, the retain setting that
                                                 addresses it) and a recipe adapted to the model and data

What it looks for, each from those accounts' list of causes:
    high_lr            full fine-tuning at a learning rate above the usual range for the model's size
    no_warmup          full fine-tuning that starts at full learning rate
    many_epochs        more than 3 passes over the data (the practice is 1-3)
    little_data        few examples for the steps taken: the model sees each one many times
    narrow_data        most examples share one prompt template: the updates all push one way
    no_protection      no PEFT, no replay, no penalty, no KL, no budget: nothing keeps the old behaviour
    format_gap         a chat model (its tokenizer has a chat template) trained on records not rendered through
                       it, or a base model trained on chat-rendered records: the run teaches a format the model
                       is not used in, and its chat (or plain) behaviour is what the task overwrites
    multi_stage        the model is another run's final/ (or checkpoint): that run's task is now what to keep
    no_dev             no data.dev: overfitting cannot be seen, nor a best checkpoint chosen
    no_retention       no retention budget: forgetting is only measured once training is over
    contradicting_data the base confidently answers the task's prompts otherwise than the data does
    new_knowledge      the base does not know most answers: new facts cost more of what it knew
The last two come from a probe: the base's greedy answers and loss on a sample of the task's examples.
Warnings are advice, not errors: `retain doctor` exits 0 whatever it finds (a bad config is exit 2, and so is
a combination a run refuses). Every objective a run accepts is accepted (DPO's pairs, GRPO's prompts).

Advice never repeats what the config already says: a fix or recipe item whose value the config has is
dropped. The recipe is `key=value` overrides for `retain train CONFIG`; the placeholders it uses (PLACEHOLDERS)
are named under it, and once they are filled the command loads through the same strict schema as any run.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dataclasses
import typing

import torch

from retain.config import RunConfig
from retain.data import (Completion, Conversation, PreferenceExample, Text, open_source, read_shape, render_shape,
                         resolve_chat_template)
from retain.lab.defaults import uses_lab_model
from retain.mitigations import MITIGATIONS, PEFT_METHODS
from retain.mitigations.replay import ReplayOptions
from retain.model.loading import load_model, load_tokenizer
from retain.objectives import make_objective
from retain.core.paths import resolve_path
from retain.preference.data import PairExample, PromptExample, pair_texts
from retain.core.schema import parse_yaml, read_yaml
from retain.config import total_steps_for

PEFT = PEFT_METHODS
PROTECTION = tuple(name for name in MITIGATIONS if name != "early_warnings")  # early warnings only log
# what the recipe leaves to the user, and what to put there
PLACEHOLDERS = {"GENERAL.jsonl": "a JSONL file of general text the model should keep (any shape retain reads)",
                "SUITE": "the capabilities to keep: a bundled suite name (e.g. english), task or suite YAMLs, mmlu, "
                         "lm-eval:NAME"}
FORMAT_RECORDS = 200  # records read to tell how the data is rendered
MAX_EPOCHS = 3  # practitioners' accounts of full fine-tuning: "1-3 epochs are common"
PEFT_LR = (1e-4, 3e-4)  # the usual LoRA range


@dataclass
class Finding:
    cause: str  # one of the names in the module docstring
    evidence: str  # what in this config and data shows it, with numbers
    fix: str  # the retain setting(s) that address it


@dataclass
class Diagnosis:
    facts: dict  # what was measured: parameters, examples, steps, epochs, probe results
    findings: list[Finding] = field(default_factory=list)
    recipe: list[str] = field(default_factory=list)  # key=value overrides for `retain train CONFIG ...`

    def to_json(self) -> dict:
        return {"facts": self.facts, "findings": [asdict(f) for f in self.findings], "recipe": self.recipe,
                "placeholders": {name: PLACEHOLDERS[name] for name in placeholders(self.recipe)}}


def full_ft_lr_range(n_params: int) -> tuple[float, float]:
    """The usual learning-rate range for full fine-tuning at this size. Seed 003: 1e-5 to 5e-6 for LLMs; a
    small model tolerates more (the lab's 4M-parameter model kept most at 1e-4 and lost 79 points at 1e-3)."""
    if n_params >= 1e9:
        return 5e-6, 1e-5
    if n_params >= 1e8:
        return 1e-5, 3e-5
    return 3e-5, 1e-4


def recommended_epochs(n_examples: int) -> int:
    return 3 if n_examples < 1_000 else 2 if n_examples < 10_000 else 1


def template(prompt: str) -> str:
    """A prompt's shape: its words with names and numbers blanked ('Manas is a city in' -> '_ is a city in')."""
    words = re.findall(r"\w+|[^\w\s]", prompt)
    return " ".join("_" if (w[:1].isupper() or w.isdigit()) else w.lower() for w in words)


def other_run(model_name: str) -> Path | None:
    """The run directory whose final/ or checkpoints/step-N/ `model_name` is (it holds that run's config.yaml)."""
    path = Path(model_name).expanduser()
    for candidate in (path.parent, path.parent.parent):
        if path.is_dir() and (candidate / "config.yaml").is_file() and (candidate / "metrics.jsonl").exists():
            return candidate
    return None


def diagnose(config: RunConfig, probe: int = 32) -> Diagnosis:
    """Every finding for `config`; `probe` task examples are answered by the base model (0: no probe)."""
    t, m = config.training, config.mitigations
    objective = make_objective(config)  # the run's own check: what a run refuses is refused here (exit 2)
    tokenizer = load_tokenizer(config.model)
    data = objective.load(config.data.train, tokenizer, config.data)  # SFT's records, DPO's pairs, GRPO's prompts
    examples = data.examples
    # what the analyses read: an example with a target (a pair's chosen side); GRPO's prompts have none
    supervised = [e.chosen if isinstance(e, PairExample) else e for e in examples if not isinstance(e, PromptExample)]
    steps = total_steps_for(config, len(examples), 1)
    # the passes asked for; with max_steps, the passes those steps make
    epochs = t.epochs if t.max_steps is None else steps * t.batch_size * t.grad_accum / max(len(examples), 1)
    model = load_model(config.model)
    n_params = sum(p.numel() for p in model.parameters())
    peft = [name for name in PEFT if name in m]
    prompts = ([tokenizer.decode(e.input_ids[:first_target(e)], skip_special_tokens=True) for e in supervised]
               or [e.prompt for e in examples if isinstance(e, PromptExample)])
    shapes = Counter(template(p) for p in prompts if p.strip())
    top_shape, top_count = shapes.most_common(1)[0] if shapes else ("", 0)
    facts = {"parameters": n_params, "examples": len(examples), "steps": steps, "epochs": round(epochs, 2),
             "lr": t.lr, "method": peft[0] if peft else "full fine-tuning", "objective": t.objective,
             "mitigations": sorted(m), "most_common_prompt_template": top_shape,
             "template_share": top_count / max(len(examples), 1)}
    d = Diagnosis(facts, training_findings(config, n_params, peft, len(examples), steps, epochs, top_shape, top_count))
    add = d.findings.append
    if not set(m) & set(PROTECTION):
        add(Finding("no_protection", "no mitigation: every weight moves freely toward the task, with nothing "
                    "pulling toward what the base knew", "mitigations.lora, mitigations.replay, mitigations.kl "
                    "(any of them; LoRA and a low LR protected most on the lab, docs/mitigations.md)"))
    previous = other_run(config.model.name)
    if previous is not None:
        add(multi_stage(previous, config))
    if config.data.dev is None:
        add(Finding("no_dev", "no data.dev: overfitting on the task cannot be seen, and a retention budget "
                    "can only rank its checkpoints by recency", "data.dev=FILE (held-out task examples)"))
    gap = format_gap(config, tokenizer)
    if gap is not None:
        add(gap)
        facts["format_gap"] = gap.cause
    if not holds_a_budget(m):
        add(Finding("no_retention", "no retention budget: forgetting is measured only after training, when "
                    "the better checkpoints are gone", "mitigations.retention (suite, max_drop_points, "
                    "action: early_stop or repair) and mitigations.early_warnings"))
    if probe and supervised:
        facts["probe"] = probe_base(model, tokenizer, supervised, probe)
        d.findings += probe_findings(facts["probe"])
    d.recipe = recipe(config, n_params, len(examples), bool(peft), gap)
    return d


def training_findings(config: RunConfig, n_params: int, peft: list[str], n_examples: int, steps: int, epochs: float,
                      top_shape: str, top_count: int) -> list[Finding]:
    """The recipe's causes of forgetting the source texts name: a high learning rate, no warmup, many epochs,
    little data, narrow data. Advice on replay says what the config does not have yet."""
    t, m = config.training, config.mitigations
    found = []
    add = found.append
    low, high = full_ft_lr_range(n_params)
    replay = m.get("replay")
    mix_in = (", ".join(replay_items(config)) if replay is None else
              f"more general data than mitigations.replay.ratio's {replay.ratio:g}" if replay.ratio < 0.2 else
              "general data of more kinds in mitigations.replay")
    if not peft and t.lr > high:
        add(Finding("high_lr", f"full fine-tuning of {n_params:,} parameters at lr {t.lr:g}, {t.lr / high:.0f}x the "
                    f"top of the usual {low:g}-{high:g} for this size (practitioners' range for full fine-tuning of LLMs: 1e-5 to 5e-6)",
                    f"training.lr={high:g}, or mitigations.lora (then lr {PEFT_LR[0]:g}-{PEFT_LR[1]:g})"))
    elif peft and t.lr > 3 * PEFT_LR[1]:
        add(Finding("high_lr", f"{peft[0]} at lr {t.lr:g}, above the usual {PEFT_LR[0]:g}-{PEFT_LR[1]:g} for adapters",
                    f"training.lr={PEFT_LR[0]:g}"))
    if not peft and t.warmup_steps == 0:
        add(Finding("no_warmup", "full fine-tuning with warmup_steps 0: the first steps move the weights at "
                    "full learning rate, with AdamW's moment estimates not yet settled",
                    f"training.warmup_steps={max(1, round(0.05 * steps))} (about 5% of the {steps} steps)"))
    if epochs > MAX_EPOCHS:
        fewer = epoch_settings(config, recommended_epochs(n_examples), n_examples)
        add(Finding("many_epochs", f"{epochs:.1f} epochs ({steps} steps x {t.batch_size * t.grad_accum} examples "
                    f"over {n_examples} examples): each example is seen {epochs:.0f} times",
                    f"{fewer[0]}, or mitigations.retention with action: early_stop to stop when the budget stops "
                    "improving"))
    if n_examples < 1_000 and epochs > 1:
        add(Finding("little_data", f"{n_examples} examples, passed over {epochs:.1f} times: a small set "
                    "is memorised before it generalises, and every pass pulls further from the base",
                    f"{mix_in} (10-20% general data), fewer epochs, or more varied data"))
    if top_count >= 0.5 * n_examples and n_examples >= 10:
        add(Finding("narrow_data", f"{top_count / n_examples:.0%} of the prompts have one shape: "
                    f"{top_shape!r}", f"{mix_in} (general data mixed in), and a retention suite that covers "
                    "what the model should keep"))
    return found


def epoch_settings(config: RunConfig, epochs: int, n_examples: int) -> list[str]:
    """`epochs` passes as the config counts them: training.epochs, or max_steps when the config sets steps
    (then epochs is not read)."""
    t = config.training
    if t.max_steps is None:
        return [f"training.epochs={epochs}"]
    return [f"training.max_steps={max(1, math.ceil(epochs * n_examples / (t.batch_size * t.grad_accum)))}"]


def current_value(config: RunConfig, dotted: str):
    """The config's value at a dotted key (a mitigation absent: None)."""
    node = config
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else getattr(node, key, None)
        if node is None:
            return None
    return node


def already_set(config: RunConfig, item: str) -> bool:
    """Whether `key=value` is what the config has already (numbers compared as numbers: 1e-4 == 0.0001)."""
    key, raw = item.split("=", 1)
    have, want = current_value(config, key), parse_yaml(raw, item, with_line=False)
    if isinstance(have, (int, float)) and not isinstance(have, bool) and isinstance(want, str):
        try:
            want = float(want)
        except ValueError:
            return False
    return have is not None and have == want


def self_rehearsal() -> bool:
    """Whether this retain's replay can write its own data (`mitigations.replay.source: self`)."""
    source = {f.name: f for f in dataclasses.fields(ReplayOptions)}.get("source")
    return source is not None and "self" in typing.get_args(typing.get_type_hints(ReplayOptions)["source"])


def record_shapes(config: RunConfig) -> list:
    """The shapes (Text, Completion, Conversation) of the first FORMAT_RECORDS records of data.train; a
    preference pair as its prompt and chosen answer; a record of no SFT shape (GRPO's bare prompts) skipped."""
    src, shapes = open_source(config.data.train), []
    for k, (where, record) in enumerate(src.rows):
        if k == FORMAT_RECORDS:
            break
        try:
            shape = read_shape(src, record, config.data.format, where)
        except Exception:  # noqa: BLE001 — the loader has accepted the data already; this is only a look
            continue
        shapes.append(pair_texts(shape, shape.chosen) if isinstance(shape, PreferenceExample) else shape)
    return shapes


def format_gap(config: RunConfig, tokenizer) -> Finding | None:
    """A chat model trained on records not rendered through its chat template, or a base model trained on
    chat-rendered records (the template of data.chat_template, or retain's plain one for conversations)."""
    own = resolve_chat_template(tokenizer)  # the model's own, as it is used: not the data's override
    used = resolve_chat_template(tokenizer, resolve_path(config.data.chat_template) if config.data.chat_template
                                 else None)
    shapes = [sh for sh in record_shapes(config) if isinstance(sh, (Text, Completion, Conversation))]
    if not shapes:
        return None
    chat = config.data.chat
    of = f"{'the first ' if len(shapes) == FORMAT_RECORDS else ''}{len(shapes)} records"

    def through_template(sh) -> bool:
        return isinstance(sh, Conversation) or (isinstance(sh, Completion) and chat)

    def text_of(sh, as_chat: bool) -> str:
        text, _ = render_shape(sh, tokenizer, used if as_chat else own, "doctor", as_chat)
        return repr(text[:200] + ("…" if len(text) > 200 else ""))

    rehearse = ("" if getattr(config.mitigations.get("replay"), "source", None) == "self" else  # has it already
                ", and mitigations.replay.source=self (the base's own chat answers and plain text, rehearsed)"
                if self_rehearsal() else ", and mitigations.replay with general data in the model's chat format")
    if not own.plain:
        plain = [sh for sh in shapes if not through_template(sh)]
        if len(plain) < 0.5 * len(shapes):
            return None
        example = next((sh for sh in plain if isinstance(sh, Completion)), None)
        if example is None:  # plain text only: data.chat has nothing to render
            return Finding("format_gap", f"{config.model.name} has a chat template, but {len(plain)} of "
                           f"{of} are plain text, trained outside it: e.g. {text_of(plain[0], False)}",
                           f"give the task as conversations{rehearse}")
        return Finding("format_gap", f"{config.model.name} has a chat template, but {len(plain)} of {of} "
                       f"are trained as plain text, not through it (data.chat is false): as trained "
                       f"{text_of(example, False)}; through its chat template {text_of(example, True)}",
                       f"if the model is used in chat: data.chat=true (each prompt/response becomes a user/assistant "
                       f"exchange){rehearse}")
    chatted = [sh for sh in shapes if through_template(sh)]
    if len(chatted) < 0.5 * len(shapes):
        return None
    example = chatted[0]
    as_used = (repr(example.prompt + example.completion) if isinstance(example, Completion)
               else repr("\n".join(turn.content for turn in example.turns)[:200]))
    return Finding("format_gap", f"{config.model.name} has no chat template (a base model, used on plain text), but "
                   f"{len(chatted)} of {of} are rendered through {used.origin}: as trained "
                   f"{text_of(example, True)}; as the model reads text {as_used}",
                   ("data.chat=false (prompt and response as plain text), and " if chat else
                    "prompt/response records instead of conversations, and ")
                   + "mitigations.replay with plain general text, so the model keeps reading text as before")


def multi_stage(previous: Path, config: RunConfig) -> Finding:
    before = read_yaml(previous / "config.yaml") or {}
    task = (before.get("data") or {}).get("train", "?")
    fisher = previous / "fisher.pt"
    ewc = (f"mitigations.ewc.fisher_in={fisher}" if fisher.is_file() else
           f"mitigations.ewc (and fisher_in: {previous}/fisher.pt, written by a stage with ewc)")
    return Finding("multi_stage", f"model.name is the output of the run in {previous} (trained on {task}). retain "
                   "starts this stage with fresh optimizer state (AdamW's moments are not carried over, the reset "
                   "practitioners recommend), but that stage's task is now something to keep, and nothing keeps it",
                   f"its dev data in mitigations.retention.suite, mitigations.replay.file={task}, or {ewc}")


def first_target(example) -> int:
    """Index of the first token that carries the loss (the prompt is everything before it)."""
    return next((i for i, label in enumerate(example.labels) if label != -100), len(example.labels))


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" .,;:!?\"'")


@torch.no_grad()
def probe_base(model, tokenizer, examples: list, n: int) -> dict:
    """The base model's answers to up to `n` task prompts (spread over the data), against the targets.

    Per example: the target's mean loss per token under the base, the base's own greedy answer (as many
    tokens as the target) and its mean loss per token. An answer *contradicts* the data when it differs from
    the target and the base holds it confidently (loss < 0.7 nats/token, p > 0.5) and at least 1 nat/token
    more likely than the target; it is *new* to the base when it differs without that confidence."""
    model.eval()
    device = next(model.parameters()).device
    usable = [e for e in examples if 1 < first_target(e) < len(e.input_ids)]
    chosen = usable[:: max(1, len(usable) // n)][:n]
    rows = []
    for e in chosen:
        start = first_target(e)
        ids = torch.tensor([e.input_ids], device=device)
        target = e.input_ids[start:]
        if target and target[-1] == tokenizer.eos_token_id and len(target) > 1:
            target = target[:-1]  # the answer, not the end-of-text every target carries
        target_loss = token_loss(model, ids[:, : start + len(target)], start)
        generated = model.generate(ids[:, :start], attention_mask=torch.ones_like(ids[:, :start]), do_sample=False,
                                   max_new_tokens=len(target), pad_token_id=tokenizer.pad_token_id)
        own = generated[:, : start + len(target)]
        own_loss = token_loss(model, own, start)
        answer, wanted = tokenizer.decode(own[0, start:], skip_special_tokens=True), tokenizer.decode(target)
        agrees = normalise(answer) == normalise(wanted)
        confident = own_loss < 0.7 and target_loss - own_loss >= 1.0
        rows.append({"prompt": tokenizer.decode(e.input_ids[:start], skip_special_tokens=True), "target": wanted,
                     "base_answer": answer, "target_loss": target_loss, "answer_loss": own_loss,
                     "verdict": "agrees" if agrees else "contradicts" if confident else "new"})
    counts = Counter(r["verdict"] for r in rows)
    return {"examples": len(rows), **{k: counts.get(k, 0) for k in ("agrees", "contradicts", "new")},
            "mean_target_loss": sum(r["target_loss"] for r in rows) / max(len(rows), 1), "rows": rows}


def token_loss(model, ids: torch.Tensor, start: int) -> float:
    """Mean loss per token of ids[:, start:] given what precedes it. ids: (1, T)."""
    logits = model(input_ids=ids).logits[0, start - 1: -1].float()  # (T - start, V)
    return float(torch.nn.functional.cross_entropy(logits, ids[0, start:]))


def probe_findings(probe: dict) -> list[Finding]:
    n = probe["examples"]
    if not n:
        return []
    out = []
    rows = probe["rows"]

    def shown(verdict):  # two examples of what the base said against what the data says
        return "; ".join([f"{r['prompt']!r} -> base {r['base_answer']!r}, data {r['target']!r}"
                          for r in rows if r["verdict"] == verdict][:2])

    if probe["contradicts"] >= max(1, 0.2 * n):
        out.append(Finding("contradicting_data", f"the base confidently answers {probe['contradicts']} of {n} "
                           f"sampled prompts otherwise than the data (e.g. {shown('contradicts')}): training "
                           "overwrites what it knew", "check the data for errors; if the new answers are right, "
                           "mitigations.kl (weight 0.3-1) and mitigations.replay keep the rest of what it knew"))
    if probe["new"] >= 0.5 * n:
        out.append(Finding("new_knowledge", f"the base does not know {probe['new']} of {n} sampled answers (mean "
                           f"loss {probe['mean_target_loss']:.2f} nats/token on the targets; e.g. {shown('new')}): "
                           "new facts take larger updates than a new format", "mitigations.replay and "
                           "mitigations.kl to hold the rest while they are learned; mitigations.retention to see "
                           "what they cost"))
    return out


def recipe(config: RunConfig, n_params: int, n_examples: int, peft: bool, gap: Finding | None = None) -> list[str]:
    """Seed 003's practice as overrides for this model and data: a low LR (or LoRA), 1-3 epochs, warmup,
    10-20% general data, and a budget that ends at the best point; data.chat when the format gap says so.
    What the config already has is left out; the rest loads as it is once PLACEHOLDERS are filled."""
    t, m = config.training, config.mitigations
    epochs = recommended_epochs(n_examples)
    steps = max(1, math.ceil(epochs * n_examples / (t.batch_size * t.grad_accum)))
    lab = uses_lab_model(config.model)  # the lab's general data and suite are filled in by retain
    out = []
    if peft or n_params >= 1e9:
        out += [] if peft else ["mitigations.lora.r=16", "mitigations.lora.alpha=32"]
        out.append(f"training.lr={PEFT_LR[0]:g}")
    else:
        out.append(f"training.lr={full_ft_lr_range(n_params)[1]:g}")
    out += epoch_settings(config, epochs, n_examples)
    out += [f"training.warmup_steps={max(1, round(0.05 * steps))}", "training.scheduler=cosine"]
    if gap is not None and "data.chat=true" in gap.fix and not lab:  # the lab's tasks are scored as plain text
        out.append("data.chat=true")
    if "replay" not in m:
        out += replay_items(config)
    if not holds_a_budget(m):
        out += ["mitigations.retention.action=early_stop", f"mitigations.retention.every={max(1, steps // 8)}"]
        if "retention" in m:  # checks that only measured: their `ignore`s go, the budget's defaults hold
            out.append("mitigations.retention.tasks={}")
        if not lab:
            out.append("mitigations.retention.suite=SUITE")
    if "early_warnings" not in m:
        out.append(f"mitigations.early_warnings.every={max(1, steps // 20)}")
        if not lab:
            out.append("mitigations.early_warnings.general=GENERAL.jsonl")
    return [item for item in out if not already_set(config, item)]


def replay_items(config: RunConfig) -> list[str]:
    """Replay for a config that has none: the model's own rehearsal at its measured defaults (half of each batch,
    KL to the base on it) where this retain writes one; else 15% general data (the source texts' 10-20%), the lab's
    own for the lab's model, a file the user names for any other."""
    if uses_lab_model(config.model):
        return ["mitigations.replay.ratio=0.15"]
    if self_rehearsal():
        return ["mitigations.replay.source=self"]
    return ["mitigations.replay.ratio=0.15", "mitigations.replay.file=GENERAL.jsonl"]


def holds_a_budget(m: dict) -> bool:
    """A retention budget in force: one, and not checks that only measure (every task given `ignore`)."""
    r = m.get("retention")
    return r is not None and not (r.tasks and all(v == "ignore" for v in r.tasks.values()))


def placeholders(items: list[str]) -> list[str]:
    """The PLACEHOLDERS that `items` (the recipe) use, in PLACEHOLDERS' order."""
    return [name for name in PLACEHOLDERS if any(item.endswith("=" + name) for item in items)]


def render(d: Diagnosis, config_path: str) -> str:
    """The diagnosis as text for a terminal."""
    f = d.facts
    lines = [f"{config_path}: {f['method']} of {f['parameters']:,} parameters, {f['examples']} examples, "
             f"{f['steps']} steps ({f['epochs']} epochs) at lr {f['lr']:g}"]
    if "probe" in f:
        p = f["probe"]
        lines.append(f"base model on {p['examples']} task prompts: {p['agrees']} agree with the data, "
                     f"{p['contradicts']} contradict it, {p['new']} new to it")
    lines.append("")
    for k, finding in enumerate(d.findings, 1):
        lines += [f"{k}. {finding.cause}: {finding.evidence}", f"   set: {finding.fix}"]
    if not d.findings:
        lines.append("no cause of forgetting found in this config")
    lines += ["", "suggested recipe (common practice, fitted to this model and data):",
              f"  retain train {config_path} " + " ".join(d.recipe)]
    to_fill = placeholders(d.recipe)
    if to_fill:
        lines.append("  fill in: " + "; ".join(f"{name} = {PLACEHOLDERS[name]}" for name in to_fill))
    return "\n".join(lines)
