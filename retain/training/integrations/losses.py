"""retain's loss-side mitigations inside a Hugging Face `Trainer` or TRL's `SFTTrainer`.

    class MyTrainer(RetainLossMixin, SFTTrainer): ...      # the mixin first, so its compute_loss wraps theirs
    trainer = MyTrainer(model=..., args=..., train_dataset=...,
                        retain_losses={"kl": {"weight": 0.3}, "l2sp": {"weight": 0.01}})

`retain_losses` is a config's `mitigations:` section restricted to the loss side: the mitigations of
retain's table (retain.mitigations.MITIGATIONS) whose classes weight the task loss's tokens (dft, eaft,
asft) or add a loss term (kl, l2sp, ewc, si), with the same options. The mixin builds the same role
objects retain's loop builds and drives them as the loop does (retain.mitigations.roles):
    setup            at the first training step, on the weights then (anchors, Fisher, SI's Ω, the base
                     model's reference: the model with its adapters disabled under peft, else a frozen copy)
    token_weights    the task loss becomes the mean over the targets of weight · cross-entropy, computed
                     by the loop's SFT objective (retain.objectives.sft) in place of the trainer's
    loss_term        added to the trainer's loss, logged by name (`loss/kl`, ... beside `loss/task`) as the
                     mean per optimizer step since the last log, like the trainer's `loss`
    state_dict       saved in each trainer checkpoint (retain_roles.pt) and loaded when the trainer
                     resumes from it: a resumed run keeps the anchors and importance of its first start
    files            fisher.pt, si_importance.pt, ... in args.output_dir after setup, on the main process
A mitigation that plays any other role (transforms the model or the data, filters gradients, decides
to stop) is refused by name: apply it before the trainer, or use RetainCallback for a budget.

Weighting follows retain.training.step: a term that is a mean over the micro-batch's target positions
is weighted like the task loss (by target tokens when the trainer normalises by `num_items_in_batch`);
a term on the weights alone (`per_step`) counts once per optimizer step.
Not supported: sharded models (FSDP, DeepSpeed ZeRO-3).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from retain.data import IGNORE_INDEX
from retain.training.integrations.callback import role_context
from retain.core.files import atomic_torch_save
from retain.mitigations import MITIGATIONS, build_mitigations, parse_mitigations
from retain.mitigations.roles import DUTIES, ORDER, LossTerm, Setup, Stateful, TokenWeights, playing
from retain.model.reference import FORWARD_INPUTS
from retain.lab.defaults import lab_fills
from retain.objectives.sft import SFT
from retain.core.schema import ConfigError, field_help
from retain.training.loop import write_files

LOSS_ROLES = (Setup, TokenWeights, LossTerm)  # what a trainer's compute_loss can drive, besides the duties
ROLES_FILE = "retain_roles.pt"  # the roles' state in each trainer checkpoint
DEFAULT_MAX_LENGTH = 512  # general data's truncation when the trainer's args name none (as data.max_length)


def roles_of(cls: type) -> list:
    """The roles (retain.mitigations.roles.ORDER and DUTIES) a mitigation class plays, by its methods."""
    return [r for r in ORDER + DUTIES if any(callable(getattr(cls, m, None)) for m in r.methods)]


def refused_role(cls: type):
    """The first role of `cls` a trainer's loss cannot play (None: every role of it is loss-side)."""
    return next((r for r in roles_of(cls) if r in ORDER and r.protocol not in LOSS_ROLES), None)


# From the table: every mitigation whose roles are all loss-side and that touches the loss, in table order.
LOSS_TERMS = tuple(name for name, (_, cls) in MITIGATIONS.items() if refused_role(cls) is None
                   and any(r.protocol in (TokenWeights, LossTerm) for r in roles_of(cls)))


