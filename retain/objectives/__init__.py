"""What the step optimises: `training.objective` names a row of OBJECTIVES.

    sft    next-token loss on supervised examples' responses (retain.objectives.sft; the default)
    dpo    preference pairs, with the base model as the implicit leash (retain.objectives.dpo)
    grpo   rewards of sampled completions, with an explicit KL to the base (retain.objectives.grpo)

Each declares itself an Objective (retain.objectives.protocol) and tells the loop what its data is and what
the step's task loss is; the mitigations compose with it unchanged (LoRA, freezing, L2-SP/EWC/SI, KL,
progressive unfreezing, the retention budget, WiSE-FT; replay's general examples ride in DPO's and GRPO's
batches and their LM loss is logged as loss/replay). The mitigations that read, rewrite or reweight next-token
examples apply to a supervised objective only (SFT_ONLY_MITIGATIONS). DPO's and GRPO's data, options, rewards
and log-prob helpers are in retain.preference, below this package.
"""

from __future__ import annotations

from retain.core.errors import ConfigError
from retain.objectives.dpo import DPO
from retain.objectives.grpo import GRPO
from retain.objectives.protocol import Objective
from retain.objectives.sft import SFT

__all__ = ["OBJECTIVES", "SFT_ONLY_MITIGATIONS", "Objective", "SFT", "DPO", "GRPO", "make_objective"]

# training.objective -> its class (the schema's Literal lists the same names; a test keeps them equal)
OBJECTIVES: dict[str, type[Objective]] = {"sft": SFT, "dpo": DPO, "grpo": GRPO}

# mitigations of the next-token loss on supervised examples: they have no meaning for pairs or prompts
_REWEIGHTS = ("weights the next-token loss's target tokens, and DPO's and GRPO's losses are not a per-token "
              "cross-entropy")
SFT_ONLY_MITIGATIONS = {
    "self_distill": "rewrites supervised examples",
    "dft": _REWEIGHTS,
    "eaft": _REWEIGHTS,
    "asft": _REWEIGHTS + " (its KL to the base alone is mitigations.kl, which does apply)",
}


def make_objective(config, mitigations: list | tuple = ()) -> Objective:
    """The objective `config.training.objective` names, given the run's built mitigations (SFT takes the token
    weights among them); ConfigError for a combination that cannot work, before anything loads."""
    objective = OBJECTIVES[config.training.objective]
    if not objective.supervised:
        for name, why in SFT_ONLY_MITIGATIONS.items():
            if name in config.mitigations:
                raise ConfigError(f"mitigations.{name}: {why}; it does not apply to training.objective "
                                  f"{objective.name} — drop it")
    return objective.from_config(config, list(mitigations))
