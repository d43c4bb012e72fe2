"""Every mitigation retain offers, by the name a config uses for it.

One explicit table: config name -> (options dataclass, class). A class takes its options and
implements one or more roles from retain.mitigations.roles. The loop applies each role in this
table's order (freezing before the adapters that wrap the model; replay before anything that
reads the data). Any combination composes, except that at most one PEFT method wraps the model and at
most one token reweighting (dft, eaft, asft) weights the task loss.
"""

from typing import Any

from retain.core.schema import ConfigError, build
from retain.mitigations.distill import KLOptions, KLToBase
from retain.mitigations.early_warnings import EarlyWarnings, EarlyWarningsOptions
from retain.mitigations.freezing import Freeze, FreezeOptions, ProgressiveUnfreeze, ProgressiveUnfreezeOptions
from retain.mitigations.interpolation import Interpolate, InterpolateOptions
from retain.mitigations.peft_methods import (IA3, OFT, OSF, IA3Options, LoHa, LoKr, Lora, LoraOptions, LowRankOptions,
                                             OFTOptions, OSFOptions, PrefixTuning, PromptTuning, VirtualTokensOptions)
from retain.mitigations.penalties import EWC, L2SP, SI, EWCOptions, L2SPOptions, SIOptions
from retain.mitigations.replay import Replay, ReplayOptions, implied_kl
from retain.mitigations.budget import RetentionBudget, RetentionOptions
from retain.mitigations.roles import check_roles
from retain.mitigations.self_distill import SelfDistill, SelfDistillOptions
from retain.mitigations.token_weights import ASFT, DFT, EAFT, ASFTOptions, DFTOptions, EAFTOptions

MITIGATIONS: dict[str, tuple[type, type]] = {
    # transform the model
    "freeze": (FreezeOptions, Freeze),
    "lora": (LoraOptions, Lora),  # also DoRA, rsLoRA, and the PiSSA/OLoRA/CorDA/EVA/MiCA starts (init)
    "loha": (LowRankOptions, LoHa),
    "lokr": (LowRankOptions, LoKr),
    "ia3": (IA3Options, IA3),
    "oft": (OFTOptions, OFT),
    "osf": (OSFOptions, OSF),
    "prompt_tuning": (VirtualTokensOptions, PromptTuning),
    "prefix_tuning": (VirtualTokensOptions, PrefixTuning),
    # transform the data
    "self_distill": (SelfDistillOptions, SelfDistill),  # before replay: rewrites task examples only
    "replay": (ReplayOptions, Replay),
    # weight the task loss's tokens by the model's own prediction (ASFT also adds a KL term)
    "dft": (DFTOptions, DFT),
    "eaft": (EAFTOptions, EAFT),
    "asft": (ASFTOptions, ASFT),
    # add a loss term
    "kl": (KLOptions, KLToBase),
    "l2sp": (L2SPOptions, L2SP),
    "ewc": (EWCOptions, EWC),
    "si": (SIOptions, SI),
    # filter gradients during training
    "progressive_unfreeze": (ProgressiveUnfreezeOptions, ProgressiveUnfreeze),
    # decide to stop or roll back
    "retention": (RetentionOptions, RetentionBudget),
    # log signals that forecast forgetting (KL to the base, weight drift); never stops the run
    "early_warnings": (EarlyWarningsOptions, EarlyWarnings),
    # transform the weights after training
    "interpolate": (InterpolateOptions, Interpolate),
}
PEFT_METHODS = ("lora", "loha", "lokr", "ia3", "oft", "osf", "prompt_tuning", "prefix_tuning")
TOKEN_REWEIGHTING = ("dft", "eaft", "asft")  # each is its paper's loss; a product of two is none of them


def build_mitigations(options_by_name: dict) -> list:
    """Instances in table order, from a parsed `mitigations:` section; each class's roles checked."""
    chosen = [(name, cls) for name, (_, cls) in MITIGATIONS.items() if name in options_by_name]
    for _, cls in chosen:
        check_roles(cls)
    return [cls(options_by_name[name]) for name, cls in chosen]


def parse_mitigations(data: Any) -> dict[str, Any]:
    """The `mitigations:` section of a run config: name -> its options dataclass, checked strictly."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"mitigations: expected a mapping of name -> options, got {data!r}")
    parsed = {}
    for name, options in data.items():
        if name not in MITIGATIONS:
            raise ConfigError(f"mitigations.{name}: unknown mitigation (known: {', '.join(MITIGATIONS)})")
        options_cls, _ = MITIGATIONS[name]
        parsed[name] = build(options_cls, {} if options is True else options, f"mitigations.{name}")
    peft = [name for name in parsed if name in PEFT_METHODS]
    if len(peft) > 1:
        raise ConfigError(f"mitigations.{peft[1]}: only one PEFT method can wrap the model (also given: {peft[0]})")
    reweighting = [name for name in parsed if name in TOKEN_REWEIGHTING]
    if len(reweighting) > 1:
        raise ConfigError(f"mitigations.{reweighting[1]}: only one token reweighting can weight the task loss "
                          f"(also given: {reweighting[0]}); asft is dft with a KL to the base")
    if "replay" in parsed:  # source self brings its KL on the rehearsal tokens (replay.kl_weight)
        parsed.update(implied_kl(parsed["replay"], parsed))
    return parsed
