"""retain's loss-side mitigations inside a Hugging Face `Trainer` or TRL's `SFTTrainer`.

    class MyTrainer(RetainLossMixin, SFTTrainer): ...      # the mixin first, so its compute_loss wraps theirs
    trainer = MyTrainer(model=..., args=..., train_dataset=...,
                        retain_losses={"kl": {"weight": 0.3}, "l2sp": {"weight": 0.01}})

The loss the trainer backpropagates is its own task loss plus each named term, the terms of
retain's `mitigations:` section with the same options and the same pure functions:
    kl     weight · KL to the base model (retain.mitigations.distill.kl_divergence); the base is the
           same model with its adapters disabled under peft, else a frozen copy made before the first step
    l2sp   weight/2 · Σ (θ − θ0)²                (retain.mitigations.penalties.weighted_l2)
    ewc    weight/2 · Σ F (θ − θ0)², F the diagonal Fisher on `file` (general data)
    si     weight/2 · Σ Ω (θ − θ0)², Ω SI's path integral on `file`
Each term is logged by name with the trainer's own logs (`loss/kl`, ... beside `loss/task`), as the
mean per optimizer step since the last log, like the trainer's `loss`.

Weighting follows retain.training.step: a KL term is a mean over the micro-batch's target positions
and is weighted like the task loss (by target tokens when the trainer normalises by
`num_items_in_batch`); a penalty on the weights alone counts once per optimizer step.

Anchors, reference and importance are taken at the first training step, from the weights then.
Not supported here: KL's `cache_top_k`, resuming with the anchors of the original start (a resumed
trainer anchors at the resumed weights), and sharded models (FSDP, DeepSpeed ZeRO-3).
"""

from __future__ import annotations

import copy
import sys
from contextlib import nullcontext

import torch

from retain.data import IGNORE_INDEX, collate, load_dataset
from retain.mitigations import MITIGATIONS, parse_mitigations
from retain.mitigations.distill import kl_divergence, positions
from retain.mitigations.penalties import diagonal_fisher, snapshot, synaptic_importance, trainable, weighted_l2
from retain.paths import resolve_path
from retain.strict import ConfigError

LOSS_TERMS = ("kl", "l2sp", "ewc", "si")
DEFAULT_MAX_LENGTH = 512  # general data's truncation when the trainer's args name none (as data.max_length)


def parse_loss_terms(terms: dict | None) -> dict:
    """name -> options dataclass, checked as retain checks a config's `mitigations:` (options objects pass)."""
    terms = dict(terms or {})
    unknown = [name for name in terms if name not in LOSS_TERMS]
    if unknown:
        raise ConfigError(f"retain_losses.{unknown[0]}: not a loss term usable in a Trainer "
                          f"(these are: {', '.join(LOSS_TERMS)})")
    given = {n: o for n, o in terms.items() if not isinstance(o, (dict, bool)) and o is not None}
    for name, o in given.items():  # an options object is checked as its YAML would be
        expected = MITIGATIONS[name][0]
        if not isinstance(o, expected):
            raise ConfigError(f"retain_losses.{name}: expected a dict or {expected.__name__}, got {type(o).__name__}")
        for key, problem in o.validate():
            raise ConfigError(f"retain_losses.{name}.{key}: {problem}")
    parsed = parse_mitigations({n: o for n, o in terms.items() if n not in given})
    options = {**parsed, **given}
    for name in ("ewc", "si"):
        if name in options and options[name].file is None:
            raise ConfigError(f"retain_losses.{name}.file: required — the general data (JSONL) its importance is "
                              f"measured on, e.g. lab:general.jsonl")
    kl = options.get("kl")
    if kl is not None and kl.cache_top_k:
        raise ConfigError("retain_losses.kl.cache_top_k: not supported inside a Trainer; leave it 0")
    return {name: options[name] for name in LOSS_TERMS if name in options}  # table order, as retain's loop


def _fuses_lm_head(trainer) -> bool:
    """TRL's SFTTrainer computes its loss through a fused LM head: its outputs carry no logits to reuse."""
    trl = sys.modules.get("trl")  # imported already if the trainer is one of TRL's
    return trl is not None and isinstance(trainer, trl.SFTTrainer)