def parse_loss_terms(terms: dict | None) -> dict:
    """name -> options dataclass, checked as retain checks a config's `mitigations:` (options objects pass)."""
    terms = dict(terms or {})
    for name in terms:
        if name not in MITIGATIONS:
            raise ConfigError(f"retain_losses.{name}: not one of retain's mitigations (loss-side ones: "
                              f"{', '.join(LOSS_TERMS)})")
        role = refused_role(MITIGATIONS[name][1])
        if role is not None:
            raise ConfigError(f"retain_losses.{name}: not usable in a Trainer's loss — {name} plays "
                              f"{role.protocol.__name__} ({role.when}): apply it outside the loss (a retention "
                              f"budget: RetainCallback); loss-side ones: {', '.join(LOSS_TERMS)}")
    given = {n: o for n, o in terms.items() if not isinstance(o, (dict, bool)) and o is not None}
    for name, o in given.items():  # an options object is checked as its YAML would be
        expected = MITIGATIONS[name][0]
        if not isinstance(o, expected):
            raise ConfigError(f"retain_losses.{name}: expected a dict or {expected.__name__}, got {type(o).__name__}")
        for key, problem in o.validate():
            raise ConfigError(f"retain_losses.{name}.{key}: {problem}")
    parsed = parse_mitigations({n: o for n, o in terms.items() if n not in given})
    options = {**parsed, **given}
    for name, o in options.items():  # what a config fills from the lab for retain-tiny must be given here
        for key in lab_fills(name, o):
            if getattr(o, key) is None:
                raise ConfigError(f"retain_losses.{name}.{key}: required — {field_help(o, key)}")
    return {name: options[name] for name in MITIGATIONS if name in options}  # table order, as retain's loop


def _fuses_lm_head(trainer) -> bool:
    """TRL's SFTTrainer computes its loss through a fused LM head: its outputs carry no logits to reuse."""
    trl = sys.modules.get("trl")  # imported already if the trainer is one of TRL's
    return trl is not None and isinstance(trainer, trl.SFTTrainer)


@contextmanager
def class_forward(model, active: bool):
    """Within the block, `model` runs its class's forward: TRL's fused LM head is an instance `forward` that
    closes over the original model, so a frozen copy made with it would run the student."""
    saved = model.__dict__.pop("forward", None) if active else None
    try:
        yield
    finally:
        if saved is not None:
            model.forward = saved


