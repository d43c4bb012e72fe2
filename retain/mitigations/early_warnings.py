"""Early warnings: cheap signals, logged while training, that forecast forgetting before a suite is run.

Every `every` steps (and at the last step) it logs, without ever stopping the run:
    warn/kl_general      KL(base ‖ model) per token on a fixed small batch of general text
    warn/kl_task         the same on a fixed sample of the task's own examples (their target tokens)
    warn/drift/<layer>   ‖θ − θ0‖ / ‖θ0‖ of each layer's trainable weights (embed, layer0..N, head, other)
    warn/drift/all       the same over all trainable weights
A KL on general text that climbs while the task loss falls is forgetting under way; drift concentrated
in a few layers says where. (Under PEFT the trainable weights are the adapter's, so drift is the
adapter's own growth; the KLs mean the same either way.)

The base's distribution is taken once, in setup, from the model as it starts (before the first step), with a
PEFT adapter switched off (a soft prompt starts random, not as the identity), and stored as its top-k tokens
per position plus one bucket for the rest: the KL of those k + 1 outcomes is a lower bound of the full KL,
exact as k reaches the vocabulary, and costs k numbers per position instead of the vocabulary.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from retain.data import collate, general_examples
from retain.mitigations.replay import GENERAL_DATA_HELP
from retain.mitigations.roles import Context, DataTransform, Decision, Monitor, Setup
from retain.model.reference import Reference
from retain.model.weights import trainable
from retain.core.paths import resolve_path


def layer_of(name: str) -> str:
    """The layer a parameter belongs to, by its name: 'model.layers.3.mlp.up_proj.weight' -> 'layer3'."""
    match = re.search(r"\.(?:layers|h|blocks|layer)\.(\d+)\.", name)
    if match:
        return f"layer{match.group(1)}"
    if "embed" in name or "wte" in name or "wpe" in name:
        return "embed"
    if "lm_head" in name:
        return "head"
    return "other"


def drift_by_layer(params: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> dict[str, float]:
    """‖θ − θ0‖ / ‖θ0‖ per layer and over all ('all'); a layer that starts at all zeros gets ‖θ‖ itself."""
    moved: dict[str, float] = {}
    size: dict[str, float] = {}
    for name, p in params.items():
        layer = layer_of(name)
        moved[layer] = moved.get(layer, 0.0) + float((p.detach().float() - start[name].float()).pow(2).sum())
        size[layer] = size.get(layer, 0.0) + float(start[name].float().pow(2).sum())
    moved["all"], size["all"] = sum(moved.values()), sum(size.values())
    return {layer: (moved[layer] / size[layer]) ** 0.5 if size[layer] > 0 else moved[layer] ** 0.5
            for layer in moved}


def top_k_reference(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, log-probs) of the k most likely tokens at each position. logits: (N, V) -> two (N, k)."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    return top.indices, top.values


def bucketed_kl(ref_ids: torch.Tensor, ref_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(reference ‖ model) over the reference's top-k tokens plus one bucket for the
    rest of the vocabulary. ref_ids, ref_logprobs: (N, k); logits: (N, V) of the model. Returns a scalar."""
    q = F.log_softmax(logits.float(), dim=-1).gather(-1, ref_ids)  # (N, k)
    p = ref_logprobs

    def rest(logprobs):  # log of the probability outside the top k, kept away from log(0)
        return torch.log1p(-logprobs.exp().sum(-1).clamp(max=1 - 1e-6))

    p_rest, q_rest = rest(p), rest(q)
    per_position = (p.exp() * (p - q)).sum(-1) + p_rest.exp() * (p_rest - q_rest)  # (N,)
    return per_position.clamp(min=0).mean()


@dataclass(frozen=True)
class EarlyWarningsOptions:
    every: int = field(default=10, metadata={"help": "log the warnings every this many optimizer steps"})
    general: str | None = field(default=None, metadata={
        "help": "general text for warn/kl_general (" + GENERAL_DATA_HELP + "); required unless retain-tiny"})
    examples: int = field(default=16, metadata={
        "help": "examples in each fixed batch (general text, and the task's own sample)"})
    task: bool = field(default=True, metadata={"help": "also log warn/kl_task on a fixed sample of the task data"})
    top_k: int = field(default=256, metadata={
        "help": "base tokens kept per position for the KL (the rest is one bucket): memory vs exactness"})
    batch_size: int = field(default=16, metadata={"help": "examples per forward pass"})


    def validate(self):
        for key in ("every", "examples", "top_k", "batch_size"):
            if getattr(self, key) < 1:
                yield key, f"must be >= 1, got {getattr(self, key)}"
        if self.general is not None and not resolve_path(self.general).is_file():
            yield "general", f"file not found: {resolve_path(self.general)}"


class EarlyWarnings(DataTransform, Setup, Monitor):
    """Logs warn/* metrics at its cadence; never stops the run, never changes the weights."""

    def __init__(self, options: EarlyWarningsOptions):
        self.options = options
        self.task_sample: list = []

    def transform_data(self, examples: list, ctx: Context) -> list:
        """Remembers a fixed sample of the task's examples (not replayed ones); the data passes unchanged."""
        task = [e for e in examples if not getattr(e, "replay", False)]
        self.task_sample = random.Random(0).sample(task, min(self.options.examples, len(task)))
        return examples

    def setup(self, model, ctx: Context) -> None:
        o = self.options
        general = general_examples(o.general, ctx.tokenizer, ctx.max_length)
        self.pad_id = ctx.tokenizer.pad_token_id
        self.sets = {"general": general[: o.examples]}
        if o.task and self.task_sample:
            self.sets["task"] = self.task_sample
        self.start = {n: p.detach().clone() for n, p in trainable(model).items()}
        self.reference = {name: self._reference(model, examples) for name, examples in self.sets.items()}

    def _batches(self, examples: list):
        """(batch on the model's device, (B, T) bool mask of positions whose next token is a target)."""

        for i in range(0, len(examples), self.options.batch_size):
            batch = collate(examples[i: i + self.options.batch_size], self.pad_id)
            mask = torch.zeros_like(batch["labels"], dtype=torch.bool)
            mask[:, :-1] = batch["labels"][:, 1:] != -100
            yield batch, mask

    @torch.no_grad()
    def _logits(self, model, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
        # (B, T, V); prompt tuning prepends its virtual tokens' positions, which score no text
        logits = model(**inputs).logits[:, -mask.shape[1]:]
        return logits[mask.to(device)]  # (N, V): only the scored positions

    def _reference(self, model, examples: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The base's top-k at the examples' scored positions: at setup `model` is still the base (no copy kept)."""
        with Reference(model, copy=False).model(model) as base:
            return [top_k_reference(self._logits(base, batch, mask), self.options.top_k) for batch, mask in
                    self._batches(examples)]

    @torch.no_grad()
    def _kl(self, model, name: str) -> float:
        total, n = 0.0, 0
        for (batch, mask), (ids, logprobs) in zip(self._batches(self.sets[name]), self.reference[name]):
            kl = bucketed_kl(ids, logprobs, self._logits(model, batch, mask))
            total, n = total + float(kl) * len(ids), n + len(ids)
        return total / max(n, 1)

    def check(self, model, step: int, last_step: bool) -> Decision | None:
        if step % self.options.every and not last_step:
            return None
        was_training = model.training
        model.eval()
        metrics = {f"warn/kl_{name}": self._kl(model, name) for name in self.sets}
        model.train(was_training)
        metrics.update({f"warn/drift/{layer}": value
                        for layer, value in drift_by_layer(trainable(model), self.start).items()})
        return Decision(metrics=metrics)
