"""Distillation from the frozen base model: keep the fine-tune's next-token distribution near the base's.

Under PEFT the reference is the same model with its adapters disabled (no second copy); for full
fine-tuning, a frozen copy made before the first step. `cache_top_k` stores the base's top-k
log-probs of each example the first time it is seen, so later epochs skip the reference forward.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from retain.mitigations.roles import Context


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                  temperature: float = 1.0, direction: str = "forward") -> torch.Tensor:
    """Mean over masked positions of KL(teacher‖student) ("forward") or KL(student‖teacher) ("reverse").

    logits: (B, T, V); mask: (B, T) bool. Scaled by T² so the gradient size does not depend on T.
    """
    # Only the masked positions are normalised: with response-only targets that is a fraction of
    # B*T rows of V logits, where a small model spends most of the KL's time.
    mask = mask.to(student_logits.device)
    s = F.log_softmax(student_logits[mask].float() / temperature, dim=-1)  # (N, V)
    t = F.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)
    p, q = (t, s) if direction == "forward" else (s, t)
    per_position = (p.exp() * (p - q)).sum(-1)  # (N,)
    return per_position.sum() / max(int(mask.sum()), 1) * temperature ** 2


def top_k_kl(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor,
             mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL between teacher and student, both renormalised over the teacher's top-k tokens.

    student_logits: (B, T, V); teacher_ids, teacher_logprobs: (B, T, k); mask: (B, T).
    """
    mask = mask.to(student_logits.device)
    s = F.log_softmax(student_logits[mask].float().gather(-1, teacher_ids[mask]) / temperature, dim=-1)  # (N, k)
    t = F.log_softmax(teacher_logprobs[mask] / temperature, dim=-1)
    per_position = (t.exp() * (t - s)).sum(-1)
    return per_position.sum() / max(int(mask.sum()), 1) * temperature ** 2


def positions(batch: dict, on: str) -> torch.Tensor:
    """(B, T) bool: the positions whose next token is a training target, on task/replay/all examples."""
    mask = torch.zeros_like(batch["labels"], dtype=torch.bool)
    mask[:, :-1] = batch["labels"][:, 1:] != -100
    if on != "all":
        chosen = batch["replay"] if on == "replay" else ~batch["replay"]
        mask &= chosen[:, None].to(mask.device)
    return mask


@dataclass(frozen=True)
class KLOptions:
    weight: float = field(default=0.5, metadata={"help": "loss += weight · KL, the KL a mean over target positions"})
    temperature: float = field(default=1.0, metadata={
        "help": "softens both distributions before the KL; the term is scaled by T² so its gradient keeps its size"})
    direction: Literal["forward", "reverse"] = field(default="forward", metadata={
        "help": "forward: KL(base‖fine-tune), covers the base's modes; reverse: KL(fine-tune‖base)"})
    apply_to: Literal["task", "replay", "all"] = field(default="all", metadata={
        "help": "whose target positions count: task examples, replay examples, or all"})
    cache_top_k: int = field(default=0, metadata={
        "help": "> 0: cache the base's top-k log-probs per example; later epochs skip its forward (forward KL only)"})

    def validate(self):
        if self.weight <= 0:
            yield "weight", f"must be > 0, got {self.weight}"
        if self.temperature <= 0:
            yield "temperature", f"must be > 0, got {self.temperature}"
        if self.cache_top_k and self.direction != "forward":
            yield "cache_top_k", "the cached teacher supports forward KL only"


class KLToBase:
    """KL divergence to the frozen base model's next-token distribution, added to the loss."""

    name = "kl"

    def __init__(self, options: KLOptions):
        self.options = options
        self.reference = None  # frozen copy (full fine-tuning) or None (PEFT: adapters disabled)
        self.cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def setup(self, model, ctx: Context) -> None:
        from peft import PeftModel

        if not isinstance(model, PeftModel):
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def teacher_logits(self, model, batch) -> torch.Tensor:
        ref = self.reference or model
        was_training = ref.training
        ref.eval()  # no dropout in the reference
        with (model.disable_adapter() if self.reference is None else nullcontext()):
            logits = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ref.train(was_training)
        return logits

    def cached_teacher(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, logprobs) of the base's top-k per position, computed once per distinct example."""
        k = self.options.cache_top_k
        keys = [tuple(row[m.bool()].tolist()) for row, m in zip(batch["input_ids"], batch["attention_mask"])]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            logits = self.teacher_logits(model, {n: batch[n][missing] for n in ("input_ids", "attention_mask")})
            top = F.log_softmax(logits.float(), -1).topk(k, dim=-1)
            for j, i in enumerate(missing):
                n = len(keys[i])
                self.cache[keys[i]] = (top.indices[j, :n].cpu(), top.values[j, :n].cpu())
        B, T = batch["input_ids"].shape
        ids = torch.zeros((B, T, k), dtype=torch.long)
        values = torch.zeros((B, T, k))
        for i, key in enumerate(keys):
            cached_ids, cached_values = self.cache[key]
            ids[i, : len(key)], values[i, : len(key)] = cached_ids, cached_values
        device = batch["input_ids"].device
        return ids.to(device), values.to(device)

    def loss_term(self, model, batch, outputs) -> torch.Tensor:
        o = self.options
        mask = positions(batch, o.apply_to)
        if o.cache_top_k:
            ids, logprobs = self.cached_teacher(model, batch)
            kl = top_k_kl(outputs.logits, ids, logprobs, mask, o.temperature)
        else:
            kl = kl_divergence(outputs.logits, self.teacher_logits(model, batch), mask, o.temperature, o.direction)
        return o.weight * kl
