"""How a LoRA adapter starts (`mitigations.lora.init`), through peft's own initialisations.

    default  A random, B = 0: the adapter adds nothing at the start (Hu et al. 2021)
    pissa    the weights' top-r singular directions move into the adapter, the base keeps the residual
             (PiSSA, Meng et al. 2024): base + adapter = the original weights at the start
    olora    the same with the first r columns of the weights' QR decomposition (OLoRA, Büyükakyüz 2024)
    corda    CorDA's knowledge-preserved mode (Yang et al. 2024): the SVD of the weights times the
             covariance of their inputs on general data (`init_data`); the adapter takes the r directions
             that data uses least, so what the model knows sits in the frozen part
    eva      EVA (Paischer et al. 2024): A from the top right-singular vectors of each layer's inputs on
             `init_data`, B = 0; the base is untouched
    mica     MiCA: B from the weights' r least singular directions and frozen, A = 0 and trained; the base
             is untouched

Measured on the lab (seed 0, rank-16 adapters at lr 1e-3, 211 steps; task gain / retained capabilities
change, points): default LoRA +91.5 / -33.0, pissa +94.0 / -61.0 (it trains the directions the knowledge
is in), corda +96.0 / -33.6, mica +73.0 / -23.4; OSF (mitigations.osf, half the spectrum frozen) +98.5 / -16.4.

pissa, olora and corda change the base weights (they hold the residual). Before final/ is written the
trained adapter is turned back into a plain LoRA on the original weights, as peft's conversion does:
ΔW = B·A − B0·A0 = [B | −B0]·[A ; A0], a rank-2r adapter, so final/ loads on the base model it names.
"""

from __future__ import annotations

import math

import torch

from retain.data import collate, general_examples

CHANGES_BASE = ("pissa", "olora", "corda")
INIT_BATCH = 4  # init_data examples per forward


def init_batches(file: str, tokenizer, max_length: int, examples: int, batch_size: int = INIT_BATCH) -> list[dict]:
    """Batches (input_ids, attention_mask, labels) of the first `examples` records of `file`, every token a target
    (CorDA's covariance hooks read one unpadded sequence at a time: batch_size 1)."""

    data = general_examples(file, tokenizer, max_length)[:examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return [collate(data[i:i + batch_size], pad) for i in range(0, len(data), batch_size)]


def run_batches(model, batches: list[dict]) -> None:
    """Forward `batches` through `model` without gradients (the covariance hooks listen)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))


def lora_layers(model) -> list:
    """(name, module) of every LoRA layer of a peft model, in module order."""
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def initial_adapter(model, adapter: str = "default") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (A0 (r, in), B0 (out, r)) of every LoRA layer, copied: what the base gave away at the start."""
    return {name: (m.lora_A[adapter].weight.detach().clone(), m.lora_B[adapter].weight.detach().clone())
            for name, m in lora_layers(model)}


def as_plain_lora(model, initial: dict, adapter: str = "default"):
    """Turn a trained pissa/olora/corda adapter into a plain LoRA on the original weights, in place.

    Per layer: W = W_res + s·B0·A0 (the original weights back); A ← [A ; A0], B ← [B | −B0], so that
    s·B·A on W equals s·(B·A − B0·A0) + W_res + s·B0·A0: the trained model, unchanged. The rank doubles;
    lora_alpha follows so the scaling s stays what it was.
    """
    config = model.peft_config[adapter]
    for name, m in lora_layers(model):
        a0, b0 = initial[name]
        a, b = m.lora_A[adapter].weight, m.lora_B[adapter].weight
        base = m.get_base_layer().weight
        s = m.scaling[adapter]
        with torch.no_grad():
            base.data = (base.float() + s * (b0.float() @ a0.float()).to(base.device)).to(base.dtype)
            m.lora_A[adapter].weight = torch.nn.Parameter(torch.cat([a.detach(), a0.to(a)], 0),
                                                          requires_grad=a.requires_grad)
            m.lora_B[adapter].weight = torch.nn.Parameter(torch.cat([b.detach(), -b0.to(b)], 1),
                                                          requires_grad=b.requires_grad)
        m.lora_A[adapter].out_features = m.lora_B[adapter].in_features = 2 * m.r[adapter]
        m.r[adapter] *= 2
    config.lora_alpha = config.lora_alpha * (math.sqrt(2) if config.use_rslora else 2)
    config.r *= 2
    config.init_lora_weights = True  # a plain LoRA now: loading it must not run pissa's SVD again
    return model
