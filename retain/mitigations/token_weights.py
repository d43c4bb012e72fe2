"""Token-reweighted SFT: each target token's cross-entropy weighted by the model's own prediction there.

The step's task loss becomes, over the micro-batch's N target tokens (y_i the target, p the model's
next-token distribution at position i, sg = stop-gradient: the weight is a number, not a path for the
gradient):

    loss = 1/N · Σ_i w_i · (−log p(y_i))

    DFT   w_i = sg(p(y_i))                       Wu et al. 2025, "On the Generalization of SFT: A Reinforcement
                                                 Learning Perspective with Reward Rectification" (Dynamic
                                                 Fine-Tuning; arXiv 2508.05629): SFT's gradient is a policy gradient with the
                                                 implicit reward 1/p; multiplying by p rectifies it
    EAFT  w_i = sg(H_k(p) / ln k) ** alpha        Diao et al. 2026, "Entropy-Adaptive Fine-Tuning: Resolving
                                                 Confident Conflicts to Mitigate Forgetting" (arXiv
                                                 2601.02151): H_k the entropy of
                                                 p renormalised over its top-k tokens, divided by its largest
                                                 value ln k; a token the model is sure of (low entropy) but that
                                                 the data contradicts barely moves it (k = 20 and alpha = 1 as in
                                                 the authors' code, which divides by 3 ≈ ln 20)
    ASFT  DFT's loss + weight · KL(base‖model)   Zhu et al. 2025, "Anchored Supervised Fine-Tuning": DFT drifts;
                                                 a forward KL to the base at the same targets anchors it (the
                                                 KL of retain.mitigations.distill, weight 0.1 as in LLaMA-Factory)

Measured on the lab (city -> country, facts the base does not know: its probability of each answer token is
near 0; seed 0, 211 steps, full fine-tuning at lr 1e-4 with cosine and 20 warmup steps): EAFT gained +75.5
points on the task against SFT's +70.5 with the same forgetting (-6.8 and -6.6 points of the retained
capabilities); DFT and ASFT learned almost nothing (+2.0, +0.0): p(y) ≈ 0 weights the new answers away.
At lr 1e-3 DFT and ASFT also learned nothing and lost as much as SFT. They suit data the model half-knows.

The weights multiply the per-token loss inside the micro-batch's mean over its targets, so the step
stays exact under gradient accumulation and data parallelism (retain.training.step). They are
functions of the next-token loss: with training.objective dpo or grpo they are refused
(retain.objectives.SFT_ONLY_MITIGATIONS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from retain.mitigations.distill import KLOptions, KLToBase
from retain.mitigations.roles import Context, LossTerm, Setup, TokenWeights


def dft_weights(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) float32 sg(p(y_i)): the model's probability of each target. logits (N, V), targets (N,) ids."""
    with torch.no_grad():
        return F.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1).exp()


def eaft_weights(logits: torch.Tensor, top_k: int = 20, alpha: float = 1.0) -> torch.Tensor:
    """(N,) float32 sg((H_k / ln k) ** alpha): the normalised entropy of each row's top-k tokens.

    logits (N, V); top_k 0 means the whole vocabulary (H / ln V).
    """
    with torch.no_grad():
        k = logits.shape[-1] if top_k == 0 else min(top_k, logits.shape[-1])
        top = logits.float() if k == logits.shape[-1] else logits.float().topk(k, dim=-1).values  # (N, k)
        log_p = F.log_softmax(top, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1)  # (N,) in [0, ln k]
        return (entropy / math.log(k)).clamp(0, 1).pow(alpha)


@dataclass(frozen=True)
class DFTOptions:
    pass


@dataclass(frozen=True)
class EAFTOptions:
    top_k: int = field(default=20, metadata={
        "help": "the entropy is over the model's k likeliest tokens, renormalised, divided by ln k; 0: all V"})
    alpha: float = field(default=1.0, metadata={
        "help": "weight = normalised entropy ** alpha; larger alpha spares confident tokens more"})

    def validate(self):
        if self.top_k == 1 or self.top_k < 0:
            yield "top_k", f"must be 0 (whole vocabulary) or ≥ 2, got {self.top_k}"
        if self.alpha <= 0:
            yield "alpha", f"must be > 0, got {self.alpha}"


@dataclass(frozen=True)
class ASFTOptions:
    weight: float = field(default=0.1, metadata={
        "help": "loss = DFT's loss + weight · KL(base‖model), the KL a mean over the target positions"})
    cache_top_k: int = field(default=0, metadata={
        "help": "> 0: cache the base's top-k log-probs per example; later epochs skip its forward (as kl's)"})

    def validate(self):
        if self.weight <= 0:
            yield "weight", f"must be > 0, got {self.weight} (without the KL, use dft)"
        if self.cache_top_k < 0:
            yield "cache_top_k", f"must be ≥ 0, got {self.cache_top_k}"


class DFT(TokenWeights):
    """Dynamic Fine-Tuning: each target token's loss scaled by the model's probability of it (detached)."""

    def __init__(self, options: DFTOptions):
        self.options = options

    def token_weights(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return dft_weights(logits, targets)


class EAFT(TokenWeights):
    """Entropy-Adaptive Fine-Tuning: each target token's loss scaled by the normalised entropy of the prediction.

    A token the model is sure of but the data contradicts (a confident conflict) barely moves the model.
    """

    def __init__(self, options: EAFTOptions):
        self.options = options

    def token_weights(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return eaft_weights(logits, self.options.top_k, self.options.alpha)


class ASFT(Setup, TokenWeights, LossTerm):
    """Anchored SFT: DFT's token weights plus a forward KL to the base model at the same targets."""

    name = "asft_kl"  # logged as loss/asft_kl: the anchor's share of the loss

    def __init__(self, options: ASFTOptions):
        self.options = options
        # retain's one KL to the base model (its reference, chunking, cache), at every target DFT weights
        self.anchor = KLToBase(KLOptions(weight=options.weight, direction="forward", apply_to="all",
                                         cache_top_k=options.cache_top_k))

    def token_weights(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return dft_weights(logits, targets)

    def setup(self, model, ctx: Context) -> None:
        self.anchor.setup(model, ctx)

    def loss_term(self, model, batch, outputs) -> torch.Tensor:
        return self.anchor.loss_term(model, batch, outputs)
