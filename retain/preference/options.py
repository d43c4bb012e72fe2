"""The options of the preference objectives: `training.dpo` and `training.grpo` (used when `training.objective`
names them). Plain frozen dataclasses with a help per field, read strictly like every config section.

They live here, beside the code they configure, and import nothing heavy: the config schema imports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from retain.preference.rewards import reward_problems  # the term table knows its own options


@dataclass(frozen=True)
class DPOOptions:
    beta: float = field(default=0.1, metadata={
        "help": "β: the strength of DPO's implicit KL leash to the reference; smaller lets the model drift further"})
    loss_type: Literal["sigmoid", "ipo"] = field(default="sigmoid", metadata={
        "help": "sigmoid: the DPO paper's −log σ(β·margin); ipo: (length-normalised margin − 1/(2β))², as TRL"})
    sft_weight: float = field(default=0.0, metadata={
        "help": "loss += sft_weight · the chosen answers' per-token NLL (RPO; TRL's loss_type [sigmoid, sft]): "
                "pulls the policy toward the chosen answers, not only away from the rejected ones"})
    precompute_reference: bool = field(default=False, metadata={
        "help": "compute the reference log-probs of every pair once before the first step (no reference forward "
                "or frozen copy while training)"})

    def validate(self):
        if not (math.isfinite(self.beta) and self.beta > 0):
            yield "beta", f"must be a finite number > 0, got {self.beta}"
        if not (math.isfinite(self.sft_weight) and self.sft_weight >= 0):
            yield "sft_weight", f"must be a finite number >= 0, got {self.sft_weight}"


@dataclass(frozen=True)
class GRPOOptions:
    group_size: int = field(default=4, metadata={
        "help": "G: completions sampled per prompt; advantages are rewards normalised within each group"})
    max_new_tokens: int = field(default=16, metadata={"help": "the longest completion sampled, in tokens"})
    temperature: float = field(default=1.0, metadata={
        "help": "sampling temperature; the policy's log-probs are taken at the same temperature (as TRL)"})
    kl_coef: float = field(default=0.05, metadata={
        "help": "β: loss += β · KL(policy‖reference) per completion token (k3 estimator); 0: no KL leash"})
    target_kl: float | None = field(default=None, metadata={
        "help": "adapt kl_coef each step toward this per-token KL (Ziegler et al.'s controller); null: fixed"})
    scale_rewards: bool = field(default=True, metadata={
        "help": "divide each group's centred rewards by its standard deviation (GRPO); false: centre only"})
    rewards: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "the reward, a weighted sum of named terms: NAME: {kind?, weight, ...} (kinds: format, keyword, "
                "length, knowledge, similarity_to_base, function); each term is logged as reward/NAME"})

    def validate(self):
        if self.group_size < 2:
            yield "group_size", f"must be >= 2 (advantages compare completions of one prompt), got {self.group_size}"
        if self.max_new_tokens < 1:
            yield "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}"
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            yield "temperature", f"must be a finite number > 0, got {self.temperature}"
        if not (math.isfinite(self.kl_coef) and self.kl_coef >= 0):
            yield "kl_coef", f"must be a finite number >= 0, got {self.kl_coef}"
        if self.target_kl is not None and not (math.isfinite(self.target_kl) and self.target_kl > 0):
            yield "target_kl", f"must be a finite number > 0 or null, got {self.target_kl}"
        if self.target_kl is not None and self.kl_coef == 0:
            yield "target_kl", "adapts kl_coef, which is 0 — give a starting kl_coef > 0"
        yield from reward_problems(self.rewards)
