"""One optimizer step's gradients, exact under gradient accumulation and data parallelism.

The step's task loss is the mean over every target token of the step, across its `grad_accum`
micro-batches and all processes, as if the whole global batch went through one forward pass:

    loss = Σ_micro-batches Σ_targets CE / N          N = the step's target tokens, all processes

so batch 8 × accumulation 1 equals 4 × 2 and 2 processes × 4. (Averaging the micro-batches' own
means instead gives the tokens of a micro-batch with few targets more weight.) The model
returns each micro-batch's mean over its n_i targets, so micro-batch i is weighted n_i / N; N is
counted before the first forward, from the step's micro-batches, and summed across processes.

The objective (retain.objectives: SFT, DPO, GRPO) gives each micro-batch's task loss terms and what weights
it (SFT and GRPO: its target tokens; DPO: its pairs and replay examples); N is the step's total of that.
Loss terms of mitigations follow the task loss's weighting when they are means over the
micro-batch's target positions (KL to the base: exact when it applies to all examples; with
`apply_to: task|replay` its positions are a subset and the weighting approximates). A term that
depends on the weights alone (L2-SP, EWC, SI; its class sets `per_step = True`) is the same for
every micro-batch and counts once per step.

Nothing here reads a value back to the host: the terms stay on the device, and the loop syncs
once per step (the finiteness check before the optimizer step), the values only at log steps.
"""

from __future__ import annotations

import torch

from retain.objectives import Objective


def accumulate_gradients(model, inner, micro_batches: list[dict], loss_terms: list, accelerator,
                         objective: Objective) -> dict[str, torch.Tensor]:
    """Forward and backward each micro-batch of one step, leaving the step's gradient in `.grad`.

    `model` is the prepared model (forward goes through any DDP wrapper), `inner` the same model
    unwrapped, which the loss terms get. `objective` (retain.objectives: SFT, DPO, GRPO) supplies the task
    loss terms and what weights each micro-batch.

    Returns each term's share of the step loss from this process: 0-dim float tensors on the
    device; summed over processes they are the step's values (the objective's terms first, then each mitigation's).
    """
    device = accelerator.device
    # what weights a micro-batch: its target tokens, or what the objective counts instead (DPO: its pairs)
    n_targets = torch.stack([objective.count(b) for b in micro_batches]).to(device).float()  # (grad_accum,)
    total = accelerator.reduce(n_targets.sum(), "sum").clamp(min=1)  # N, the whole step, every process
    # accelerate divides each backward by grad_accum and DDP averages gradients over processes; the
    # weights below already sum to one over the whole global step, so undo both.
    undo = accelerator.gradient_accumulation_steps * accelerator.num_processes
    shares: dict[str, torch.Tensor] = {}
    for batch, n in zip(micro_batches, n_targets):
        # accumulate(): no gradient all-reduce until the step's last micro-batch
        with accelerator.accumulate(model):
            task_terms, outputs = objective.loss(model, inner, batch)  # "task" (SFT), "dpo", "grpo", ...
            terms = {name: (value, n / total) for name, value in task_terms.items()}
            for m in loss_terms:
                weight = 1 / undo if getattr(m, "per_step", False) else n / total
                terms[m.name] = (m.loss_term(inner, batch, outputs), weight)
            accelerator.backward(sum(value * weight for value, weight in terms.values()) * undo)
        for name, (value, weight) in terms.items():
            shares[name] = shares.get(name, 0.0) + value.detach().float() * weight
    return shares
