"""What the preference objectives (retain.objectives.dpo, retain.objectives.grpo) are built from: their pairs' and
prompts' data (data), their options (options, which the config schema reads), the reward terms (rewards) and the
log-probability helpers (logprobs).

The objectives themselves sit in retain.objectives, beside SFT, in its OBJECTIVES table; nothing here imports
them (the machinery sits below the objectives it serves).
"""

from __future__ import annotations

from retain.preference.options import DPOOptions, GRPOOptions

__all__ = ["DPOOptions", "GRPOOptions"]
