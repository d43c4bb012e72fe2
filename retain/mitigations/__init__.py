"""Every mitigation retain offers, by the name a config uses for it.

One explicit table: config name -> (options dataclass, class). A class takes its options and
implements one or more roles from retain.mitigations.roles; the loop applies model
transforms in this table's order (freezing before the adapters that wrap the model).
"""

from retain.mitigations.freezing import Freeze, FreezeOptions
from retain.mitigations.peft_methods import Lora, LoraOptions

MITIGATIONS: dict[str, tuple[type, type]] = {
    "freeze": (FreezeOptions, Freeze),
    "lora": (LoraOptions, Lora),
}


def build_mitigations(options_by_name: dict) -> list:
    """Instances in table order, from a parsed `mitigations:` section."""
    return [cls(options_by_name[name]) for name, (_, cls) in MITIGATIONS.items() if name in options_by_name]
