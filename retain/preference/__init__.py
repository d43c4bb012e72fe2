"""Training objectives other than next-token loss: DPO on preference pairs, GRPO on rewards.

`training.objective` picks one (default `sft`, the loop's own cross-entropy; no objective object then).
An objective tells the loop what its data is and what the step's task loss is; the mitigations compose
with it unchanged (LoRA, freezing, L2-SP/EWC/SI, KL, progressive unfreezing, the retention budget, WiSE-FT;
replay's general examples ride in the batches and their LM loss is logged as loss/replay).

The loop calls an objective at these points (retain.training.loop, retain.training.step):

    load(source, tokenizer, data_config) -> Dataset   phase 1, for data.train and data.dev (instead of SFT loading)
    collate(items, pad_id) -> batch                    the loaders' collate
    setup(model, ctx, train_examples, dev_examples)    phase 1, after the mitigations' setup: the reference
    prepare(model, micro_batches) -> micro_batches     each step, before counting: GRPO samples and rewards here
    count(batch) -> () tensor                          what weights a micro-batch in the step (pairs; tokens)
    loss(model, inner, batch) -> ({name: term}, outputs)   each micro-batch: the task loss, by name
    log_row(accelerator) -> dict                       at log steps: its own metrics (dpo/..., grpo/..., reward/...)
    evaluate(model, inner, dev_loader, accelerator) -> dict   where the loop logs eval/loss for sft
"""

from __future__ import annotations

from retain.errors import ConfigError
from retain.preference.dpo import DPO, dpo_loss
from retain.preference.grpo import GRPO, group_advantages, grpo_token_terms
from retain.preference.options import DPOOptions, GRPOOptions

__all__ = ["DPO", "DPOOptions", "GRPO", "GRPOOptions", "dpo_loss", "group_advantages", "grpo_token_terms",
           "make_objective"]

# mitigations of the next-token loss on supervised examples: they have no meaning for pairs or prompts
_REWEIGHTS = ("weights the next-token loss's target tokens, and DPO's and GRPO's losses are not a per-token "
              "cross-entropy")
SFT_ONLY_MITIGATIONS = {
    "self_distill": "rewrites supervised examples",
    "dft": _REWEIGHTS,
    "eaft": _REWEIGHTS,
    "asft": _REWEIGHTS + " (its KL to the base alone is mitigations.kl, which does apply)",
}


def make_objective(config):
    """The objective `config.training.objective` names (None for sft); ConfigError for a combination that
    cannot work, before anything loads."""
    t = config.training
    if t.objective == "sft":
        return None
    for name, why in SFT_ONLY_MITIGATIONS.items():
        if name in config.mitigations:
            raise ConfigError(f"mitigations.{name}: {why}; it does not apply to training.objective "
                              f"{t.objective} — drop it")
    replay = "replay" in config.mitigations
    if t.objective == "dpo":
        return DPO(t.dpo, replay, t.batch_size)
    return GRPO(t.grpo, replay)
