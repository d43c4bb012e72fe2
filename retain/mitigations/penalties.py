"""Pulling the weights back toward where they started: L2-SP, EWC and SI.

All three are one penalty, Σ_k importance_k · (θ_k − θ*_k)², with a different importance:
    L2-SP  1 for every weight (distinct from weight decay, which pulls toward 0)
    EWC    the diagonal Fisher information of the base model on general data
    SI     the path integral of −gradient · step along a short trajectory on general data, per squared move

SI differs from EWC only where the path says something the squared gradient does not: a weight whose
gradients keep one sign moves far and gets a low Ω per squared move; one whose gradients cancel (it sits at
an optimum of the general data) barely moves and gets a high Ω. Its damping ξ must therefore be small next to
the squared moves: with an absolute ξ far above them (1e-3 against ~3e-10 after 16 SGD steps on retain-tiny),
Ω is Σ lr·g² / ξ, the squared-gradient Fisher up to a constant, and normalised SI is EWC. So ξ is set
relative to the mean squared move of the weights (`relative_damping`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from retain.core.paths import resolve_path
from retain.data import collate, general_examples
from retain.mitigations.roles import Context, LossTerm, Setup, Stateful, WritesFiles
from retain.model.weights import snapshot, trainable


def weighted_l2(params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor],
                importance: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Σ importance · (θ − θ*)² over the named tensors; importance None means 1 everywhere."""
    total = None
    for name, p in params.items():
        sq = (p - anchor[name]).pow(2)
        term = (sq * importance[name]).sum() if importance is not None else sq.sum()
        total = term if total is None else total + term
    return total


def general_batches(ctx: Context, file: str, n_batches: int, batch_size: int, device: torch.device | None = None):
    """The first `n_batches` batches of a general-data file, tokenized as the run tokenizes, on `device`."""

    data = general_examples(file, ctx.tokenizer, ctx.max_length)
    for i in range(0, min(len(data), n_batches * batch_size), batch_size):
        batch = collate(data[i: i + batch_size], ctx.tokenizer.pad_token_id)
        yield batch if device is None else {k: v.to(device) for k, v in batch.items()}