def _forward_inputs(batch: dict) -> dict:
    """What a plain forward needs for logits: ids and their mask (or positions, for padding-free batches)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}


class RetainLossMixin:
    """Put before a `transformers.Trainer` subclass (Trainer, SFTTrainer) to add retain's loss terms.

    `retain_losses`: name -> options, as in a config's `mitigations:` (dicts, or the options dataclasses).
    A batch may carry `replay` ((B,) bool, as retain.data.collate writes it) for KL's `apply_to`.
    """

    def __init__(self, *args, retain_losses: dict | None = None, **kwargs):
        self.retain_losses = parse_loss_terms(retain_losses)
        self._retain_ready = False
        self._retain_reference = None  # frozen copy of the base for KL under full fine-tuning
        self._retain_anchor: dict[str, torch.Tensor] = {}
        self._retain_importance: dict[str, dict[str, torch.Tensor] | None] = {}
        self._retain_sums: dict[str, torch.Tensor] = {}  # Σ value · share since the last log
        self._retain_logged_step = 0
        super().__init__(*args, **kwargs)

    # --- setup: the base's reference, anchor and importance, from the weights at the first step ---

    def _retain_setup(self, model) -> None:
        from peft import PeftModel

        if "kl" in self.retain_losses and not isinstance(model, PeftModel):
            reference = copy.deepcopy(model).eval().requires_grad_(False)
            # TRL's fused LM head sets an instance `forward` that closes over the original model's bound forward:
            # on a copy it would run the student. The class's forward is the plain one.
            reference.__dict__.pop("forward", None)
            self._retain_reference = reference
        penalties = [n for n in ("l2sp", "ewc", "si") if n in self.retain_losses]
        if penalties:
            self._retain_anchor = snapshot(model)
        for name in penalties:
            self._retain_importance[name] = self._importance(name, model)
        self._retain_logged_step = self.state.global_step
        self._retain_ready = True

    def _importance(self, name: str, model) -> dict[str, torch.Tensor] | None:
        """None for L2-SP; EWC's Fisher or SI's Ω on the general data, divided by its mean when `normalize`."""
        o = self.retain_losses[name]
        if name == "l2sp":
            return None
        was_training = model.training
        model.eval()  # importance of the model as it is, without dropout noise (as retain's setup runs)
        params = trainable(model)
        if name == "ewc":
            raw = diagonal_fisher(model, self._general_batches(o.file, o.batches, o.batch_size), params)
            if o.fisher_in:
                previous = torch.load(resolve_path(o.fisher_in), map_location="cpu", weights_only=True)
                raw = {n: o.decay * previous[n].to(f.device) + f if n in previous else f for n, f in raw.items()}
            if o.save_fisher and self.args.should_save:
                from retain.io import atomic_torch_save

                atomic_torch_save(f"{self.args.output_dir}/fisher.pt", {n: f.cpu() for n, f in raw.items()})
        else:
            raw = synaptic_importance(model, self._general_batches(o.file, o.steps, o.batch_size), params, o.step_lr,
                                      o.relative_damping)
        model.train(was_training)
        if not o.normalize:
            return raw
        mean = torch.cat([v.flatten() for v in raw.values()]).mean().clamp(min=1e-30)
        return {n: v / mean for n, v in raw.items()}

    def _general_batches(self, file: str, n_batches: int, batch_size: int):
        """The first batches of a general-data file, every token a target (as retain's EWC and SI read it)."""
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        max_length = getattr(self.args, "max_length", None) or DEFAULT_MAX_LENGTH
        data = load_dataset(resolve_path(file), tokenizer, "auto", max_length, "all").examples
        device = self.args.device
        for i in range(0, min(len(data), n_batches * batch_size), batch_size):
            batch = collate(data[i: i + batch_size], tokenizer.pad_token_id)
            yield {k: v.to(device) for k, v in batch.items()}

    # --- the terms ---

    def _teacher_logits(self, model, batch: dict) -> torch.Tensor:
        """(B, T, V) logits of the base: the frozen copy, or the model with its adapters disabled."""
        ref = self._retain_reference or model
        was_training = ref.training
        ref.eval()  # no dropout in the reference
        with torch.no_grad(), (model.disable_adapter() if self._retain_reference is None else nullcontext()):
            logits = ref(**_forward_inputs(batch)).logits
        ref.train(was_training)
        return logits

    def retain_terms(self, model, batch: dict, student_logits) -> dict[str, torch.Tensor]:
        """Each term's value on this micro-batch (0-dim tensors with their graph), by name.

        model: the unwrapped model; batch: with `labels` (B, T); student_logits: (B, T, V) or None (then
        computed here, with gradient, for KL only).
        """
        values = {}
        params = trainable(model) if self._retain_anchor else {}
        for name, o in self.retain_losses.items():
            if name == "kl":
                if o.apply_to != "all" and "replay" not in batch:
                    raise ValueError(f"retain_losses.kl.apply_to={o.apply_to!r} needs a `replay` flag per example "
                                     "in the batch (retain.data.collate writes it); use apply_to: all")
                if student_logits is None:
                    student_logits = model(**_forward_inputs(batch)).logits
                mask = positions(batch, o.apply_to)
                values[name] = o.weight * kl_divergence(student_logits, self._teacher_logits(model, batch), mask,
                                                        o.temperature, o.direction)
            else:
                values[name] = 0.5 * o.weight * weighted_l2(params, self._retain_anchor,
                                                            self._retain_importance[name])
        return values

    def _loss_is_scaled(self, num_items_in_batch) -> bool:
        """Whether the trainer's loss is already normalised over the whole step (Trainer.training_step's rule)."""
        if getattr(self, "loss_is_scaled_for_ga", None) is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        replay = inputs.pop("replay", None)  # retain's collate flags replay examples; no model takes it
        if not self.retain_losses or not model.training:  # evaluation: the task loss alone, as retain's dev loss
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inner = self.accelerator.unwrap_model(model)
        if not self._retain_ready:
            self._retain_setup(inner)
        batch = {**inputs, **({"replay": replay} if replay is not None else {})}  # the trainer may pop labels
        if "labels" not in batch:
            raise ValueError("retain's loss terms need `labels` in each batch (IGNORE_INDEX where no loss)")
        # Reuse the trainer's logits when it has them; a fused head (TRL's SFT) has none, KL runs its own forward.
        reuse = "kl" in self.retain_losses and not _fuses_lm_head(self)
        result = super().compute_loss(model, inputs, return_outputs=reuse or return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        task, outputs = result if isinstance(result, tuple) else (result, None)
        logits = getattr(outputs, "logits", None) if reuse else None
        if logits is not None and not logits.requires_grad:
            logits = None
        values = self.retain_terms(inner, batch, logits)

        steps = self.current_gradient_accumulation_steps
        if self._loss_is_scaled(num_items_in_batch):
            # The task loss here is Σ CE / N over the step (× processes when averaged across devices): weight a
            # per-token term by this micro-batch's n / N likewise, and count a per-step term once over the step.
            n = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
            processes = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
            token_share = n * processes / torch.as_tensor(num_items_in_batch, device=n.device).clamp(min=1)
            weights = {name: (token_share if name == "kl" else 1 / steps) for name in values}
            shares, task_share = weights, task.detach()
        else:  # the trainer divides the whole loss by the accumulation steps itself
            weights = {name: 1.0 for name in values}
            shares, task_share = {name: 1 / steps for name in values}, task.detach() / steps
        loss = task + sum(value * weights[name] for name, value in values.items())
        self._accumulate({"task": task_share, **{n: v.detach() * shares[n] for n, v in values.items()}})
        return (loss, outputs) if return_outputs else loss

    # --- logging ---

    def _accumulate(self, shares: dict[str, torch.Tensor]) -> None:
        for name, value in shares.items():
            self._retain_sums[name] = self._retain_sums.get(name, 0.0) + value.float()

    def log(self, logs: dict, *args, **kwargs) -> None:
        """The trainer's logs, plus `loss/<term>` at its training logs: the mean per step since the last one."""
        if "loss" in logs and self._retain_sums:
            steps = max(self.state.global_step - self._retain_logged_step, 1)
            names = list(self._retain_sums)
            stacked = torch.stack([self._retain_sums[n].to(self.args.device) for n in names])
            values = self.accelerator.reduce(stacked, "mean").tolist()  # the one host sync, at log steps only
            logs.update({f"loss/{n}": v / steps for n, v in zip(names, values)})
            self._retain_sums = {}
            self._retain_logged_step = self.state.global_step
        super().log(logs, *args, **kwargs)
