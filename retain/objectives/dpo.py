"""DPO: learn from preference pairs directly, with the reference model as an implicit KL leash.

    loss = −log σ(β · [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])   (sigmoid)

β · log π/π_ref is the implicit reward of an answer: a small β lets the policy move far from the reference
for a given margin (a weak leash), a large β keeps it close. `ipo` replaces the log-sigmoid by a squared
distance of the length-normalised margin to 1/(2β), as TRL's `ipo` does.

`dpo_loss` is the pure function; `DPO` wires it to the training loop (an Objective, retain.objectives.protocol):
one forward over [chosen, rejected, replay] rows, the reference log-probs from a no-grad forward of the
reference (or precomputed once at setup), and the logged implicit terms:
    dpo/reward_chosen, dpo/reward_rejected   β · log π/π_ref of each answer (means over pairs)
    dpo/reward_margin                        their difference
    dpo/accuracy                             the share of pairs whose chosen reward is above the rejected one
    dpo/logratio_chosen, dpo/logratio_rejected   log π/π_ref summed over an answer's tokens: how far the policy
                                             moved from the reference on that answer (the implicit-KL terms)

DPO only compares two answers that the policy did not write: it can widen the margin while both answers
get less likely and the greedy answer drifts elsewhere (the lab shows it: 94% preference accuracy, 0 exact
answers). `sft_weight` adds the chosen answers' NLL (RPO, TRL's `sft` loss type), as loss/dpo_sft — a
mean per pair of its per-token NLL (TRL's is a mean over the batch's tokens; the same when lengths agree).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retain.model.reference import Reference
from retain.objectives.protocol import Objective
from retain.preference.data import PairExample, collate_pairs, load_pairs, to_device
from retain.preference.logprobs import Tally, sequence_logps, token_logps
from retain.preference.options import DPOOptions


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float, loss_type: str = "sigmoid",
             chosen_tokens: torch.Tensor | None = None, rejected_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """(P,) the loss of each pair. Inputs (P,): answers' summed log-probs under the policy and the reference;
    `*_tokens` (P,): the answers' token counts (ipo only, which compares per-token log-ratios)."""
    chosen_ratio = chosen_logps - ref_chosen_logps  # (P,) log π/π_ref of the preferred answer
    rejected_ratio = rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    if loss_type == "ipo":
        margin = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        return (margin - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown DPO loss_type {loss_type!r}")


def answer_tokens(labels: torch.Tensor) -> torch.Tensor:
    """(N,) the target tokens of each row (labels (N, T))."""
    return (labels[:, 1:] != -100).sum(-1)


class DPO(Objective):
    """The DPO objective: the step's task loss is the DPO loss of its pairs (and replay's LM loss)."""

    name = "dpo"
    supervised = False  # pairs, not next-token examples
    plain_next_token_loss = False

    def __init__(self, options: DPOOptions, replay: bool, batch_size: int):
        self.options = options
        self.replay = replay  # replay's general examples ride in the batches: their LM loss is a term
        self.batch_size = batch_size
        self.reference: Reference | None = None  # the base model, from setup on
        self.tally = Tally()

    @classmethod
    def from_config(cls, config, mitigations: list) -> DPO:
        return cls(config.training.dpo, "replay" in config.mitigations, config.training.batch_size)

    # --- data ---

    def load(self, source, tokenizer, data):
        return load_pairs(source, tokenizer, data.max_length, data.chat, data.chat_template)

    def collate(self, items: list, pad_id: int) -> dict:
        return collate_pairs([example for _, example in items], pad_id)  # items: (index, example)

    # --- once, before the first step ---

    def setup(self, model, ctx, train_examples: list, dev_examples: list | None) -> None:
        """The reference: precomputed log-probs (then no copy is kept), adapters disabled, or a frozen copy."""
        precompute = self.options.precompute_reference
        self.reference = Reference(model, copy=not precompute)
        if precompute:  # `model` is still the base here: setup runs before the first step and any resume
            for examples in (train_examples, dev_examples or []):
                self.precompute(model, [x for x in examples if isinstance(x, PairExample)], ctx.tokenizer.pad_token_id)

    @torch.no_grad()
    def precompute(self, model, pairs: list[PairExample], pad_id: int) -> None:
        device = next(model.parameters()).device
        for i in range(0, len(pairs), self.batch_size):
            chunk = pairs[i: i + self.batch_size]
            batch = to_device(collate_pairs(chunk, pad_id), device)
            logps = sequence_logps(self.reference.logits(model, batch), batch["labels"]).tolist()
            for j, pair in enumerate(chunk):
                pair.ref_logps = (logps[j], logps[len(chunk) + j])

    # --- every step ---

    def prepare(self, model, micro_batches: list[dict]) -> list[dict]:
        return micro_batches  # the pairs are complete as loaded

    def count(self, batch: dict) -> torch.Tensor:
        """() what weights this micro-batch in the step: its examples (pairs, and replay's general examples)."""
        return batch["replay"].sum() + batch["n_pairs"]

    def pair_losses(self, logits: torch.Tensor, inner, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(P,) losses, and the implicit terms (P,) by name, from the policy's logits over the batch's rows."""
        P = batch["n_pairs"]
        if P == 0:  # a micro-batch of replay examples only
            empty = logits.new_zeros(0)
            return empty, {k: empty for k in ("reward_chosen", "reward_rejected", "reward_margin", "accuracy",
                                              "logratio_chosen", "logratio_rejected", "chosen_nll")}
        labels = batch["labels"][: 2 * P]
        per_token = token_logps(logits[: 2 * P], labels)  # (2P, T-1)
        policy = per_token.sum(-1)  # (2P,) each answer's log-likelihood
        if "ref_logps" in batch:
            ref = batch["ref_logps"]
        else:
            rows = {k: batch[k][: 2 * P] for k in ("input_ids", "attention_mask")}
            ref = sequence_logps(self.reference.logits(inner, rows), labels)
        tokens = answer_tokens(labels)
        b = self.options.beta
        losses = dpo_loss(policy[:P], policy[P:], ref[:P], ref[P:], b, self.options.loss_type, tokens[:P], tokens[P:])
        ratio_chosen, ratio_rejected = (policy[:P] - ref[:P]).detach(), (policy[P:] - ref[P:]).detach()
        implicit = {"reward_chosen": b * ratio_chosen, "reward_rejected": b * ratio_rejected,
                    "reward_margin": b * (ratio_chosen - ratio_rejected),
                    "accuracy": (ratio_chosen > ratio_rejected).float(),
                    "logratio_chosen": ratio_chosen, "logratio_rejected": ratio_rejected,
                    # (P,) the chosen answers' mean per-token NLL, with grad (the sft term; logged as loss/dpo_sft)
                    "chosen_nll": -policy[:P] / tokens[:P].clamp(min=1)}
        return losses, implicit

    def loss(self, model, inner, batch: dict):
        """({term name: () tensor}, outputs): the terms are sums over the micro-batch's examples / its count, so the
        step's token-less weighting (count / the step's count) makes them means over the step's examples."""
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        n = self.count(batch)
        losses, implicit = self.pair_losses(outputs.logits, inner, batch)
        chosen_nll = implicit.pop("chosen_nll")
        for name, values in implicit.items():
            self.tally.add(f"dpo/{name}", values)
        terms = {"dpo": losses.sum() / n}
        if self.options.sft_weight:
            terms["dpo_sft"] = self.options.sft_weight * chosen_nll.sum() / n
        if self.replay:
            P2 = 2 * batch["n_pairs"]
            labels = batch["labels"][P2:]
            per_token = token_logps(outputs.logits[P2:], labels)  # (R, T-1)
            terms["replay"] = (-per_token.sum(-1) / answer_tokens(labels).clamp(min=1)).sum() / n
        return terms, outputs

    def log_row(self, accelerator) -> dict:
        return self.tally.means(accelerator)

    @torch.no_grad()
    def evaluate(self, model, inner, loader, accelerator) -> dict:
        """eval/dpo (mean loss), eval/dpo_accuracy and eval/dpo_reward_margin over the dev pairs."""
        was_training = model.training
        model.eval()
        totals = torch.zeros(4, device=accelerator.device)  # loss, accuracy, margin sums; pairs
        for batch in loader:
            losses, implicit = self.pair_losses(model(input_ids=batch["input_ids"],
                                                      attention_mask=batch["attention_mask"]).logits, inner, batch)
            totals += torch.stack([losses.sum(), implicit["accuracy"].sum(), implicit["reward_margin"].sum(),
                                   torch.tensor(float(len(losses)), device=totals.device)])
        model.train(was_training)
        loss, accuracy, margin, n = accelerator.reduce(totals, "sum").tolist()
        n = max(n, 1.0)
        return {"eval/dpo": loss / n, "eval/dpo_accuracy": accuracy / n, "eval/dpo_reward_margin": margin / n}