def diagonal_fisher(model: torch.nn.Module, batches, params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: the mean over batches of the squared LM-loss gradient."""
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    n = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach().pow(2)
        n += 1
    model.zero_grad(set_to_none=True)
    return {k: v / max(n, 1) for k, v in fisher.items()}


def synaptic_importance(model: torch.nn.Module, batches, params: dict[str, torch.nn.Parameter], lr: float,
                        relative_damping: float = 0.1) -> dict[str, torch.Tensor]:
    """SI's Ω: Σ_t −g_t·Δθ_t / (Δθ_total² + ξ), along plain SGD steps on `batches`; weights restored after.

    ξ = relative_damping · the mean of Δθ_total² over all the weights in `params`, so that it damps only the
    weights that moved much less than the typical one, whatever the step size or model (see the module doc).
    """
    start = {n: p.detach().clone() for n, p in params.items()}
    omega = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
        with torch.no_grad():
            for name, p in params.items():
                if p.grad is None:
                    continue
                step = -lr * p.grad
                omega[name] += -p.grad * step  # contribution of this step to the loss decrease
                p.add_(step)
    with torch.no_grad():
        moved = {n: (p.detach() - start[n]).pow(2) for n, p in params.items()}
        damping = relative_damping * torch.cat([m.flatten() for m in moved.values()]).mean().clamp(min=1e-30)
        importance = {n: omega[n] / (moved[n] + damping) for n, p in params.items()}
        for name, p in params.items():
            p.copy_(start[name])
    model.zero_grad(set_to_none=True)
    return importance


@dataclass(frozen=True)
class L2SPOptions:
    weight: float = field(default=0.01, metadata={
        "help": "loss += weight/2 · Σ (θ − θ0)² over the trainable weights"})

    def validate(self):
        if self.weight <= 0:
            yield "weight", f"must be > 0, got {self.weight}"


@dataclass(frozen=True)
class EWCOptions:
    weight: float = field(default=0.01, metadata={
        "help": "loss += weight/2 · Σ F (θ − θ0)², F the diagonal Fisher"})
    file: str | None = field(default=None, metadata={
        "help": "general data the Fisher is estimated on (JSONL); required unless the model is retain-tiny"})
    batches: int = field(default=16, metadata={"help": "batches of `file` the Fisher is averaged over"})
    batch_size: int = field(default=8, metadata={"help": "examples per Fisher batch"})
    normalize: bool = field(default=True, metadata={
        "help": "divide the Fisher by its mean, so `weight` means what it means for L2-SP"})
    fisher_in: str | None = field(default=None, metadata={
        "help": "online EWC: the fisher.pt of an earlier stage, accumulated with `decay`"})
    decay: float = field(default=1.0, metadata={"help": "online EWC's γ: F = γ·F_previous + F_new"})
    save_fisher: bool = field(default=True, metadata={
        "help": "write <output.dir>/fisher.pt (before normalising), for the next stage's fisher_in"})


    def validate(self):
        if self.weight <= 0:
            yield "weight", f"must be > 0, got {self.weight}"
        if self.batches < 1:
            yield "batches", f"must be >= 1, got {self.batches}"
        if self.file is not None and not resolve_path(self.file).is_file():
            yield "file", f"file not found: {resolve_path(self.file)}"
        if self.fisher_in is not None and not resolve_path(self.fisher_in).is_file():
            yield "fisher_in", f"file not found: {resolve_path(self.fisher_in)}"


@dataclass(frozen=True)
class SIOptions:
    weight: float = field(default=0.01, metadata={
        "help": "loss += weight/2 · Σ Ω (θ − θ0)², Ω SI's importance"})
    file: str | None = field(default=None, metadata={
        "help": "general data SI's path integral runs on (JSONL); required unless the model is retain-tiny"})
    steps: int = field(default=16, metadata={
        "help": "plain SGD steps on `file` whose path integral measures importance (the weights are restored after)"})
    batch_size: int = field(default=8, metadata={"help": "examples per SGD step"})
    step_lr: float = field(default=1e-3, metadata={"help": "learning rate of those SGD steps"})
    relative_damping: float = field(default=0.1, metadata={
        "help": "ξ in Ω = Σ −g·Δθ / (Δθ_total² + ξ), as a share of the mean Δθ_total² of the weights: keeps weights "
                "that barely moved from dominating. A ξ far above the squared moves makes SI's Ω the squared-gradient "
                "Fisher, i.e. EWC"})
    normalize: bool = field(default=True, metadata={
        "help": "divide Ω by its mean, so `weight` means what it means for L2-SP"})
    importance_in: str | None = field(default=None, metadata={
        "help": "SI across stages: the si_importance.pt of an earlier stage, accumulated with `decay`"})
    decay: float = field(default=1.0, metadata={"help": "across stages: Ω = γ·Ω_previous + Ω_new"})
    save_importance: bool = field(default=True, metadata={
        "help": "write <output.dir>/si_importance.pt (before normalising), for the next stage's importance_in"})


    def validate(self):
        if self.weight <= 0:
            yield "weight", f"must be > 0, got {self.weight}"
        if self.relative_damping <= 0:
            yield "relative_damping", f"must be > 0, got {self.relative_damping}"
        if self.file is not None and not resolve_path(self.file).is_file():
            yield "file", f"file not found: {resolve_path(self.file)}"
        if self.importance_in is not None and not resolve_path(self.importance_in).is_file():
            yield "importance_in", f"file not found: {resolve_path(self.importance_in)}"


def accumulate(new: dict[str, torch.Tensor], previous_file: str | None, decay: float) -> dict[str, torch.Tensor]:
    """decay · previous + new, per weight (a weight the file lacks keeps `new`): online importance."""
    if not previous_file:
        return new
    previous = torch.load(resolve_path(previous_file), map_location="cpu", weights_only=True)
    return {n: decay * previous[n].to(v.device) + v if n in previous else v for n, v in new.items()}


class _AnchoredPenalty(Setup, LossTerm, Stateful):
    """Shared wiring: snapshot θ0 of the trainable weights at setup, add weight/2 · weighted_l2.

    θ0 and the importance are state (state_dict): a resumed run keeps the ones it started with.
    """

    name = "penalty"
    per_step = True  # a function of the weights alone: counted once per optimizer step, not per micro-batch

    def __init__(self, options):
        self.options = options
        self.anchor: dict[str, torch.Tensor] = {}
        self.raw_importance: dict[str, torch.Tensor] | None = None  # as measured, before normalising
        self.importance: dict[str, torch.Tensor] | None = None

    def importance_for(self, model, params, ctx: Context):
        return None

    def setup(self, model, ctx: Context) -> None:
        self.anchor = snapshot(model)
        self.raw_importance = self.importance_for(model, trainable(model), ctx)
        self._normalize()

    def _normalize(self) -> None:
        self.importance = self.raw_importance
        if self.importance is not None and self.options.normalize:
            mean = torch.cat([v.flatten() for v in self.importance.values()]).mean().clamp(min=1e-30)
            self.importance = {n: v / mean for n, v in self.importance.items()}

    def state_dict(self) -> dict:
        return {"anchor": self.anchor, "importance": self.raw_importance}

    def load_state_dict(self, state: dict) -> None:
        if state["anchor"].keys() != self.anchor.keys():
            raise ValueError(f"{self.name}: the checkpoint's anchor is not this run's trainable weights")

        def here(saved):  # onto the device and dtype of this run's weights
            return {n: t.to(self.anchor[n].device, self.anchor[n].dtype) for n, t in saved.items()}

        self.anchor = here(state["anchor"])
        self.raw_importance = None if state["importance"] is None else here(state["importance"])
        self._normalize()

    def loss_term(self, model, batch, outputs) -> torch.Tensor:
        params = trainable(model)
        return 0.5 * self.options.weight * weighted_l2(params, self.anchor, self.importance)


class L2SP(_AnchoredPenalty):
    """L2-SP: pull every trainable weight back toward its starting value."""

    name = "l2sp"


class EWC(_AnchoredPenalty, WritesFiles):
    """EWC: pull weights back toward the start, each by its Fisher importance on general data."""

    name = "ewc"

    def importance_for(self, model, params, ctx: Context):
        o = self.options
        batches = general_batches(ctx, o.file, o.batches, o.batch_size, next(model.parameters()).device)
        fisher = diagonal_fisher(model, batches, params)
        return accumulate(fisher, o.fisher_in, o.decay)

    def files(self) -> dict:
        """fisher.pt, the raw Fisher (before normalisation), for an online-EWC next stage."""
        if not self.options.save_fisher or self.raw_importance is None:
            return {}
        return {"fisher.pt": {n: f.cpu() for n, f in self.raw_importance.items()}}


class SI(_AnchoredPenalty, WritesFiles):
    """Synaptic intelligence: pull weights back toward the start, each by its path-integral importance."""

    name = "si"

    def importance_for(self, model, params, ctx: Context):
        o = self.options
        batches = general_batches(ctx, o.file, o.steps, o.batch_size, next(model.parameters()).device)
        omega = synaptic_importance(model, batches, params, o.step_lr, o.relative_damping)
        return accumulate(omega, o.importance_in, o.decay)

    def files(self) -> dict:
        """si_importance.pt, the raw Ω (before normalisation), for a next stage's importance_in."""
        if not self.options.save_importance or self.raw_importance is None:
            return {}
        return {"si_importance.pt": {n: v.cpu() for n, v in self.raw_importance.items()}}
