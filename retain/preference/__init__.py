"""Training on preferences and rewards: DPO on preference pairs, GRPO on rewards of sampled completions.

`training.objective: dpo | grpo` picks one (retain.objectives.OBJECTIVES, beside SFT); each is an Objective
(retain.objectives.protocol): it tells the loop what its data is and what the step's task loss is. Here are the
two objectives and their pieces: the pairs' and prompts' data (data), their options (options), the rewards
(rewards) and the log-probability helpers (logprobs).
"""

from __future__ import annotations

from retain.preference.dpo import DPO, dpo_loss
from retain.preference.grpo import GRPO, group_advantages, grpo_token_terms
from retain.preference.options import DPOOptions, GRPOOptions

__all__ = ["DPO", "DPOOptions", "GRPO", "GRPOOptions", "dpo_loss", "group_advantages", "grpo_token_terms"]
