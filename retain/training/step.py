"""One optimizer step's gradients, exact under gradient accumulation and data parallelism.

The step's task loss is the mean over every target token of the step, across its `grad_accum`
micro-batches and all processes, as if the whole global batch went through one forward pass:

    loss = Σ_micro-batches Σ_targets CE / N          N = the step's target tokens, all processes

so batch 8 × accumulation 1 equals 4 × 2 and 2 processes × 4. (Averaging the micro-batches' own
means instead gives the tokens of a micro-batch with few targets more weight.) The model
returns each micro-batch's mean over its n_i targets, so micro-batch i is weighted n_i / N; N is
counted before the first forward, from the step's micro-batches, and summed across processes.

Loss terms of mitigations follow the task loss's weighting when they are means over the
micro-batch's target positions (KL to the base: exact when it applies to all examples; with
`apply_to: task|replay` its positions are a subset and the weighting approximates). A term that
depends on the weights alone (L2-SP, EWC, SI; its class sets `per_step = True`) is the same for
every micro-batch and counts once per step. Token weights (DFT, EAFT: retain.mitigations.token_weights)
multiply each target's cross-entropy inside the micro-batch's mean, so the step stays exact with them.

The logits are computed only where a target is: the loop's batches say where (`target_rows`, found on
the host by `collate_indexed`), the LM head runs on those hidden states alone (retain.lm_head), and the
cross-entropy is their mean, the same value as the model's own loss without the (B, T, V) logits.

Nothing here reads a value back to the host: the terms stay on the device, and the loop syncs
once per step (the finiteness check before the optimizer step), the values only at log steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from retain.data import IGNORE_INDEX, MODEL_INPUTS, collate, model_inputs
from retain.lm_head import logits_at, rows_of


def target_tokens(batch: dict) -> torch.Tensor:
    """() long: positions whose next token is a training target (labels (B, T), shifted as the model does)."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def collate_indexed(pairs: list, pad_id: int) -> dict:
    """collate() of (index, example) pairs, plus two keys that spare the step work and host syncs:

    target_rows  (N,) long: the flat positions b·T + t whose next token is a target, found here on the
                 host, so the step's head and loss run on N rows without asking the device for N
    index        the examples' positions in the training list, a tuple of ints (accelerate moves
                 tensors to the device, not tuples): what KL counts and caches its teacher by
    """
    batch = collate([example for _, example in pairs], pad_id)
    b, t = (batch["labels"][:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    batch["target_rows"] = b * batch["labels"].shape[1] + t
    batch["index"] = tuple(i for i, _ in pairs)
    return batch


@dataclass
class TargetOutputs:
    """A forward's result at the target positions only (what loss terms read: `.logits`, `.rows`)."""

    loss: torch.Tensor  # () mean cross-entropy over the N targets
    logits: torch.Tensor  # (N, V) next-token logits at `rows`
    rows: torch.Tensor  # (N,) flat positions b·T + t whose next token is a target


def task_forward(model, inner, batch: dict, reweighting: list | tuple = ()):
    """The next-token forward and loss: at the targets only when the batch has `target_rows`, else the
    model's own (logits everywhere; a batch from outside retain's loop).

    `reweighting`: mitigations playing TokenWeights (DFT, EAFT); the loss is then the mean over the
    targets of the product of their weights times each token's cross-entropy.
    """
    rows = batch.get("target_rows")
    if rows is None and not reweighting:
        return model(**{k: batch[k] for k in MODEL_INPUTS})
    if rows is None:  # the targets, as collate_indexed finds them
        b, t = (batch["labels"][:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
        rows = b * batch["labels"].shape[1] + t
    width = batch["input_ids"].shape[1]
    with logits_at(inner, rows, width):  # the hook sits on the unwrapped model's head; DDP calls the same module
        out = model(**model_inputs(batch))  # packed rows: position ids, no mask
    logits = rows_of(out.logits, rows, width)  # (N, V)
    targets = batch["labels"].flatten().index_select(0, rows + 1)  # position t of a row predicts token t + 1
    if not reweighting:
        return TargetOutputs(F.cross_entropy(logits.float(), targets), logits, rows)
    per_token = F.cross_entropy(logits.float(), targets, reduction="none")  # (N,)
    for m in reweighting:
        per_token = per_token * m.token_weights(logits, targets)
    return TargetOutputs(per_token.mean(), logits, rows)


def accumulate_gradients(model, inner, micro_batches: list[dict], loss_terms: list,
                         accelerator, objective=None, reweighting: list | tuple = ()) -> dict[str, torch.Tensor]:
    """Forward and backward each micro-batch of one step, leaving the step's gradient in `.grad`.

    `model` is the prepared model (forward goes through any DDP wrapper), `inner` the same model
    unwrapped, which the loss terms get. `objective` (retain.preference; None: next-token loss) supplies
    the task loss terms and what weights each micro-batch; `reweighting` (TokenWeights: DFT, EAFT) weights
    the next-token loss's tokens.

    Returns each term's share of the step loss from this process: 0-dim float tensors on the
    device; summed over processes they are the step's values ("task" first, then each term).
    """
    device = accelerator.device
    # what weights a micro-batch: its target tokens, or what a preference objective counts (DPO: its pairs)
    count = target_tokens if objective is None else objective.count
    n_targets = torch.stack([count(b) for b in micro_batches]).to(device).float()  # (grad_accum,)
    total = accelerator.reduce(n_targets.sum(), "sum").clamp(min=1)  # N, the whole step, every process
    # accelerate divides each backward by grad_accum and DDP averages gradients over processes; the
    # weights below already sum to one over the whole global step, so undo both.
    undo = accelerator.gradient_accumulation_steps * accelerator.num_processes
    shares: dict[str, torch.Tensor] = {}
    for batch, n in zip(micro_batches, n_targets):
        # accumulate(): no gradient all-reduce until the step's last micro-batch
        with accelerator.accumulate(model):
            if objective is None:
                outputs = task_forward(model, inner, batch, reweighting)
                terms = {"task": (outputs.loss, n / total)}
            else:  # retain.preference: the objective's terms replace the task loss ("dpo", "grpo", ...)
                task_terms, outputs = objective.loss(model, inner, batch)
                terms = {name: (value, n / total) for name, value in task_terms.items()}
            for m in loss_terms:
                weight = 1 / undo if getattr(m, "per_step", False) else n / total
                terms[m.name] = (m.loss_term(inner, batch, outputs), weight)
            accelerator.backward(sum(value * weight for value, weight in terms.values()) * undo)
        for name, (value, weight) in terms.items():
            shares[name] = shares.get(name, 0.0) + value.detach().float() * weight
    return shares