class RetainLossMixin:
    """Put before a `transformers.Trainer` subclass (Trainer, SFTTrainer) to add retain's loss-side mitigations.

    `retain_losses`: name -> options, as in a config's `mitigations:` (dicts, or the options dataclasses).
    A batch may carry `replay` ((B,) bool, as retain.data.collate writes it) for KL's `apply_to`.
    """

    def __init__(self, *args, retain_losses: dict | None = None, **kwargs):
        self.retain_losses = parse_loss_terms(retain_losses)
        self.retain_roles = dict(zip(self.retain_losses, build_mitigations(self.retain_losses)))
        self._retain_ready = False
        self._retain_resume: Path | None = None  # the checkpoint a resumed train() started from
        self._retain_sums: dict[str, torch.Tensor] = {}  # Σ value · share since the last log
        self._retain_logged_step = 0
        super().__init__(*args, **kwargs)

    def _roles(self, role: type) -> list:
        return playing(list(self.retain_roles.values()), role)

    # --- setup, state and files: once, at the first training step ---

    def _retain_setup(self, model) -> None:
        """Role 3 (Setup) on the weights as they are, then a resumed checkpoint's state, then the roles' files."""
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        ctx = role_context(tokenizer, total_steps=self.state.max_steps, output_dir=Path(self.args.output_dir),
                           max_length=getattr(self.args, "max_length", None) or DEFAULT_MAX_LENGTH)
        was_training = model.training
        model.eval()  # importance and reference of the model as it is, without dropout noise (as retain's setup)
        with class_forward(model, _fuses_lm_head(self)):
            for m in self._roles(Setup):
                m.setup(model, ctx)
        model.train(was_training)
        states = self._retain_resume / ROLES_FILE if self._retain_resume is not None else None
        if states is not None and states.is_file():
            saved = torch.load(states, map_location="cpu", weights_only=True)
            for name, m in self.retain_roles.items():
                if isinstance(m, Stateful) and name in saved:
                    m.load_state_dict(saved[name])
        write_files(self.accelerator, Path(self.args.output_dir), list(self.retain_roles.values()))
        self._retain_logged_step = self.state.global_step
        self._retain_ready = True

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """The trainer's train(); a checkpoint it resumes from also restores the roles' state (anchors, Ω, F)."""
        resume = resume_from_checkpoint
        if resume is True:
            resume = get_last_checkpoint(self.args.output_dir)
        self._retain_resume = Path(resume) if isinstance(resume, (str, Path)) else None
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial, *args, **kwargs):
        super()._save_checkpoint(model, trial, *args, **kwargs)
        stateful = {n: m for n, m in self.retain_roles.items() if isinstance(m, Stateful)}
        if stateful and self._retain_ready and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            atomic_torch_save(folder / ROLES_FILE, {n: m.state_dict() for n, m in stateful.items()})

    # --- the loss ---

    def _loss_is_scaled(self, num_items_in_batch) -> bool:
        """Whether the trainer's loss is already normalised over the whole step (Trainer.training_step's rule)."""
        if getattr(self, "loss_is_scaled_for_ga", None) is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def _task(self, model, inner, inputs: dict, batch: dict, num_items_in_batch, token_share, return_outputs: bool):
        """(task loss as the trainer weights it, outputs with `.logits` for the loss terms, or None)."""
        reweighting = self._roles(TokenWeights)
        if reweighting:  # the loop's reweighted next-token loss, in place of the trainer's own
            if self.compute_loss_func is not None or getattr(self.args, "loss_type", "nll") != "nll":
                name = next(n for n, m in self.retain_roles.items() if m in reweighting)
                raise ValueError(f"retain_losses.{name}: token weights replace the "
                                 "trainer's next-token loss; this trainer computes another loss (compute_loss_func "
                                 "or loss_type)")
            terms, outputs = SFT(reweighting).loss(model, inner, batch)
            return terms["task"] * (token_share if token_share is not None else 1.0), outputs
        reuse = bool(self._roles(LossTerm)) and not _fuses_lm_head(self)
        result = super().compute_loss(model, inputs, return_outputs=reuse or return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        task, outputs = result if isinstance(result, tuple) else (result, None)
        if getattr(outputs, "logits", None) is None or not outputs.logits.requires_grad:
            outputs = None  # a fused head (TRL's SFT) has no logits: the terms that need them run a forward
        return task, outputs

    def retain_terms(self, model, inner, batch: dict, outputs) -> dict[str, torch.Tensor]:
        """Each loss term's value on this micro-batch (0-dim tensors with their graph), by name."""
        values = {}
        for m in self._roles(LossTerm):
            if getattr(m.options, "apply_to", "all") != "all" and "replay" not in batch:
                raise ValueError(f"retain_losses.{m.name}.apply_to={m.options.apply_to!r} needs a `replay` flag per "
                                 "example in the batch (retain.data.collate writes it); use apply_to: all")
            if outputs is None and not getattr(m, "per_step", False):
                outputs = SimpleNamespace(logits=model(**{k: batch[k] for k in FORWARD_INPUTS if k in batch}).logits)
            values[m.name] = m.loss_term(inner, batch, outputs)
        return values

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        replay = inputs.pop("replay", None)  # retain's collate flags replay examples; no model takes it
        if not self.retain_roles or not model.training:  # evaluation: the task loss alone, as retain's dev loss
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inner = self.accelerator.unwrap_model(model)
        if not self._retain_ready:
            self._retain_setup(inner)
        batch = {**inputs, **({"replay": replay} if replay is not None else {})}  # the trainer may pop labels
        if "labels" not in batch:
            raise ValueError("retain's loss terms need `labels` in each batch (IGNORE_INDEX where no loss)")
        steps = self.current_gradient_accumulation_steps
        scaled = self._loss_is_scaled(num_items_in_batch)
        token_share = None
        if scaled:
            # The task loss here is Σ CE / N over the step (× processes when averaged across devices): weight a
            # per-token term by this micro-batch's n / N likewise, and count a per-step term once over the step.
            n = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
            processes = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
            token_share = n * processes / torch.as_tensor(num_items_in_batch, device=n.device).clamp(min=1)
        task, outputs = self._task(model, inner, inputs, batch, num_items_in_batch, token_share, return_outputs)
        values = self.retain_terms(model, inner, batch, outputs)
        per_step = {m.name for m in self._roles(LossTerm) if getattr(m, "per_step", False)}
        if scaled:
            weights = {name: (1 / steps if name in per_step else token_share) for name in values}
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

